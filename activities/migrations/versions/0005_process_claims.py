"""process_claim: which run owns a business key (activities/claims.py).

Revision ID: 0005_process_claims
Revises: 0004_governed_actions
Create Date: 2026-12-07

One row per (process, business key): the owning workflow id and its latest run, and the
claim's state (active | released | kept). Side effects claim or check it in their own
transaction, so two runs of one business key never both act.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0005_process_claims"
down_revision = "0004_governed_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "process_claim",
        sa.Column("process", AutoString(), nullable=False),
        sa.Column("business_key", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("state", AutoString(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("process", "business_key"),
    )
    with op.batch_alter_table("process_claim", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_process_claim_workflow_id"), ["workflow_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("process_claim", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_process_claim_workflow_id"))
    op.drop_table("process_claim")
