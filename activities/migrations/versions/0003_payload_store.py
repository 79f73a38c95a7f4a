"""The payload store (content-addressed conversation messages and tool results) and the tables
of tool-using agents: every tool call's idempotency key, customer credits, the customer email
outbox and reply drafts.

Revision ID: 0003_payload_store
Revises: 0002_posting_workflow_index
Create Date: 2026-12-07

Models: activities/payload_store.py, activities/tools.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0003_payload_store"
down_revision = "0002_posting_workflow_index"
branch_labels = None
depends_on = None

_str = AutoString


def upgrade() -> None:
    op.create_table(
        "payload",
        sa.Column("digest", _str(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("media_type", _str(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    with op.batch_alter_table("payload", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payload_created_at"), ["created_at"], unique=False)

    op.create_table(
        "tool_call",
        sa.Column("idempotency_key", _str(), nullable=False),
        sa.Column("workflow_id", _str(), nullable=False),
        sa.Column("tool", _str(), nullable=False),
        sa.Column("verdict", _str(), nullable=False),
        sa.Column("outcome_json", _str(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    with op.batch_alter_table("tool_call", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tool_call_workflow_id"), ["workflow_id"], unique=False)

    op.create_table(
        "customer_credit",
        sa.Column("credit_id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("customer", _str(), nullable=False),
        sa.Column("case_id", _str(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("reason", _str(), nullable=False),
        sa.Column("call_key", _str(), nullable=False),
        sa.Column("proposed_by", _str(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("reversed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("credit_id"),
        sa.UniqueConstraint("call_key"),
    )
    with op.batch_alter_table("customer_credit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_credit_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_credit_customer"), ["customer"], unique=False)

    op.create_table(
        "customer_email",
        sa.Column("email_id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("customer", _str(), nullable=False),
        sa.Column("subject", _str(), nullable=False),
        sa.Column("body", _str(), nullable=False),
        sa.Column("call_key", _str(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("email_id"),
        sa.UniqueConstraint("call_key"),
    )
    with op.batch_alter_table("customer_email", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_email_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_email_customer"), ["customer"], unique=False)

    op.create_table(
        "reply_draft",
        sa.Column("draft_id", _str(), nullable=False),
        sa.Column("tenant", _str(), nullable=False),
        sa.Column("case_id", _str(), nullable=False),
        sa.Column("text", _str(), nullable=False),
        sa.Column("call_key", _str(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("draft_id"),
        sa.UniqueConstraint("call_key"),
    )
    with op.batch_alter_table("reply_draft", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reply_draft_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_reply_draft_case_id"), ["case_id"], unique=False)


def downgrade() -> None:
    for table in ("reply_draft", "customer_email", "customer_credit", "tool_call", "payload"):
        op.drop_table(table)
