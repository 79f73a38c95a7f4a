"""The governed_action table: governed actions of extensions (baton/extensions.py).

Revision ID: 0004_governed_actions
Revises: 0003_payload_store
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0004_governed_actions"
down_revision = "0003_payload_store"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "governed_action",
        sa.Column("action_id", AutoString(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("action", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("args_json", AutoString(), nullable=False),
        sa.Column("outcome_json", AutoString(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=False),
        sa.Column("compensated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("action_id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(op.f("ix_governed_action_action"), "governed_action", ["action"])
    op.create_index(op.f("ix_governed_action_workflow_id"), "governed_action", ["workflow_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_governed_action_workflow_id"), table_name="governed_action")
    op.drop_index(op.f("ix_governed_action_action"), table_name="governed_action")
    op.drop_table("governed_action")
