"""The store as one object: an engine and one repository per concept."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from volantd.store.artifacts import ArtifactRepository
from volantd.store.deployments import DeploymentRepository
from volantd.store.devices import DeviceClaimRepository
from volantd.store.errors import StoreError
from volantd.store.events import EventRepository
from volantd.store.ips import IPLeaseRepository
from volantd.store.migrate import upgrade
from volantd.store.plugins import PluginRepository
from volantd.store.ports import PortLeaseRepository
from volantd.store.sqlite import create_sqlite_engine
from volantd.store.transactions import Transactions
from volantd.store.vms import VMRepository


class Database:
    """volantd's persistent state. Safe to share between threads.

    Built on any engine whose schema is at head; `open_database` makes the SQLite one.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        transactions = Transactions(engine)
        self.plugins = PluginRepository(transactions)
        self.artifacts = ArtifactRepository(transactions)
        self.vms = VMRepository(transactions)
        self.deployments = DeploymentRepository(transactions)
        self.ports = PortLeaseRepository(transactions)
        self.ips = IPLeaseRepository(transactions)
        self.device_claims = DeviceClaimRepository(transactions)
        self.events = EventRepository(transactions)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_database(path: Path) -> Database:
    """Open (creating it and its folder if needed) the SQLite store at `path`.

    Migrates the schema to the newest revision. `StoreError` if the file is not a volantd
    database, cannot be read, or was written by a newer volantd.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_sqlite_engine(path)
    try:
        with Transactions(engine).write() as conn:
            upgrade(conn, database=str(path))
    except DBAPIError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the volantd database {path}: {exc.orig}") from exc
    except BaseException:
        engine.dispose()
        raise
    return Database(engine)
