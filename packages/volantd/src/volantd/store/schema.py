"""The store's tables, written with portable SQLAlchemy Core constructs only.

`migrations/versions/` must create exactly this schema; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the only kind the store accepts)."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    Naive datetimes are refused: their time zone is a guess the store will not make.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.JSON:
    # Python None is stored as SQL NULL, not as the JSON text `null`.
    return sa.JSON(none_as_null=True)


metadata = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

plugins = sa.Table(
    "plugins",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("runtime", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("manifest", _json(), nullable=False),
    sa.Column("installed_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "plugin_name",
        sa.Text,
        sa.ForeignKey("plugins.name", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("source_url", sa.Text, nullable=True),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("format", sa.Text, nullable=True),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("cache_path", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("plugin_name", "version", "name"),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("desired_replicas", sa.Integer, nullable=False),
    sa.Column("config", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("desired_replicas >= 0", name="desired_replicas_not_negative"),
)

vms = sa.Table(
    "vms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column(
        "plugin",
        sa.Text,
        sa.ForeignKey("plugins.name", ondelete="RESTRICT"),
        nullable=False,
    ),
    sa.Column("runtime", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, index=True),
    sa.Column("cpu_cores", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("kernel_cmdline", sa.Text, nullable=True),
    sa.Column("mac_address", sa.Text, nullable=False, unique=True),
    sa.Column("ip_address", sa.Text, nullable=True),
    sa.Column("network_mode", sa.Text, nullable=False),
    sa.Column("hypervisor", sa.Text, nullable=False),
    sa.Column("accel", sa.Text, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("monitor_pid", sa.Integer, nullable=True),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("agent_port", sa.Integer, nullable=True),
    sa.Column(
        "deployment",
        sa.Text,
        sa.ForeignKey("deployments.name", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("config_version", sa.Integer, nullable=False),
    sa.Column("boot", _json(), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("cpu_cores > 0", name="cpu_cores_positive"),
    sa.CheckConstraint("memory_mb > 0", name="memory_mb_positive"),
    # Ids are never reused (SQLite AUTOINCREMENT), so a stale id never names a newer VM.
    sqlite_autoincrement=True,
)

vm_configs = sa.Table(
    "vm_configs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("config", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("vm_id", "version"),
)

port_leases = sa.Table(
    "port_leases",
    metadata,
    sa.Column("port", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("vm_name", sa.Text, nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("leased_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("vm_name", "purpose"),
)

ip_leases = sa.Table(
    "ip_leases",
    metadata,
    sa.Column("address", sa.Text, primary_key=True),
    sa.Column("network", sa.Text, nullable=False, index=True),
    sa.Column("vm_name", sa.Text, nullable=True),
    sa.Column("leased_at", UTCDateTime, nullable=True),
)

device_claims = sa.Table(
    "device_claims",
    metadata,
    sa.Column("address", sa.Text, primary_key=True),
    # No foreign key to vms: a claim outlives its VM's row until the device is given back to
    # its host driver (upstream's cascade lost exactly that).
    sa.Column("vm_name", sa.Text, nullable=True, index=True),
    sa.Column("original_driver", sa.Text, nullable=True),
    sa.Column("bound_at", UTCDateTime, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("vm_name", sa.Text, nullable=True, index=True),
    sa.Column("status", sa.Text, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", _json(), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # The id is the SSE event id: AUTOINCREMENT keeps it growing even after pruning.
    sqlite_autoincrement=True,
)
