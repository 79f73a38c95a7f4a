"""Index journal_posting.workflow_id: baton doctor looks a run's postings up by it.

Revision ID: 0002_posting_workflow_index
Revises: 0001_baseline
Create Date: 2026-12-07

Drafted with ``baton db revision`` from the model change in activities/database.py.
"""

from __future__ import annotations

from alembic import op

revision = "0002_posting_workflow_index"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal_posting", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journal_posting_workflow_id"), ["workflow_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("journal_posting", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journal_posting_workflow_id"))
