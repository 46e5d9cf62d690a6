"""Initial schema: plugins, artifacts, deployments, vms, vm_configs, leases, events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "plugins",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("runtime", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("manifest", sa.JSON, nullable=False),
        _timestamp("installed_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plugins")),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("plugin_name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("source_url", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=True),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("cache_path", sa.Text, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.ForeignKeyConstraint(
            ["plugin_name"],
            ["plugins.name"],
            name=op.f("fk_artifacts_plugin_name_plugins"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "plugin_name", "version", "name", name=op.f("uq_artifacts_plugin_name_version_name")
        ),
    )
    op.create_table(
        "deployments",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("desired_replicas", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployments")),
        sa.CheckConstraint(
            "desired_replicas >= 0", name=op.f("ck_deployments_desired_replicas_not_negative")
        ),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("plugin", sa.Text, nullable=False),
        sa.Column("runtime", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("cpu_cores", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("kernel_cmdline", sa.Text, nullable=True),
        sa.Column("mac_address", sa.Text, nullable=False),
        sa.Column("ip_address", sa.Text, nullable=True),
        sa.Column("network_mode", sa.Text, nullable=False),
        sa.Column("hypervisor", sa.Text, nullable=False),
        sa.Column("accel", sa.Text, nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("monitor_pid", sa.Integer, nullable=True),
        sa.Column("run_dir", sa.Text, nullable=False),
        sa.Column("agent_port", sa.Integer, nullable=True),
        sa.Column("deployment", sa.Text, nullable=True),
        sa.Column("config_version", sa.Integer, nullable=False),
        sa.Column("boot", sa.JSON, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
        sa.UniqueConstraint("mac_address", name=op.f("uq_vms_mac_address")),
        sa.ForeignKeyConstraint(
            ["plugin"], ["plugins.name"], name=op.f("fk_vms_plugin_plugins"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["deployment"],
            ["deployments.name"],
            name=op.f("fk_vms_deployment_deployments"),
            ondelete="SET NULL",
        ),
        sa.CheckConstraint("cpu_cores > 0", name=op.f("ck_vms_cpu_cores_positive")),
        sa.CheckConstraint("memory_mb > 0", name=op.f("ck_vms_memory_mb_positive")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_vms_status"), "vms", ["status"])
    op.create_index(op.f("ix_vms_deployment"), "vms", ["deployment"])
    op.create_table(
        "vm_configs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_configs")),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_configs_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("vm_id", "version", name=op.f("uq_vm_configs_vm_id_version")),
    )
    op.create_table(
        "port_leases",
        sa.Column("port", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("vm_name", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        _timestamp("leased_at"),
        sa.PrimaryKeyConstraint("port", name=op.f("pk_port_leases")),
        sa.UniqueConstraint("vm_name", "purpose", name=op.f("uq_port_leases_vm_name_purpose")),
    )
    op.create_table(
        "ip_leases",
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("network", sa.Text, nullable=False),
        sa.Column("vm_name", sa.Text, nullable=True),
        _timestamp("leased_at", nullable=True),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_ip_leases")),
    )
    op.create_index(op.f("ix_ip_leases_network"), "ip_leases", ["network"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("vm_name", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_vm_name"), "events", ["vm_name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_events_vm_name"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_ip_leases_network"), table_name="ip_leases")
    op.drop_table("ip_leases")
    op.drop_table("port_leases")
    op.drop_table("vm_configs")
    op.drop_index(op.f("ix_vms_deployment"), table_name="vms")
    op.drop_index(op.f("ix_vms_status"), table_name="vms")
    op.drop_table("vms")
    op.drop_table("deployments")
    op.drop_table("artifacts")
    op.drop_table("plugins")
