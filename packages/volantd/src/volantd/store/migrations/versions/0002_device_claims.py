"""Device claims: which VM holds which host PCI device, and the driver to give it back to.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_claims",
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("vm_name", sa.Text, nullable=True),
        sa.Column("original_driver", sa.Text, nullable=True),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_device_claims")),
    )
    op.create_index(op.f("ix_device_claims_vm_name"), "device_claims", ["vm_name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_device_claims_vm_name"), table_name="device_claims")
    op.drop_table("device_claims")
