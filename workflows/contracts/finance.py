"""The finance close (workflows/finance_close.py): its input and result, the period's data and
reconciliation, its agents' inputs and outputs, postings, reversals and the period close."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, field_validator

from workflows.contracts.base import (
    PERIOD_PATTERN,
    STABLE_VERSION,
    AgentInput,
    ApprovalIssuer,
    Contract,
    Money,
    ProcessInput,
    TenantName,
    TokenUsage,
    known_version,
    must_match,
)
from workflows.contracts.governance import (
    ApprovalGrant,
    ApprovalOutcome,
    AuditEvent,
    BusinessClaim,
    CompensationInput,
    PolicyDecision,
    claim_field,
)
from workflows.contracts.ledger import (
    AdjustingEntry,
    BankLine,
    CloseException,
    ComplianceFinding,
    LedgerLine,
    PostedEntry,
)
from workflows.contracts.security import Document, Id, Name, Text

# --------------------------------------------------------------------------------------------
# Finance close: workflow input and result
# --------------------------------------------------------------------------------------------


class FinanceCloseInput(ProcessInput):
    """Start a month-end close for one tenant and one accounting period (``requested_by``,
    ``approval_timeout_seconds`` and ``budget``: ProcessInput)."""

    tenant: TenantName = Field(
        description="Tenant (legal entity) whose books are closed, e.g. 'acme'."
    )
    period: Id = Field(description="Accounting period as YYYY-MM, e.g. '2026-10'.")
    version: Annotated[Name, known_version("finance_close")] = Field(
        default=STABLE_VERSION,
        description="Process version (PROCESS_VERSIONS): prompts and model routes of the agents. "
        "Left out, BatonClient asks the process's canary (sticky per business key).",
    )
    #: Test/bench hook: stop after postings and fail, to prove compensation. Not for production use.
    fail_after_posting: bool = False
    shadow: bool = Field(
        default=False,
        description="Shadow run: every agent step runs, postings and the period close are only "
        "recorded in the shadow outbox, approvals are simulated from policy. Business key "
        "'shadow/finance-close/<tenant>/<period>'.",
    )
    approval_trust: ApprovalIssuer = None

    @field_validator("period")
    @classmethod
    def _period_is_yyyy_mm(cls, v: str) -> str:
        return must_match(PERIOD_PATTERN, v, "YYYY-MM with a month from 01 to 12, e.g. '2026-10'")

    def workflow_id(self) -> str:
        """The business key: one close per tenant and period, ever running at once (a shadow
        run has a key of its own, so it never blocks or joins the real close)."""
        key = f"finance-close/{self.tenant}/{self.period}"
        return f"shadow/{key}" if self.shadow else key


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
    approvals: list[ApprovalOutcome]
    tokens: int
    cost_usd: float
    exceptions: list[CloseException] = Field(
        default=[],
        description="Entries policy denied, held as exceptions (not posted); the period closed "
        "with them as policy baton/finance/close_exceptions allowed.",
    )


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


class ProposeAdjustmentsInput(AgentInput):
    tenant: str
    period: str
    unmatched_bank: list[BankLine]
    unmatched_ledger: list[LedgerLine]
    duplicate_ledger: list[LedgerLine]
    duplicate_ledger_ids: list[str]


class ReviseAdjustmentsInput(AgentInput):
    """Entries an approver sent back with request_changes, for the preparer agent to revise."""

    tenant: str
    period: str
    entries: list[AdjustingEntry]
    comment: Text = Field(description="The approver's requested changes.")
    reviewer: Name


class AdjustmentProposal(Contract):
    entries: list[AdjustingEntry]
    usage: TokenUsage


class ComplianceInput(AgentInput):
    tenant: str
    period: str
    entries: list[AdjustingEntry]
    decisions: list[PolicyDecision]


class ComplianceReview(Contract):
    summary: Document
    findings: list[ComplianceFinding]
    usage: TokenUsage


class MemoInput(AgentInput):
    tenant: str
    period: str
    matched: int
    unmatched_bank: int
    unmatched_ledger: int
    entries: list[AdjustingEntry]
    compliance_summary: str


class CloseMemo(Contract):
    memo: Document
    usage: TokenUsage


class PostEntryInput(Contract):
    tenant: str
    period: str
    entry: AdjustingEntry
    preparer: str
    requested_by: str
    compliance_flagged: bool = False
    amended_by: str | None = Field(
        default=None, description="Approver who amended the entry; may not also approve it."
    )
    approval: ApprovalGrant | None = None
    idempotency_key: str
    shadow: bool = False  # record the intended posting in the shadow outbox, commit nothing
    claim: BusinessClaim | None = claim_field()
    audit_events: list[AuditEvent] = Field(
        default_factory=list,
        description="The workflow's own audit events to write in the posting's transaction, "
        "before its rows: the approval that authorises it (one round trip fewer after an "
        "approval, and the approval and the posting commit together).",
    )


class PostEntryOutcome(Contract):
    decision: PolicyDecision
    posting_id: str | None = None  # set only when posted


#: The policy every posting asks (policy/finance/posting.rego).
POSTING_POLICY = "baton/finance/posting"


def posting_policy_input(inp: PostEntryInput, period_status: str) -> dict[str, object]:
    """The exact input document the posting policy sees (see policy/finance/posting.rego):
    asked by the posting's own transaction and by the close's preflight."""
    return {
        "action": "post_journal_entry",
        "tenant": inp.tenant,
        "period": {"id": inp.period, "status": period_status},
        "entry": {
            "entry_id": inp.entry.entry_id,
            "account": inp.entry.account,
            "amount": float(inp.entry.amount),
            "source_ids": inp.entry.source_ids,
        },
        "preparer": inp.preparer,
        "requested_by": inp.requested_by,
        "compliance_flagged": inp.compliance_flagged,
        "amended_by": inp.amended_by,
        "approval": inp.approval.model_dump(mode="json") if inp.approval else None,
    }


class ReverseEntryInput(CompensationInput):
    """Reverse the posting made under ``original_key``."""

    shadow: bool = False


class ClosePeriodInput(Contract):
    tenant: str
    period: str
    closed_by: str
    reopen: bool = False
    shadow: bool = False
    claim: BusinessClaim | None = claim_field()


FinanceCloseResult.model_rebuild()


ComplianceInput.model_rebuild()


__all__ = [
    "AdjustmentProposal",
    "CloseMemo",
    "ClosePeriodInput",
    "CollectPeriodInput",
    "ComplianceInput",
    "ComplianceReview",
    "FinanceCloseInput",
    "FinanceCloseResult",
    "Match",
    "MemoInput",
    "POSTING_POLICY",
    "PeriodData",
    "PostEntryInput",
    "PostEntryOutcome",
    "ProposeAdjustmentsInput",
    "ReconcileInput",
    "Reconciliation",
    "ReverseEntryInput",
    "ReviseAdjustmentsInput",
    "posting_policy_input",
]
