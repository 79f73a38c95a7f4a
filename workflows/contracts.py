"""Every model that crosses a Temporal boundary, plus task-queue and search-attribute names.

This module owns the public data contract of Baton: workflow inputs and results, activity inputs
and outputs, signal/update/query payloads. It imports only pydantic and the standard library, so
the workflow sandbox, the activities, the client and the CLI can all share it.

Money is carried as ``Decimal`` (serialised as a string) so that no cent is lost to floats.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# --------------------------------------------------------------------------------------------
# Names that are part of the public contract (task queues, search attributes, handler names).
# --------------------------------------------------------------------------------------------

DEFAULT_TASK_QUEUE = "baton"

#: Custom search attributes registered by temporal-dev/ (and to register on production namespaces).
SEARCH_ATTRIBUTES: dict[str, str] = {
    "BatonProcess": "Keyword",
    "BatonTenant": "Keyword",
    "BatonRisk": "Keyword",
    "BatonApprovalState": "Keyword",
    "BatonCostUsd": "Double",
    "BatonShadow": "Bool",
}

#: Update/signal/query names a stock `temporal` CLI user types.
APPROVAL_UPDATE = "decide_approval"
APPROVAL_SIGNAL = "submit_approval"
STATUS_QUERY = "status"
PENDING_APPROVALS_QUERY = "pending_approvals"

PERIOD_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


def digest(value: Any) -> str:
    """A stable sha256 of a JSON-able value (pydantic models are dumped in JSON mode first).

    Used to bind approvals to the exact action an approver saw and to build idempotency keys.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Contract(BaseModel):
    """Base of every contract: unknown fields are refused so typos fail fast."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Finance close: workflow input and result
# --------------------------------------------------------------------------------------------


class FinanceCloseInput(Contract):
    """Start a month-end close for one tenant and one accounting period."""

    tenant: str = Field(description="Tenant (legal entity) whose books are closed, e.g. 'acme'.")
    period: str = Field(description="Accounting period as YYYY-MM, e.g. '2026-10'.")
    requested_by: str = Field(description="Person or service that asked for the close.")
    approval_timeout_seconds: int = Field(
        default=3 * 24 * 3600,
        ge=1,
        le=30 * 24 * 3600,
        description="How long to wait for an approver before failing safe (reject + compensate).",
    )
    #: Test/bench hook: stop after postings and fail, to prove compensation. Not for production use.
    fail_after_posting: bool = False

    @field_validator("tenant")
    @classmethod
    def _tenant_is_a_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (1-63 chars)")
        return v

    @field_validator("period")
    @classmethod
    def _period_is_yyyy_mm(cls, v: str) -> str:
        if not PERIOD_PATTERN.match(v):
            raise ValueError("must be YYYY-MM with a month from 01 to 12, e.g. '2026-10'")
        return v

    @field_validator("requested_by")
    @classmethod
    def _requested_by_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a person or service, not be blank")
        return v.strip()

    def workflow_id(self) -> str:
        """The business key: one close per tenant and period, ever running at once."""
        return f"finance-close/{self.tenant}/{self.period}"


class PostedEntry(Contract):
    entry_id: str
    account: str
    amount: Money
    posting_id: str
    approved_by: str | None = None


class FinanceCloseResult(Contract):
    tenant: str
    period: str
    ledger_entries: int
    bank_lines: int
    matched: int
    unmatched_bank_lines: int
    unmatched_ledger_entries: int
    posted: list[PostedEntry]
    memo: str
    compliance_summary: str
    approvals: list[ApprovalDecision]
    tokens: int
    cost_usd: float


# --------------------------------------------------------------------------------------------
# Systems of record
# --------------------------------------------------------------------------------------------


class LedgerLine(Contract):
    entry_id: str
    booked_on: str  # ISO date
    account: str
    amount: Money  # positive = debit to cash (money in), negative = money out
    reference: str
    description: str


class BankLine(Contract):
    line_id: str
    value_date: str  # ISO date
    amount: Money
    reference: str
    memo: str


class CollectPeriodInput(Contract):
    tenant: str
    period: str


class PeriodData(Contract):
    tenant: str
    period: str
    period_status: Literal["open", "closed"]
    ledger: list[LedgerLine]
    bank: list[BankLine]


class ReconcileInput(Contract):
    data: PeriodData
    amount_tolerance: Money = Decimal("0.05")
    date_tolerance_days: int = 3


class Match(Contract):
    bank_line_id: str
    entry_id: str
    kind: Literal["exact", "tolerance"]
    difference: Money


class Reconciliation(Contract):
    matches: list[Match]
    unmatched_bank: list[BankLine]
    unmatched_ledger: list[LedgerLine]
    duplicate_ledger: list[LedgerLine] = Field(description="Second and later copies of entries.")


# --------------------------------------------------------------------------------------------
# Agents (LLM activities)
# --------------------------------------------------------------------------------------------


class TokenUsage(Contract):
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AdjustingEntry(Contract):
    """One adjusting journal entry the reconciler agent proposes (LLM output, schema-validated)."""

    entry_id: str = Field(description="Stable id, e.g. 'ADJ-<bank line id or ledger id>'.")
    account: str = Field(description="Ledger account to post against, e.g. '6100-bank-fees'.")
    amount: Money = Field(description="Signed amount; positive debits cash.")
    source_ids: list[str] = Field(description="Bank line / ledger entry ids this entry explains.")
    rationale: str = Field(min_length=1, description="Why this entry is needed.")


class ProposeAdjustmentsInput(Contract):
    tenant: str
    period: str
    unmatched_bank: list[BankLine]
    unmatched_ledger: list[LedgerLine]
    duplicate_ledger: list[LedgerLine]
    duplicate_ledger_ids: list[str]


class AdjustmentProposal(Contract):
    entries: list[AdjustingEntry]
    usage: TokenUsage


class ComplianceInput(Contract):
    tenant: str
    period: str
    entries: list[AdjustingEntry]
    decisions: list[PolicyDecision]


class ComplianceFinding(Contract):
    entry_id: str
    severity: Literal["info", "warning", "blocker"]
    note: str


class ComplianceReview(Contract):
    summary: str
    findings: list[ComplianceFinding]
    usage: TokenUsage


class MemoInput(Contract):
    tenant: str
    period: str
    matched: int
    unmatched_bank: int
    unmatched_ledger: int
    entries: list[AdjustingEntry]
    compliance_summary: str


class CloseMemo(Contract):
    memo: str
    usage: TokenUsage


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

Verdict = Literal["allow", "deny", "require_approval"]


class Obligations(Contract):
    approver_roles: list[str] = []
    eligible_approvers: list[str] = []


class PolicyDecision(Contract):
    """A policy answer as data. Anything the engine could not answer is a deny (fail closed)."""

    decision_id: str
    policy: str
    verdict: Verdict
    reasons: list[str]
    obligations: Obligations = Obligations()
    revision: str
    engine: str
    subject: str = Field(default="", description="What was decided on, e.g. an entry id.")


class PolicyQuery(Contract):
    policy: str = Field(description="Rego package path under data, e.g. 'baton/finance/posting'.")
    input: dict[str, Any]
    subject: str = ""
    workflow_id: str = ""


class PolicyBatch(Contract):
    queries: list[PolicyQuery]


# --------------------------------------------------------------------------------------------
# Postings (the sensitive activity) and compensations
# --------------------------------------------------------------------------------------------


class ApprovalGrant(Contract):
    """Proof of a human approval, attached to the sensitive call so policy can re-check it."""

    request_id: str
    approver: str
    action_digest: str


class PostEntryInput(Contract):
    tenant: str
    period: str
    entry: AdjustingEntry
    preparer: str
    requested_by: str
    compliance_flagged: bool = False
    approval: ApprovalGrant | None = None
    idempotency_key: str


class PostEntryOutcome(Contract):
    decision: PolicyDecision
    posting_id: str | None = None  # set only when posted


class ReverseEntryInput(Contract):
    original_key: str = Field(description="Idempotency key of the posting to reverse.")
    reason: str
    idempotency_key: str


class ClosePeriodInput(Contract):
    tenant: str
    period: str
    closed_by: str
    reopen: bool = False


# --------------------------------------------------------------------------------------------
# Approvals (update + signal payloads, queries)
# --------------------------------------------------------------------------------------------


class ApprovalRequest(Contract):
    request_id: str
    action: str
    action_digest: str
    summary: str
    entries: list[AdjustingEntry]
    total_amount: Money
    approver_roles: list[str]
    eligible_approvers: list[str]
    requested_by: str
    requested_at: datetime
    deadline: datetime
    compliance_findings: list[ComplianceFinding] = []


class ApprovalDecision(Contract):
    """An approver's decision: the Update `decide_approval` or the Signal `submit_approval`."""

    request_id: str = Field(description="The approval request id shown by the pending query/CLI.")
    approver: str = Field(description="Who decides; must be an eligible approver of the request.")
    verdict: Literal["approve", "reject"]
    rationale: str = Field(min_length=1, description="Why; goes to the audit trail.")
    action_digest: str = Field(description="Digest of the action the approver reviewed.")


class ApprovalAck(Contract):
    request_id: str
    accepted: bool
    message: str


class ProcessStatus(Contract):
    workflow_id: str
    process: str
    stage: str
    approval_state: Literal["none", "pending", "approved", "rejected", "expired"]
    pending: list[ApprovalRequest]
    posted: list[PostedEntry]
    compensated: list[str]
    tokens: int
    cost_usd: float


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------


class AuditEvent(Contract):
    """One row of the audit trail as written by the workflow (hash-chained by the ledger)."""

    workflow_id: str
    run_id: str
    seq: str = Field(
        min_length=1,
        description="Deterministic step key within the run, e.g. 'wf/3' or 'act/7/policy'; "
        "a write is idempotent per (workflow_id, run_id, seq).",
    )
    actor: str
    action: str
    detail: dict[str, Any] = {}
    rationale: str = ""
    decision_id: str | None = None
    model: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    input_digest: str | None = None
    output_digest: str | None = None


class AuditBatch(Contract):
    events: list[AuditEvent]


class AuditWriteResult(Contract):
    written: int
    already_present: int


FinanceCloseResult.model_rebuild()
ComplianceInput.model_rebuild()
