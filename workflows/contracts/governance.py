"""Governance contracts every process shares: policy decisions and obligations, business-key
claims, approvals (requests, votes, decisions, comments, delegations, the inbox line),
notifications, the process status, the kill switch, canaries and the audit trail."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from workflows.contracts.base import PROCESS_VERSIONS, STABLE_VERSION, Contract, Money
from workflows.contracts.ledger import (
    AdjustingEntry,
    CloseException,
    ComplianceFinding,
    PostedEntry,
)
from workflows.contracts.security import MAX_LIST_ITEMS, MAX_TOKEN_FIELD_CHARS, Id, Name, Text

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


class CompensationInput(Contract):
    """A compensation: undo, once, what an earlier action did under its idempotency key (a
    no-op when it did nothing: denied, waiting for approval, or never ran)."""

    original_key: str = Field(
        description="Idempotency key of the action to undo (a posting, a grant, a commit)."
    )
    reason: str
    idempotency_key: str


class ApprovalGrant(Contract):
    """Proof of a human approval, attached to the sensitive call so policy can re-check it."""

    request_id: str
    approvers: list[str] = Field(min_length=1, description="Distinct approvers, N-of-M.")
    action_digest: str
    escalation_level: int = Field(
        default=0, ge=0, description="Escalation tiers entered before the approval completed."
    )


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
#: A share of runs, or a margin on a rate: 0..1.
_Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


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
    share: _Fraction = Field(description="Share of new business keys, 0..1.")
    max_error_rate_increase: _Fraction = Field(
        default=0.05, description="Allowed error rate above the baseline's."
    )
    max_escalation_rate_increase: _Fraction = Field(
        default=0.10,
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
    decision_id: str | None = Field(
        default=None, description="The policy decision the row records or the step ran under."
    )
    model: str | None = Field(default=None, description="The model that answered (agent rows).")
    tokens: int = Field(default=0, description="The tokens the model calls took (agent rows).")
    cost_usd: float = Field(default=0.0, description="What the model calls cost (agent rows).")
    input_digest: str | None = Field(
        default=None,
        description="digest() of what was decided on or sent to the model: never the data.",
    )
    output_digest: str | None = Field(default=None, description="digest() of the answer.")


class AuditBatch(Contract):
    events: list[AuditEvent]


class AuditWriteResult(Contract):
    written: int
    already_present: int


ProcessStatus.model_rebuild()
ApprovalRequest.model_rebuild()


__all__ = [
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
    "BusinessClaim",
    "CanaryConfig",
    "CanaryEvaluateInput",
    "CanaryEvaluation",
    "CanaryKind",
    "CanaryMonitorInput",
    "CanarySettings",
    "CanaryStateName",
    "CanaryStatus",
    "CanaryVerdict",
    "ClaimCheckInput",
    "CompensationInput",
    "DecisionVerdict",
    "Delegation",
    "EntryAmendment",
    "EscalationTier",
    "KillSwitchCheck",
    "KillSwitchState",
    "KillSwitchStatus",
    "Notification",
    "NotificationKind",
    "NotifyResult",
    "Obligations",
    "PENDING_MEMO",
    "PendingApproval",
    "PolicyBatch",
    "PolicyDecision",
    "PolicyQuery",
    "ProcessStatus",
    "REDACTION_KINDS",
    "RedactionKind",
    "SettleClaimInput",
    "ShadowDiff",
    "ShadowDifference",
    "Verdict",
    "claim_field",
]
