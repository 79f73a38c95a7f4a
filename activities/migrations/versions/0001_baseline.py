"""Baseline: the schema Baton built with ``create_all`` before it had migrations.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-07

Every table of Baton as of this revision, exactly as ``SQLModel.metadata.create_all`` made it.
A database an older Baton built that way has these tables already and no ``alembic_version``:
this revision then keeps each existing table (and its rows) untouched, after checking that it
has every column listed here, and creates only the tables that are missing. Do not edit this
file: change the schema in a new revision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _create_table(name: str, *elements: Any) -> None:
    """Create ``name`` unless an older Baton's ``create_all`` already did (then adopt it)."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(name):
        op.create_table(name, *elements)
        return
    present = {column["name"] for column in inspector.get_columns(name)}
    expected = {e.name for e in elements if isinstance(e, sa.Column)}
    missing = sorted(expected - present)
    if missing:
        raise RuntimeError(
            f"table {name!r} exists but lacks column(s) {missing}: it was not made by Baton's "
            "pre-migration schema, so it is left alone and nothing was changed"
        )


def upgrade() -> None:
    _create_table(
        "accounting_period",
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("period", AutoString(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("closed_by", AutoString(), nullable=True),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "period"),
    )
    _create_table(
        "agent_spend",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("day", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("seq", AutoString(), nullable=False),
        sa.Column("agent", AutoString(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "run_id", "seq"),
    )
    op.create_index(
        op.f("ix_agent_spend_day"), "agent_spend", ["day"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_agent_spend_tenant"), "agent_spend", ["tenant"], unique=False, if_not_exists=True
    )
    _create_table(
        "audit_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("seq", AutoString(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("actor", AutoString(), nullable=False),
        sa.Column("action", AutoString(), nullable=False),
        sa.Column("detail_json", AutoString(), nullable=False),
        sa.Column("rationale", AutoString(), nullable=False),
        sa.Column("decision_id", AutoString(), nullable=True),
        sa.Column("model", AutoString(), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("input_digest", AutoString(), nullable=True),
        sa.Column("output_digest", AutoString(), nullable=True),
        sa.Column("prev_hash", AutoString(), nullable=False),
        sa.Column("row_hash", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("position"),
        sa.UniqueConstraint("workflow_id", "run_id", "seq"),
    )
    op.create_index(
        op.f("ix_audit_record_workflow_id"),
        "audit_record",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "bank_statement_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("period", AutoString(), nullable=False),
        sa.Column("line_id", AutoString(), nullable=False),
        sa.Column("value_date", AutoString(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("reference", AutoString(), nullable=False),
        sa.Column("memo", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "period", "line_id"),
    )
    op.create_index(
        op.f("ix_bank_statement_line_period"),
        "bank_statement_line",
        ["period"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_bank_statement_line_tenant"),
        "bank_statement_line",
        ["tenant"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "blackboard_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("board", AutoString(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key", AutoString(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("author", AutoString(), nullable=False),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("written_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "run_id", "board", "seq"),
    )
    op.create_index(
        op.f("ix_blackboard_entry_workflow_id"),
        "blackboard_entry",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "canary",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("process", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("candidate", AutoString(), nullable=False),
        sa.Column("baseline", AutoString(), nullable=False),
        sa.Column("deployment", AutoString(), nullable=True),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("max_error_rate_increase", sa.Float(), nullable=False),
        sa.Column("max_escalation_rate_increase", sa.Float(), nullable=False),
        sa.Column("max_cost_increase", sa.Float(), nullable=False),
        sa.Column("min_runs", sa.Integer(), nullable=False),
        sa.Column("state", AutoString(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("started_by", AutoString(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("ended_by", AutoString(), nullable=True),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("last_evaluated_at", UTCDateTime(), nullable=True),
        sa.Column("last_evaluation_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_canary_process"), "canary", ["process"], unique=False, if_not_exists=True
    )
    _create_table(
        "crm_commit",
        sa.Column("commit_id", AutoString(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("customer_id", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("action_key", AutoString(), nullable=False),
        sa.Column("summary", AutoString(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("approved_by", AutoString(), nullable=True),
        sa.Column("rationale", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=False),
        sa.Column("reverted_at", UTCDateTime(), nullable=True),
        sa.Column("revert_key", AutoString(), nullable=True),
        sa.Column("revert_reason", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("commit_id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("revert_key"),
    )
    op.create_index(
        op.f("ix_crm_commit_customer_id"),
        "crm_commit",
        ["customer_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_crm_commit_tenant"), "crm_commit", ["tenant"], unique=False, if_not_exists=True
    )
    _create_table(
        "crm_commit_attempt",
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("outcome_json", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    _create_table(
        "crm_event",
        sa.Column("event_id", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("customer_id", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("handled_at", UTCDateTime(), nullable=True),
        sa.Column("workflow_id", AutoString(), nullable=True),
        sa.Column("run_id", AutoString(), nullable=True),
        sa.Column("outcome", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        op.f("ix_crm_event_customer_id"),
        "crm_event",
        ["customer_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_crm_event_handled_at"),
        "crm_event",
        ["handled_at"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_crm_event_kind"), "crm_event", ["kind"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_crm_event_tenant"), "crm_event", ["tenant"], unique=False, if_not_exists=True
    )
    _create_table(
        "document_review",
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("batch_id", AutoString(), nullable=False),
        sa.Column("task_id", AutoString(), nullable=False),
        sa.Column("doc_id", AutoString(), nullable=False),
        sa.Column("tier", AutoString(), nullable=False),
        sa.Column("verdict", AutoString(), nullable=False),
        sa.Column("findings_json", AutoString(), nullable=False),
        sa.Column("summary", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("retracted_at", UTCDateTime(), nullable=True),
        sa.Column("retract_reason", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    op.create_index(
        op.f("ix_document_review_batch_id"),
        "document_review",
        ["batch_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_document_review_tenant"),
        "document_review",
        ["tenant"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_document_review_workflow_id"),
        "document_review",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "hris_new_hire",
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("employee_id", AutoString(), nullable=False),
        sa.Column("full_name", AutoString(), nullable=False),
        sa.Column("role", AutoString(), nullable=False),
        sa.Column("department", AutoString(), nullable=False),
        sa.Column("country", AutoString(), nullable=False),
        sa.Column("manager", AutoString(), nullable=False),
        sa.Column("start_date", AutoString(), nullable=False),
        sa.Column("id_document_verified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "employee_id"),
    )
    _create_table(
        "idp_account",
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("employee_id", AutoString(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "employee_id"),
    )
    _create_table(
        "idp_entitlement",
        sa.Column("grant_id", AutoString(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("employee_id", AutoString(), nullable=False),
        sa.Column("system", AutoString(), nullable=False),
        sa.Column("name", AutoString(), nullable=False),
        sa.Column("approved_by", AutoString(), nullable=True),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoke_key", AutoString(), nullable=True),
        sa.Column("revoke_reason", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("grant_id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("revoke_key"),
    )
    op.create_index(
        op.f("ix_idp_entitlement_employee_id"),
        "idp_entitlement",
        ["employee_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_idp_entitlement_tenant"),
        "idp_entitlement",
        ["tenant"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "idp_grant_attempt",
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("outcome_json", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    _create_table(
        "journal_posting",
        sa.Column("posting_id", AutoString(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("period", AutoString(), nullable=False),
        sa.Column("entry_id", AutoString(), nullable=False),
        sa.Column("account", AutoString(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("rationale", AutoString(), nullable=False),
        sa.Column("prepared_by", AutoString(), nullable=False),
        sa.Column("approved_by", AutoString(), nullable=True),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("reverses_posting_id", AutoString(), nullable=True),
        sa.Column("decision_json", AutoString(), nullable=False),
        sa.Column("posted_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("posting_id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        op.f("ix_journal_posting_period"),
        "journal_posting",
        ["period"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_journal_posting_reverses_posting_id"),
        "journal_posting",
        ["reverses_posting_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_journal_posting_tenant"),
        "journal_posting",
        ["tenant"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "kill_switch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", AutoString(), nullable=False),
        sa.Column("value", AutoString(), nullable=False),
        sa.Column("mode", AutoString(), nullable=False),
        sa.Column("reason", AutoString(), nullable=False),
        sa.Column("engaged_by", AutoString(), nullable=False),
        sa.Column("engaged_at", UTCDateTime(), nullable=False),
        sa.Column("cleared_at", UTCDateTime(), nullable=True),
        sa.Column("cleared_by", AutoString(), nullable=True),
        sa.Column("clear_reason", AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_kill_switch_cleared_at"),
        "kill_switch",
        ["cleared_at"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_kill_switch_scope"), "kill_switch", ["scope"], unique=False, if_not_exists=True
    )
    _create_table(
        "knowledge_chunk",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("doc_id", AutoString(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("title", AutoString(), nullable=False),
        sa.Column("text", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("entity_id", AutoString(), nullable=True),
        sa.Column("source", AutoString(), nullable=False),
        sa.Column("author", AutoString(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("content_digest", AutoString(), nullable=False),
        sa.Column("model", AutoString(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("ingested_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "doc_id", "chunk"),
    )
    op.create_index(
        op.f("ix_knowledge_chunk_doc_id"),
        "knowledge_chunk",
        ["doc_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_knowledge_chunk_entity_id"),
        "knowledge_chunk",
        ["entity_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_knowledge_chunk_kind"),
        "knowledge_chunk",
        ["kind"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_knowledge_chunk_tenant"),
        "knowledge_chunk",
        ["tenant"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "knowledge_entity",
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("entity_id", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("name", AutoString(), nullable=False),
        sa.Column("parent_id", AutoString(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("source", AutoString(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "entity_id"),
    )
    op.create_index(
        op.f("ix_knowledge_entity_kind"),
        "knowledge_entity",
        ["kind"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_knowledge_entity_parent_id"),
        "knowledge_entity",
        ["parent_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "ledger_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("period", AutoString(), nullable=False),
        sa.Column("entry_id", AutoString(), nullable=False),
        sa.Column("booked_on", AutoString(), nullable=False),
        sa.Column("account", AutoString(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("reference", AutoString(), nullable=False),
        sa.Column("description", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "period", "entry_id"),
    )
    op.create_index(
        op.f("ix_ledger_entry_period"), "ledger_entry", ["period"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_ledger_entry_tenant"), "ledger_entry", ["tenant"], unique=False, if_not_exists=True
    )
    _create_table(
        "model_charge",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("day", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("run_id", AutoString(), nullable=False),
        sa.Column("activity_id", AutoString(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("call_index", sa.Integer(), nullable=False),
        sa.Column("agent", AutoString(), nullable=False),
        sa.Column("task_class", AutoString(), nullable=False),
        sa.Column("model", AutoString(), nullable=False),
        sa.Column("endpoint", AutoString(), nullable=False),
        sa.Column("tier", AutoString(), nullable=False),
        sa.Column("outcome", AutoString(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "run_id", "activity_id", "attempt", "call_index"),
    )
    op.create_index(
        op.f("ix_model_charge_day"), "model_charge", ["day"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_model_charge_tenant"), "model_charge", ["tenant"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_model_charge_workflow_id"),
        "model_charge",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("kind", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("request_id", AutoString(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        op.f("ix_notification_outbox_delivered_at"),
        "notification_outbox",
        ["delivered_at"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_notification_outbox_workflow_id"),
        "notification_outbox",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "shadow_action",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("workflow_id", AutoString(), nullable=False),
        sa.Column("action", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("period", AutoString(), nullable=False),
        sa.Column("entry_id", AutoString(), nullable=False),
        sa.Column("account", AutoString(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(
        op.f("ix_shadow_action_workflow_id"),
        "shadow_action",
        ["workflow_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "support_ticket",
        sa.Column("case_id", AutoString(), nullable=False),
        sa.Column("tenant", AutoString(), nullable=False),
        sa.Column("customer", AutoString(), nullable=False),
        sa.Column("category", AutoString(), nullable=False),
        sa.Column("status", AutoString(), nullable=False),
        sa.Column("reply", AutoString(), nullable=False),
        sa.Column("tags", AutoString(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", AutoString(), nullable=False),
        sa.Column("approved_by", AutoString(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "tenant"),
    )
    _create_table(
        "support_ticket_update",
        sa.Column("idempotency_key", AutoString(), nullable=False),
        sa.Column("case_id", AutoString(), nullable=False),
        sa.Column("outcome_json", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    op.create_index(
        op.f("ix_support_ticket_update_case_id"),
        "support_ticket_update",
        ["case_id"],
        unique=False,
        if_not_exists=True,
    )
    _create_table(
        "throttle_bucket",
        sa.Column("key", AutoString(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    _create_table(
        "throttle_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", AutoString(), nullable=False),
        sa.Column("holder", AutoString(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_throttle_lease_holder"),
        "throttle_lease",
        ["holder"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_throttle_lease_key"), "throttle_lease", ["key"], unique=False, if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_throttle_lease_key"), table_name="throttle_lease")
    op.drop_index(op.f("ix_throttle_lease_holder"), table_name="throttle_lease")
    op.drop_table("throttle_lease")
    op.drop_table("throttle_bucket")
    op.drop_index(op.f("ix_support_ticket_update_case_id"), table_name="support_ticket_update")
    op.drop_table("support_ticket_update")
    op.drop_table("support_ticket")
    op.drop_index(op.f("ix_shadow_action_workflow_id"), table_name="shadow_action")
    op.drop_table("shadow_action")
    op.drop_index(op.f("ix_notification_outbox_workflow_id"), table_name="notification_outbox")
    op.drop_index(op.f("ix_notification_outbox_delivered_at"), table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_index(op.f("ix_model_charge_workflow_id"), table_name="model_charge")
    op.drop_index(op.f("ix_model_charge_tenant"), table_name="model_charge")
    op.drop_index(op.f("ix_model_charge_day"), table_name="model_charge")
    op.drop_table("model_charge")
    op.drop_index(op.f("ix_ledger_entry_tenant"), table_name="ledger_entry")
    op.drop_index(op.f("ix_ledger_entry_period"), table_name="ledger_entry")
    op.drop_table("ledger_entry")
    op.drop_index(op.f("ix_knowledge_entity_parent_id"), table_name="knowledge_entity")
    op.drop_index(op.f("ix_knowledge_entity_kind"), table_name="knowledge_entity")
    op.drop_table("knowledge_entity")
    op.drop_index(op.f("ix_knowledge_chunk_tenant"), table_name="knowledge_chunk")
    op.drop_index(op.f("ix_knowledge_chunk_kind"), table_name="knowledge_chunk")
    op.drop_index(op.f("ix_knowledge_chunk_entity_id"), table_name="knowledge_chunk")
    op.drop_index(op.f("ix_knowledge_chunk_doc_id"), table_name="knowledge_chunk")
    op.drop_table("knowledge_chunk")
    op.drop_index(op.f("ix_kill_switch_scope"), table_name="kill_switch")
    op.drop_index(op.f("ix_kill_switch_cleared_at"), table_name="kill_switch")
    op.drop_table("kill_switch")
    op.drop_index(op.f("ix_journal_posting_tenant"), table_name="journal_posting")
    op.drop_index(op.f("ix_journal_posting_reverses_posting_id"), table_name="journal_posting")
    op.drop_index(op.f("ix_journal_posting_period"), table_name="journal_posting")
    op.drop_table("journal_posting")
    op.drop_table("idp_grant_attempt")
    op.drop_index(op.f("ix_idp_entitlement_tenant"), table_name="idp_entitlement")
    op.drop_index(op.f("ix_idp_entitlement_employee_id"), table_name="idp_entitlement")
    op.drop_table("idp_entitlement")
    op.drop_table("idp_account")
    op.drop_table("hris_new_hire")
    op.drop_index(op.f("ix_document_review_workflow_id"), table_name="document_review")
    op.drop_index(op.f("ix_document_review_tenant"), table_name="document_review")
    op.drop_index(op.f("ix_document_review_batch_id"), table_name="document_review")
    op.drop_table("document_review")
    op.drop_index(op.f("ix_crm_event_tenant"), table_name="crm_event")
    op.drop_index(op.f("ix_crm_event_kind"), table_name="crm_event")
    op.drop_index(op.f("ix_crm_event_handled_at"), table_name="crm_event")
    op.drop_index(op.f("ix_crm_event_customer_id"), table_name="crm_event")
    op.drop_table("crm_event")
    op.drop_table("crm_commit_attempt")
    op.drop_index(op.f("ix_crm_commit_tenant"), table_name="crm_commit")
    op.drop_index(op.f("ix_crm_commit_customer_id"), table_name="crm_commit")
    op.drop_table("crm_commit")
    op.drop_index(op.f("ix_canary_process"), table_name="canary")
    op.drop_table("canary")
    op.drop_index(op.f("ix_blackboard_entry_workflow_id"), table_name="blackboard_entry")
    op.drop_table("blackboard_entry")
    op.drop_index(op.f("ix_bank_statement_line_tenant"), table_name="bank_statement_line")
    op.drop_index(op.f("ix_bank_statement_line_period"), table_name="bank_statement_line")
    op.drop_table("bank_statement_line")
    op.drop_index(op.f("ix_audit_record_workflow_id"), table_name="audit_record")
    op.drop_table("audit_record")
    op.drop_index(op.f("ix_agent_spend_tenant"), table_name="agent_spend")
    op.drop_index(op.f("ix_agent_spend_day"), table_name="agent_spend")
    op.drop_table("agent_spend")
    op.drop_table("accounting_period")
