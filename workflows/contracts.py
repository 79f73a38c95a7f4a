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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workflows.contracts_security import (
    MAX_LIST_ITEMS,
    MAX_TOKEN_FIELD_CHARS,
    ApprovalTrust,
    Document,
    Id,
    Name,
    Text,
)

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
    "BatonPendingRoles": "KeywordList",
    "BatonCostUsd": "Double",
    "BatonShadow": "Bool",
    "BatonHeld": "Bool",
    "BatonVersion": "Keyword",
    "BatonTokens": "Int",
}

#: Baton's process names (search attribute BatonProcess, kill-switch scopes) by workflow type.
PROCESS_BY_WORKFLOW_TYPE: dict[str, str] = {
    "FinanceClose": "finance_close",
    "HrOnboarding": "hr_onboarding",
    "DocumentReviewAllocation": "document_review",
    "SupportCase": "support_escalation",
    "CustomerOnboarding": "customer_onboarding",
    "AgentRun": "agent_run",
}

#: Update/signal/query names a stock `temporal` CLI user types.
APPROVAL_UPDATE = "decide_approval"
KILL_SWITCH_RELEASED_SIGNAL = "kill_switch_released"
KILL_SWITCH_ERROR = "KillSwitchEngaged"
CANARY_CHANGED_SIGNAL = "canary_changed"
CANARY_STATUS_QUERY = "canary_status"
#: Memo key holding a run's process version (the canary assignment), next to search attribute
#: BatonVersion and the input's ``version``.
VERSION_MEMO = "baton_version"
APPROVAL_SIGNAL = "submit_approval"
#: Updates of the approver inbox: a comment on a request, and handing a request to a colleague
APPROVAL_COMMENT_UPDATE = "comment_approval"
APPROVAL_DELEGATE_UPDATE = "delegate_approval"
STATUS_QUERY = "status"
PENDING_APPROVALS_QUERY = "pending_approvals"
BOARD_HISTORY_QUERY = "board_history"

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
# Process versions: what a canary candidate changes (prompts, model routes), as data
# --------------------------------------------------------------------------------------------

STABLE_VERSION = "stable"


class ProcessVersion(Contract):
    """One version of a process that needs no new worker build: the prompt variant and/or the
    model each agent role uses. Workflow-code versions are Temporal's Worker Deployment Versions
    instead (see docs/governance/canaries.md)."""

    name: str
    description: str
    #: agent role -> prompt variant (activities/agents.py PROMPTS); unlisted roles: "stable"
    prompts: dict[str, str] = {}
    #: agent role -> model name (model route); unlisted roles: the worker's BATON_MODEL
    models: dict[str, str] = {}


#: The versions each process knows, by process name. "stable" is what workers are configured
#: with; every other entry is a candidate a canary can route a share of new runs to.
PROCESS_VERSIONS: dict[str, dict[str, ProcessVersion]] = {
    "finance_close": {
        STABLE_VERSION: ProcessVersion(
            name=STABLE_VERSION, description="the prompts and model the workers are configured with"
        ),
        "reconciler-prompt-v2": ProcessVersion(
            name="reconciler-prompt-v2",
            description="reworded reconciler prompt (prefers no entry over a guess)",
            prompts={"reconciler": "v2"},
        ),
    },
    "hr_onboarding": {
        STABLE_VERSION: ProcessVersion(
            name=STABLE_VERSION, description="the prompts and model the workers are configured with"
        ),
        "policy-educator-prompt-v2": ProcessVersion(
            name="policy-educator-prompt-v2",
            description="reworded policy educator prompt (country policies first)",
            prompts={"policy_educator": "v2"},
        ),
    },
}


def check_version(process: str, version: str) -> str:
    """``version`` if ``process`` knows it, else a ValueError naming the known versions."""
    known = PROCESS_VERSIONS.get(process, {})
    if version not in known:
        raise ValueError(
            f"unknown version {version!r} of {process}: expected one of {', '.join(known)}"
        )
    return version


# --------------------------------------------------------------------------------------------
# Finance close: workflow input and result
# --------------------------------------------------------------------------------------------


#: ApplicationError type of a routed agent call the run's or the tenant's budget refuses
#: (activities/router.py); non-retryable: the workflow asks a human (GovernedProcess.agent_step).
BUDGET_EXCEEDED = "BudgetExceeded"
OverBudget = Literal["refuse", "route_cheaper"]


class Budget(Contract):
    """Spending limits of one run's routed calls (the tenant's daily cap is policy data)."""

    run_usd: float | None = Field(
        default=None, ge=0, description="Cap for the whole run (USD); None: none."
    )
    over_budget: OverBudget | None = Field(
        default=None, description="refuse, or route to a cheaper model; None: the catalogue's."
    )


class FinanceCloseInput(Contract):
    """Start a month-end close for one tenant and one accounting period."""

    tenant: Name = Field(description="Tenant (legal entity) whose books are closed, e.g. 'acme'.")
    period: Id = Field(description="Accounting period as YYYY-MM, e.g. '2026-10'.")
    requested_by: Name = Field(description="Person or service that asked for the close.")
    approval_timeout_seconds: int = Field(
        default=3 * 24 * 3600,
        ge=1,
        le=30 * 24 * 3600,
        description="How long to wait for an approver before failing safe (reject + compensate).",
    )
    version: Name = Field(
        default=STABLE_VERSION,
        description="Process version (PROCESS_VERSIONS): prompts and model routes of the agents. "
        "Left out, BatonClient asks the process's canary (sticky per business key).",
    )
    budget: Budget = Field(
        default_factory=Budget,
        description="The run's model budget (run_usd, over_budget). A routed call it refuses "
        "goes to a person holding the process's budget role (policy/data/budget.json).",
    )
    #: Test/bench hook: stop after postings and fail, to prove compensation. Not for production use.
    fail_after_posting: bool = False
    shadow: bool = Field(
        default=False,
        description="Shadow run: every agent step runs, postings and the period close are only "
        "recorded in the shadow outbox, approvals are simulated from policy. Business key "
        "'shadow/finance-close/<tenant>/<period>'.",
    )
    approval_trust: ApprovalTrust | None = Field(
        default=None,
        description="Approval issuer: when set, every approval decision must carry a valid JWT "
        "from it (BatonClient fills it in from BATON_APPROVAL_TRUST).",
    )

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

    @field_validator("version")
    @classmethod
    def _version_is_known(cls, v: str) -> str:
        return check_version("finance_close", v)

    def workflow_id(self) -> str:
        """The business key: one close per tenant and period, ever running at once (a shadow
        run has a key of its own, so it never blocks or joins the real close)."""
        key = f"finance-close/{self.tenant}/{self.period}"
        return f"shadow/{key}" if self.shadow else key


class PostedEntry(Contract):
    entry_id: str
    account: str
    amount: Money
    posting_id: str
    approved_by: list[str] = Field(
        default=[], description="Everyone whose approval the posting carried (N-of-M)."
    )
    amended_by: str | None = Field(
        default=None, description="The approver who amended this entry before it was posted."
    )


class CloseException(Contract):
    """An adjusting entry policy denied: held as an exception of the close, never posted."""

    entry_id: str
    account: str
    amount: Money
    reasons: list[str] = Field(description="Why policy denied posting it.")
    decision_id: str = Field(description="The posting policy's decision (its audit row).")


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
    #: Routed calls (activities/router.py): the run's totals as charged in the database so far,
    #: every request of every attempt (failed ones too); None for a call that is not routed.
    run_tokens: int | None = None
    run_cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AdjustingEntry(Contract):
    """One adjusting journal entry the reconciler agent proposes (LLM output, schema-validated)."""

    entry_id: Id = Field(description="Stable id, e.g. 'ADJ-<bank line id or ledger id>'.")
    account: Name = Field(description="Ledger account to post against, e.g. '6100-bank-fees'.")
    amount: Money = Field(description="Signed amount; positive debits cash.")
    source_ids: list[Id] = Field(description="Bank line / ledger entry ids this entry explains.")
    rationale: Text = Field(min_length=1, description="Why this entry is needed.")


class AgentInput(Contract):
    """Base of every agent activity's input: which process version's prompt and model to use,
    and the run's budget. Set by the workflow from its own input; never sent to the model."""

    version: str = Field(default=STABLE_VERSION, description="Process version (PROCESS_VERSIONS).")
    budget: Budget = Field(default_factory=Budget, description="The run's model budget.")


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


class ComplianceFinding(Contract):
    entry_id: Id
    severity: Literal["info", "warning", "blocker"]
    note: Text


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


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

Verdict = Literal["allow", "deny", "require_approval"]


class ApprovalRequirement(Contract):
    """One slot rule of an N-of-M approval: `count` distinct people holding `role`."""

    role: str = Field(min_length=1)
    count: int = Field(default=1, ge=1, le=10)


class EscalationTier(Contract):
    """A tier of the escalation chain, entered when the previous tier's SLA passes.

    Its roles are notified and may from then on fill any open approval slot."""

    roles: list[str] = Field(min_length=1)
    sla_seconds: int = Field(ge=1, le=90 * 24 * 3600)


#: Kinds of personal data a ``redact`` obligation may name (masked by activities/redaction.py).
RedactionKind = Literal["card", "email", "iban", "national_id", "phone"]
REDACTION_KINDS: tuple[RedactionKind, ...] = ("card", "email", "iban", "national_id", "phone")


class Obligations(Contract):
    """What policy attaches to a verdict.

    The approval fields come with a require_approval (policy/finance/posting.rego); ``redact``
    and ``reroute_regions`` come from the base policy (policy/base/agent_call.rego) with any
    verdict.
    """

    approver_roles: list[str] = []
    eligible_approvers: list[str] = []
    required_approvals: list[ApprovalRequirement] = []
    escalation: list[EscalationTier] = []
    #: role -> people holding it who may decide (requester, preparer and amender excluded), for
    #: every required and escalation role; the validator decides from it without I/O.
    candidates: dict[str, list[str]] = {}
    #: Personal data to mask before the data leaves (e.g. for a model), sorted.
    redact: list[RedactionKind] = []
    #: With a data-residency deny: the regions the tenant allows, so the caller can reroute.
    reroute_regions: list[str] = []


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
# Business-key claims (activities/claims.py): one run of a process per business key
# --------------------------------------------------------------------------------------------


class BusinessClaim(Contract):
    """A run's claim on its business key (a finance close: tenant + period), carried by every
    side-effecting activity of the run: the activity claims the key, or checks it still holds
    it, in the transaction of its side effect (activities/claims.py)."""

    process: Name = Field(description="The process (its BatonProcess value): finance_close.")
    key: str = Field(
        min_length=1,
        max_length=300,
        description="The business key, spelled as the process's canonical workflow id "
        "(finance-close/acme/2026-03).",
    )


def _unclaimed(value: Any) -> bool:
    return value is None


def claim_field() -> Any:
    """The ``claim`` field of a side-effecting activity's input. Left out of the payload when
    unset, so inputs, digests and idempotency keys built from an unclaimed input are the same
    as before claims existed (runs in flight and approvals bound to them are unchanged)."""
    return Field(
        default=None,
        exclude_if=_unclaimed,
        description="The run's business-key claim, set by the governed step runner "
        "(workflows/process_base.py); the activity claims or checks it in its transaction.",
    )


class ClaimCheckInput(Contract):
    """A run's look at its business key: read-only at its start (before its agents), or taking
    the claim before it asks humans to approve (asking them is acting on the key)."""

    claim: BusinessClaim
    take: bool = Field(default=False, description="Claim the key now, not only look at it.")


class SettleClaimInput(Contract):
    """What happens to a run's claim when the run ends (docs/processes.md, claim rules)."""

    claim: BusinessClaim
    outcome: Literal["completed", "failed"]
    keep: bool = Field(
        description="completed: keep the key claimed for good (a closed period stays closed); "
        "else release it. A failed run always releases."
    )


# --------------------------------------------------------------------------------------------
# Postings (the sensitive activity) and compensations
# --------------------------------------------------------------------------------------------


class ApprovalGrant(Contract):
    """Proof of a human approval, attached to the sensitive call so policy can re-check it."""

    request_id: str
    approvers: list[str] = Field(min_length=1, description="Distinct approvers, N-of-M.")
    action_digest: str
    escalation_level: int = Field(
        default=0, ge=0, description="Escalation tiers entered before the approval completed."
    )


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


class ReverseEntryInput(Contract):
    original_key: str = Field(description="Idempotency key of the posting to reverse.")
    reason: str
    idempotency_key: str
    shadow: bool = False


class ClosePeriodInput(Contract):
    tenant: str
    period: str
    closed_by: str
    reopen: bool = False
    shadow: bool = False
    claim: BusinessClaim | None = claim_field()


# --------------------------------------------------------------------------------------------
# Approvals (update + signal payloads, queries)
# --------------------------------------------------------------------------------------------


class ApprovalVote(Contract):
    """One accepted approval toward a request: who, as which role (slot), when, why."""

    approver: str
    role: str
    at: datetime
    rationale: Text
    via: Literal["update", "signal"]


class ApprovalRequest(Contract):
    """A pending human decision, created by the approval gate from a require_approval verdict."""

    request_id: str
    process: str
    action: str
    action_digest: str = Field(description="Digest of the exact action; decisions must match it.")
    summary: str
    entries: list[AdjustingEntry] = []
    total_amount: Money = Decimal("0")
    requirements: list[ApprovalRequirement] = Field(min_length=1)
    approver_roles: list[str] = Field(description="Roles that may decide at the current tier.")
    eligible_approvers: list[str] = Field(description="People who may decide at the current tier.")
    candidates: dict[str, list[str]] = {}
    escalation: list[EscalationTier] = []
    escalation_level: int = 0
    requested_by: str
    excluded: list[str] = Field(
        default=[], description="People who may not decide: requester, preparer, amender."
    )
    requested_at: datetime
    deadline: datetime = Field(description="When the current tier's SLA passes.")
    approvals: list[ApprovalVote] = []
    compliance_findings: list[ComplianceFinding] = []
    round: int = Field(
        default=1, description="1 for the first request of a process, +1 per amend/change."
    )
    policy_reasons: list[str] = Field(
        default=[], description="Why policy asked for this approval (its require_approval reasons)."
    )
    action_payload: Any = Field(
        default=None,
        description="The action's arguments as data (grants, discounts, a tool call), for "
        "approvers; entries carry their own. Data only: the digest is action_digest.",
    )
    comments: list[ApprovalNote] = []
    delegations: list[Delegation] = []


class ApprovalNote(Contract):
    """A comment on a request, as recorded: visible to every approver, audited."""

    author: str
    at: datetime
    text: str


class Delegation(Contract):
    """An approver handed a request on to a colleague (policy baton/base/delegation allowed it):
    the delegator steps out of the request, the delegate is asked."""

    from_approver: str
    to: str
    at: datetime
    rationale: str
    roles: list[str] = Field(description="The request's roles the delegate holds.")


class ApprovalComment(Contract):
    """The Update ``comment_approval``: a comment on a pending request by one of its approvers
    or its requester. Signed like a decision when the run has an approval issuer."""

    request_id: Id
    author: Name
    text: Text = Field(min_length=1)
    action_digest: Id = Field(description="Digest of the action the author looked at.")
    assertion: str | None = Field(default=None, max_length=MAX_TOKEN_FIELD_CHARS)


class ApprovalDelegationInput(Contract):
    """The Update ``delegate_approval``: ``approver`` hands request ``request_id`` to
    ``delegate``; policy (baton/base/delegation) decides whether the delegate may receive it."""

    request_id: Id
    approver: Name = Field(description="The eligible approver who delegates.")
    delegate: Name = Field(min_length=1, description="Who receives the request.")
    rationale: Text = Field(min_length=1)
    action_digest: Id
    assertion: str | None = Field(default=None, max_length=MAX_TOKEN_FIELD_CHARS)


class EntryAmendment(Contract):
    """An approver's change to one entry under review: a new amount and/or account."""

    entry_id: Id = Field(min_length=1)
    amount: Money | None = None
    account: Name | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> EntryAmendment:
        if self.amount is None and self.account is None:
            raise ValueError(
                f"amendment of {self.entry_id} changes nothing: give amount or account"
            )
        return self


DecisionVerdict = Literal["approve", "reject", "amend", "request_changes"]


class ApprovalDecision(Contract):
    """An approver's decision: the Update `decide_approval` or the Signal `submit_approval`."""

    request_id: Id = Field(description="The approval request id shown by the pending query/CLI.")
    approver: Name = Field(description="Who decides; must be an eligible approver of the request.")
    verdict: DecisionVerdict = Field(
        description="approve | reject | amend (with amendments) | request_changes (with rationale)"
    )
    rationale: Text = Field(min_length=1, description="Why; goes to the audit trail.")
    action_digest: Id = Field(description="Digest of the action the approver reviewed.")
    amendments: list[EntryAmendment] = Field(
        default=[],
        max_length=MAX_LIST_ITEMS,
        description="Only with verdict 'amend': the changed entries.",
    )
    arguments: dict[str, Any] | None = Field(
        default=None,
        description="Only with verdict 'amend' on a tool call: the edited arguments (validated, "
        "re-digested and checked by policy again before the call runs).",
    )
    assertion: str | None = Field(
        default=None,
        max_length=MAX_TOKEN_FIELD_CHARS,
        description="Signed identity assertion (JWT) of the approver; required when the run "
        "has an approval issuer (approval_trust).",
    )

    @model_validator(mode="after")
    def _amendments_match_verdict(self) -> ApprovalDecision:
        if self.verdict == "amend" and not self.amendments and self.arguments is None:
            raise ValueError(
                "verdict 'amend' needs at least one entry in amendments (or, on a tool call, "
                "the edited arguments)"
            )
        if self.verdict != "amend" and (self.amendments or self.arguments is not None):
            raise ValueError(
                f"amendments are only allowed with verdict 'amend', not {self.verdict!r}"
            )
        return self


class PendingApproval(Contract):
    """One line of the approver inbox, kept in the run's memo (key ``baton_pending``) while the
    request waits, so the inbox is a visibility list, with no query to each run."""

    workflow_id: str
    process: str
    request_id: str
    summary: str
    total_amount: Money
    requested_by: str
    requested_at: datetime
    deadline: datetime
    approver_roles: list[str] = Field(description="Roles whose holders can fill an open slot now.")
    eligible_approvers: list[str]
    still_needed: list[ApprovalRequirement]
    approved_by: list[str]
    escalation_level: int
    action_digest: str
    action: str = ""
    comments: int = 0
    #: delegate -> the approver who handed the request on
    delegated_to: dict[str, str] = {}


PENDING_MEMO = "baton_pending"


class ShadowDifference(Contract):
    entry_id: str
    production: str = Field(description="What production did with the entry ('-' if nothing).")
    shadow: str = Field(description="What the shadow run would have done ('-' if nothing).")


class ShadowDiff(Contract):
    """A shadow run against the production run of the same input (``baton shadow diff``)."""

    production_id: str
    shadow_id: str
    same_actions: int
    differences: list[ShadowDifference]
    production_approvals: list[str] = Field(description="Who approved, per production request.")
    shadow_approvals: list[str] = Field(description="Who policy would have asked (simulated).")
    production_tokens: int
    shadow_tokens: int
    production_cost_usd: float
    shadow_cost_usd: float


class ApprovalAck(Contract):
    request_id: str
    accepted: bool
    message: str
    duplicate: bool = False
    still_needed: list[ApprovalRequirement] = []


ApprovalOutcomeKind = Literal[
    "approved", "rejected", "amended", "changes_requested", "expired", "withdrawn"
]


class ApprovalOutcome(Contract):
    """How a request closed (returned by the gate to the process)."""

    request: ApprovalRequest
    outcome: ApprovalOutcomeKind
    decided_by: str | None = None
    rationale: str = ""
    approvers: list[str] = []
    amendments: list[EntryAmendment] = []
    #: a tool call's arguments as an approver edited them (verdict amend)
    arguments: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Notifications (approval requested / escalated / expired), sent by the notify activity
# --------------------------------------------------------------------------------------------

NotificationKind = Literal[
    "approval.requested", "approval.escalated", "approval.expired", "approval.closed",
    "approval.delegated",
    "supervisor.alert",  # workflows/supervisor.py: an anomaly (request_id = the anomaly key)
]  # fmt: skip


class Notification(Contract):
    kind: NotificationKind
    workflow_id: str
    request_id: str
    process: str
    summary: str
    roles: list[str] = Field(description="Roles addressed (e.g. the next tier on escalation).")
    recipients: list[str] = Field(description="People addressed, from the directory.")
    deadline: datetime | None = None
    escalation_level: int = 0
    idempotency_key: str = Field(
        min_length=1, description="Stable per notification; receivers drop repeats by it."
    )
    link: str | None = Field(
        default=None,
        description="The request's page in the approver inbox (set by the notify activity "
        "from BATON_INBOX_URL).",
    )


class NotifyResult(Contract):
    channel: str
    delivered: bool
    detail: str = ""


class ProcessStatus(Contract):
    workflow_id: str
    process: str
    stage: str
    approval_state: Literal[
        "none",
        "pending",
        "approved",
        "rejected",
        "amended",
        "changes_requested",
        "expired",
        "withdrawn",
    ]
    pending: list[ApprovalRequest]
    posted: list[PostedEntry]
    compensated: list[str]
    tokens: int
    cost_usd: float
    held_by: KillSwitchState | None = Field(
        default=None, description="Set while the run holds at a step for the kill switch."
    )
    exceptions: list[CloseException] = Field(
        default=[], description="Entries held as exceptions so far (a finance close)."
    )


# --------------------------------------------------------------------------------------------
# Kill switch
# --------------------------------------------------------------------------------------------


class KillSwitchState(Contract):
    """An active engagement of the kill switch (see activities/kill_switch.py)."""

    id: int
    scope: str = Field(description="'global', 'process:<name>', 'agent:<role>' or 'tenant:<name>'")
    mode: Literal["hold", "cancel"]
    reason: str
    engaged_by: str
    engaged_at: datetime


class KillSwitchStatus(Contract):
    blocking: KillSwitchState | None = Field(
        default=None, description="The engagement that still stops the caller, if any."
    )


class KillSwitchCheck(Contract):
    """What a held workflow asks about: is anything still stopping this process/agent/tenant?"""

    process: str
    agent: str = ""
    tenant: str = ""


# --------------------------------------------------------------------------------------------
# Canaries (activities/canary.py, workflows/canary_monitor.py)
# --------------------------------------------------------------------------------------------

CanaryStateName = Literal["active", "rolled_back", "promoted"]
#: data: a version from PROCESS_VERSIONS, assigned per business key by Baton's client;
#: code: a Worker Deployment Version (a build id), ramped by Temporal (pinned workflows)
CanaryKind = Literal["data", "code"]


class CanarySettings(Contract):
    """A canary of one process: ``share`` of new runs get ``candidate``, the rest ``baseline``;
    the candidate is rolled back when its KPIs are worse than the baseline's beyond a margin."""

    process: str = Field(description="Process name, e.g. 'finance_close'.")
    kind: CanaryKind = "data"
    candidate: str = Field(
        min_length=1,
        description="The version under test: a PROCESS_VERSIONS name, or (code) a build id.",
    )
    baseline: str = Field(
        default=STABLE_VERSION,
        min_length=1,
        description="The version it is compared with (code: the deployment's current build id).",
    )
    deployment: str | None = Field(
        default=None, description="Code canaries: the Worker Deployment whose version ramps."
    )
    share: float = Field(ge=0.0, le=1.0, description="Share of new business keys, 0..1.")
    max_error_rate_increase: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Allowed error rate above the baseline's."
    )
    max_escalation_rate_increase: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Allowed share of runs escalated past an approval SLA, above the baseline's.",
    )
    max_cost_increase: float = Field(
        default=0.20,
        ge=0.0,
        description="Allowed cost per run above the baseline's, as a fraction (0.2 = +20%).",
    )
    min_runs: int = Field(
        default=20, ge=1, le=100_000, description="Finished runs per arm before judging."
    )


class CanaryConfig(CanarySettings):
    """What an operator configures (``baton canary start``): versions are checked against the
    registry here; stored canaries (CanaryStatus) are not re-checked, so a version retired from
    the registry does not hide its history."""

    @field_validator("process")
    @classmethod
    def _process_is_known(cls, v: str) -> str:
        if v not in PROCESS_VERSIONS:
            raise ValueError(
                f"unknown process {v!r}: expected one of {', '.join(PROCESS_VERSIONS)}"
            )
        return v

    @model_validator(mode="after")
    def _versions_are_known(self) -> CanaryConfig:
        if self.kind == "code":  # build ids: Temporal knows them, the registry does not
            if not self.deployment or not self.deployment.strip():
                raise ValueError("deployment: a code canary names its Worker Deployment")
            if self.candidate == self.baseline:
                raise ValueError(f"candidate: must differ from the baseline ({self.baseline!r})")
            return self
        if self.deployment is not None:
            raise ValueError("deployment: only a code canary (kind 'code') names a deployment")
        known = PROCESS_VERSIONS[self.process]
        for name, value in (("candidate", self.candidate), ("baseline", self.baseline)):
            if value not in known:
                raise ValueError(
                    f"{name}: unknown version {value!r} of {self.process}: expected one of "
                    f"{', '.join(known)}"
                )
        if self.candidate == self.baseline:
            raise ValueError(f"candidate: must differ from the baseline ({self.baseline!r})")
        return self


class CanaryStatus(CanarySettings):
    """A canary as stored (table ``canary``): its configuration, state and history."""

    id: int
    state: CanaryStateName
    revision: int = Field(description="1 at start, +1 per change of share or margins.")
    started_at: datetime
    started_by: str
    ended_at: datetime | None = None
    ended_by: str | None = None
    reason: str = Field(default="", description="Why it was started, rolled back or promoted.")


class ArmKpis(Contract):
    """KPIs of one version over the runs started since the canary started (finished runs)."""

    version: str
    runs: int = Field(description="Finished runs: completed + failed (+ timed out).")
    completed: int
    failed: int
    running: int
    error_rate: float
    escalations: int = Field(description="Runs whose approval escalated past an SLA.")
    escalation_rate: float
    approvals: int = Field(description="Runs that needed a human approval.")
    approval_rate: float
    cost_usd: float
    cost_per_run: float


CanaryVerdict = Literal["no_canary", "inactive", "insufficient_data", "healthy", "worse"]


class CanaryEvaluation(Contract):
    process: str
    canary: CanaryStatus | None
    baseline: ArmKpis | None = None
    candidate: ArmKpis | None = None
    verdict: CanaryVerdict
    reasons: list[str] = []
    action: Literal["none", "rolled_back"] = "none"
    evaluated_at: datetime


class CanaryEvaluateInput(Contract):
    process: str
    task_queue: str = Field(description="Runs on this task queue count (one worker fleet).")
    act: bool = Field(default=True, description="Roll back when worse (False: report only).")


class CanaryMonitorInput(Contract):
    """Input of the CanaryMonitor workflow (one per process and task queue)."""

    process: Name
    interval_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    iterations_per_run: int = Field(
        default=500, ge=1, description="Evaluations before continue-as-new (bounded history)."
    )
    evaluations: int = Field(default=0, ge=0, description="Done so far (across continue-as-new).")


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
ProcessStatus.model_rebuild()
ApprovalRequest.model_rebuild()
ComplianceInput.model_rebuild()


# --------------------------------------------------------------------------------------------
# Blackboard (workflows/blackboard.py) and HR onboarding (workflows/hr_onboarding.py)
# --------------------------------------------------------------------------------------------

EMPLOYEE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class BoardEntry(Contract):
    """One accepted write to a versioned blackboard: who wrote what, why, when, at which version."""

    key: str
    value: Any
    version: int = Field(ge=1, description="Version of this key after the write (1 = first).")
    seq: int = Field(ge=1, description="Position in the board's history (all keys).")
    author: str
    reason: str
    at: datetime


class BoardSlot(Contract):
    """What an agent reads of one key: its value and the version it read (0 = never written)."""

    value: Any = None
    version: int = 0


class BoardWrite(Contract):
    """A proposed write: applied only if the key is still at ``expected_version``."""

    key: str = Field(min_length=1)
    value: Any
    expected_version: int = Field(ge=0)
    reason: str = Field(min_length=1)


class PersistBoardInput(Contract):
    board: str = Field(description="Board name within the run, e.g. 'onboarding'.")
    entries: list[BoardEntry]


class NewHire(Contract):
    """A new hire as the HRIS holds it."""

    tenant: str
    employee_id: str
    full_name: str
    role: str
    department: str
    country: str
    manager: str
    start_date: str
    id_document_verified: bool


class LoadHireInput(Contract):
    tenant: str
    employee_id: str


class BoardAgentInput(AgentInput):
    """What a blackboard agent sees: the hire and a snapshot of the board (with versions)."""

    tenant: str
    employee_id: str
    hire: NewHire
    board: dict[str, BoardSlot]


class BoardProposal(Contract):
    writes: list[BoardWrite]
    usage: TokenUsage


class Entitlement(Contract):
    system: str = Field(min_length=1)
    name: str = Field(min_length=1)

    @property
    def label(self) -> str:
        return f"{self.system}:{self.name}"


class GrantInput(Contract):
    tenant: str
    employee_id: str
    hire: NewHire
    entitlement: Entitlement
    requested_by: str
    reason: str
    approval: ApprovalGrant | None = None
    idempotency_key: str
    #: a shadow run's grant: decided by policy, recorded in the shadow outbox, not granted
    shadow: bool = False
    claim: BusinessClaim | None = claim_field()


class GrantOutcome(Contract):
    decision: PolicyDecision
    grant_id: str | None = None  # set only when granted


class RevokeInput(Contract):
    original_key: str = Field(description="Idempotency key of the grant to revoke.")
    reason: str
    idempotency_key: str
    shadow: bool = False


class RevokeOutcome(Contract):
    revoked: bool
    detail: str


class OnboardingInput(Contract):
    """Onboard one new hire of one tenant (the hire must be in the HRIS)."""

    tenant: Name = Field(description="Tenant, e.g. 'acme'.")
    employee_id: Id = Field(description="HRIS employee id, e.g. 'E1001'.")
    requested_by: Name = Field(description="Person or service that asked for the onboarding.")
    approval_timeout_seconds: int = Field(default=3 * 24 * 3600, ge=1, le=30 * 24 * 3600)
    budget: Budget = Field(
        default_factory=Budget,
        description="The run's model budget (run_usd, over_budget). A routed call it refuses "
        "goes to a person holding the process's budget role (policy/data/budget.json).",
    )
    max_conflict_retries: int = Field(
        default=5, ge=0, le=20, description="Re-runs of an agent whose write was stale."
    )
    version: Name = Field(
        default=STABLE_VERSION,
        description="Process version (PROCESS_VERSIONS['hr_onboarding']). Left out, BatonClient "
        "asks the process's canary (sticky per business key).",
    )
    shadow: bool = Field(
        default=False,
        description="Shadow run: every agent step runs and policy is asked, grants and revokes "
        "are only recorded in the shadow outbox, the manager's approval is simulated from "
        "policy. Business key 'shadow/onboarding/<tenant>/<employee id>'.",
    )
    approval_trust: ApprovalTrust | None = Field(
        default=None,
        description="Approval issuer: when set, every approval decision must carry a valid JWT "
        "from it (BatonClient fills it in from BATON_APPROVAL_TRUST).",
    )

    @field_validator("tenant")
    @classmethod
    def _tenant_is_a_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-' (1-63 chars)")
        return v

    @field_validator("version")
    @classmethod
    def _onboarding_version_is_known(cls, v: str) -> str:
        return check_version("hr_onboarding", v)

    @field_validator("employee_id")
    @classmethod
    def _employee_id(cls, v: str) -> str:
        if not EMPLOYEE_ID_PATTERN.match(v):
            raise ValueError("must be letters, digits, '_' or '-' (1-63 chars), e.g. 'E1001'")
        return v

    @field_validator("requested_by")
    @classmethod
    def _requested_by_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a person or service, not be blank")
        return v.strip()

    def workflow_id(self) -> str:
        key = f"onboarding/{self.tenant}/{self.employee_id}"
        return f"shadow/{key}" if self.shadow else key


class GrantedEntitlement(Contract):
    system: str
    name: str
    grant_id: str
    approved_by: list[str] = []


class OnboardingResult(Contract):
    tenant: str
    employee_id: str
    identity: Any
    policies: Any
    granted: list[GrantedEntitlement]
    approvals: list[ApprovalOutcome]
    board_version: int
    conflicts: int
    tokens: int
    cost_usd: float


class OnboardingStatus(Contract):
    workflow_id: str
    process: str
    stage: str
    approval_state: str
    pending: list[ApprovalRequest]
    granted: list[GrantedEntitlement]
    compensated: list[str]
    board_version: int
    conflicts: int


BoardAgentInput.model_rebuild()
BoardProposal.model_rebuild()

__all__ = [
    "APPROVAL_COMMENT_UPDATE",
    "APPROVAL_DELEGATE_UPDATE",
    "APPROVAL_SIGNAL",
    "APPROVAL_UPDATE",
    "AdjustingEntry",
    "AdjustmentProposal",
    "AgentInput",
    "ApprovalAck",
    "ApprovalComment",
    "ApprovalDecision",
    "ApprovalDelegationInput",
    "ApprovalGrant",
    "ApprovalNote",
    "ApprovalOutcome",
    "ApprovalOutcomeKind",
    "ApprovalRequest",
    "ApprovalRequirement",
    "ApprovalVote",
    "ArmKpis",
    "AuditBatch",
    "AuditEvent",
    "AuditWriteResult",
    "BOARD_HISTORY_QUERY",
    "BUDGET_EXCEEDED",
    "BankLine",
    "BoardAgentInput",
    "BoardEntry",
    "BoardProposal",
    "BoardSlot",
    "BoardWrite",
    "Budget",
    "BusinessClaim",
    "CANARY_CHANGED_SIGNAL",
    "CANARY_STATUS_QUERY",
    "CanaryConfig",
    "CanaryEvaluateInput",
    "CanaryEvaluation",
    "CanaryKind",
    "CanaryMonitorInput",
    "CanarySettings",
    "CanaryStateName",
    "ClaimCheckInput",
    "CanaryStatus",
    "CanaryVerdict",
    "CloseMemo",
    "CloseException",
    "ClosePeriodInput",
    "CollectPeriodInput",
    "ComplianceFinding",
    "ComplianceInput",
    "ComplianceReview",
    "Contract",
    "DEFAULT_TASK_QUEUE",
    "DecisionVerdict",
    "Delegation",
    "EMPLOYEE_ID_PATTERN",
    "Entitlement",
    "EntryAmendment",
    "EscalationTier",
    "FinanceCloseInput",
    "FinanceCloseResult",
    "GrantInput",
    "GrantOutcome",
    "GrantedEntitlement",
    "KILL_SWITCH_ERROR",
    "KILL_SWITCH_RELEASED_SIGNAL",
    "KillSwitchCheck",
    "KillSwitchState",
    "KillSwitchStatus",
    "LedgerLine",
    "LoadHireInput",
    "Match",
    "MemoInput",
    "Money",
    "NAME_PATTERN",
    "NewHire",
    "Notification",
    "NotificationKind",
    "NotifyResult",
    "Obligations",
    "OnboardingInput",
    "OnboardingResult",
    "OnboardingStatus",
    "OverBudget",
    "PENDING_APPROVALS_QUERY",
    "PENDING_MEMO",
    "PERIOD_PATTERN",
    "PROCESS_BY_WORKFLOW_TYPE",
    "POSTING_POLICY",
    "PROCESS_VERSIONS",
    "PendingApproval",
    "PeriodData",
    "PersistBoardInput",
    "PolicyBatch",
    "PolicyDecision",
    "PolicyQuery",
    "PostEntryInput",
    "PostEntryOutcome",
    "PostedEntry",
    "ProcessStatus",
    "ProcessVersion",
    "ProposeAdjustmentsInput",
    "REDACTION_KINDS",
    "ReconcileInput",
    "Reconciliation",
    "RedactionKind",
    "ReverseEntryInput",
    "ReviseAdjustmentsInput",
    "RevokeInput",
    "RevokeOutcome",
    "SEARCH_ATTRIBUTES",
    "STABLE_VERSION",
    "STATUS_QUERY",
    "ShadowDiff",
    "SettleClaimInput",
    "ShadowDifference",
    "TokenUsage",
    "VERSION_MEMO",
    "Verdict",
    "check_version",
    "claim_field",
    "digest",
    "posting_policy_input",
]
