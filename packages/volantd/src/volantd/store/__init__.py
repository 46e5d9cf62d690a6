"""volantd's persistent store: SQLite through SQLAlchemy Core, migrated by Alembic.

Repositories take and return frozen records, never database rows, so another backend
(PostgreSQL) can replace SQLite behind `Database` without touching callers.
"""

from volantd.store.artifacts import ArtifactRecord, ArtifactRepository
from volantd.store.database import Database, open_database
from volantd.store.deployments import DeploymentRecord, DeploymentRepository
from volantd.store.devices import DeviceClaim, DeviceClaimRepository
from volantd.store.errors import ConflictError, NotFoundError, StoreError
from volantd.store.events import EventRecord, EventRepository
from volantd.store.ips import IPLease, IPLeaseRepository
from volantd.store.plugins import PluginRecord, PluginRepository
from volantd.store.ports import PortLease, PortLeaseRepository
from volantd.store.vms import VMConfigVersion, VMRecord, VMRepository

__all__ = [
    "ArtifactRecord",
    "ArtifactRepository",
    "ConflictError",
    "Database",
    "DeploymentRecord",
    "DeploymentRepository",
    "DeviceClaim",
    "DeviceClaimRepository",
    "EventRecord",
    "EventRepository",
    "IPLease",
    "IPLeaseRepository",
    "NotFoundError",
    "PluginRecord",
    "PluginRepository",
    "PortLease",
    "PortLeaseRepository",
    "StoreError",
    "VMConfigVersion",
    "VMRecord",
    "VMRepository",
    "open_database",
]
