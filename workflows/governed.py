"""One governed step: the unit every Baton process is written in.

A process says WHAT to do; this module owns HOW it is done safely, once for every process:

* :class:`GovernedStep`: one sensitive action (an activity whose own transaction asks policy
  and writes, returning the decision with its outcome), its idempotency key, its compensation
  (registered with the saga BEFORE the action runs, once per key), the approval it carries and
  the audit facts that ride in its transaction. :meth:`Governance.act` runs it through the
  kill-switch gate with its kind's preset and turns the decision into what the process sees:
  the outcome (allowed), ``None`` (policy wants a human first; the decision is kept under the
  step's ``subject``) or a typed ``PolicyDenied`` failure.
* :class:`ApprovalRound`: one request to humans built from policy's obligations (merged when the
  round covers several actions), bound to the digest of the exact payload, shown in the Web UI,
  waited for with escalation (or simulated from policy's candidates in a shadow run).
  :meth:`Governance.approve` returns the outcome the process can act on (approved, or amended /
  changes requested when the round allows them) and fails the run with ``ApprovalExpired`` or
  ``ApprovalRejected`` otherwise; :func:`grant` is the proof an approved step carries.
* :meth:`Governance.govern_each` with :class:`GuardedRounds`: a governed step run over several
  items (the close's entries), the ones policy held back put before humans in one round at a
  time until each is done (amended, or revised by the preparer, through policy again). The
  YAML language compiles ``type: governed`` and the approval step guarding it to this.
* The run's business-key claim (activities/claims.py): :meth:`Governance.claimed` puts it on
  every side-effecting activity's input (one with a ``claim`` field), whose transaction claims
  the key or checks the run still owns it; :meth:`Governance.check_claim` is the read-only look
  a run takes before it starts working, and the claim it takes before it asks humans;
  :meth:`Governance.settle_claim` keeps or releases the claim when the run ends
  (docs/processes.md, "One run per business key").

This module must not know any process: no process's activities or contracts are imported here,
and nothing here does I/O outside an activity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate, merge_obligations, new_request, reasons_of
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    AdjustingEntry,
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalOutcomeKind,
    BusinessClaim,
    ClaimCheckInput,
    ComplianceFinding,
    Obligations,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    SettleClaimInput,
    digest,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.presets import ActivityKind, ActivityMethod
from workflows.saga import Saga

__all__ = [
    "CLAIMS_PATCH",
    "ApprovalRound",
    "Compensation",
    "GuardedRounds",
    "Governance",
    "GovernedStep",
    "UNDO_ONCE_PATCH",
    "AMEND_OR_REVISE",
    "amend_entries",
    "claim_refusal",
    "entry_fields",
    "fail_if_denied",
    "fail_if_drilled",
    "grant",
    "held_round",
    "register_compensation",
    "risk_of",
    "step_summary",
]

R = TypeVar("R")
T = TypeVar("T")

#: what a round over held entries settles on: approved, or changed (amended by the approver,
#: or revised by the preparer as the approver asked), then through policy again
AMEND_OR_REVISE: frozenset[ApprovalOutcomeKind] = frozenset(
    {"approved", "amended", "changes_requested"}
)

#: Replay safety: HR onboarding registered an entitlement's revocation again when the same
#: entitlement was granted twice under one key; runs started since register it once.
UNDO_ONCE_PATCH = "governed-step-undo-once"
#: Replay safety: runs started before business-key claims neither looked at nor claimed their
#: key (no check at the start or before an approval, no claim on their inputs, no settling).
CLAIMS_PATCH = "business-key-claims"


class Decided(Protocol):
    """What a sensitive activity answers: the policy decision taken in its own transaction."""

    @property
    def decision(self) -> PolicyDecision: ...


@dataclass(frozen=True)
class Compensation:
    """How to undo a step: one activity (idempotent, a no-op when the step never happened)."""

    description: str  # the saga's line, listed in status.compensated ("reverse ADJ-1")
    activity: ActivityMethod[Any]
    arg: Any
    summary: str = ""  # the activity's summary in the Web UI (default "compensation: <line>")

    @property
    def shown(self) -> str:
        """The activity's summary in the Web UI."""
        return self.summary or f"compensation: {self.description}"

    @classmethod
    def by(cls, description: str, activity: ActivityMethod[Any], arg: Any) -> Compensation:
        """The undo ``description`` ("revoke vpn:corp"), shown as "compensation: <it>"."""
        return cls(description, activity, arg, f"compensation: {description}")


@dataclass(frozen=True)
class GovernedStep(Generic[R]):
    """One sensitive action. ``activity(arg)`` asks policy in its own transaction and returns
    the decision with the outcome (``outcome.decision``)."""

    what: str  # names the action in failures: "posting ADJ-1" -> "policy denied posting ADJ-1"
    activity: ActivityMethod[R]
    arg: Any  # carries the idempotency key, the grant and the shadow flag the activity needs
    summary: str  # the activity's summary in the Web UI
    key: str  # idempotency key: the compensation is registered once per key
    subject: str = ""  # a decision waiting for a human is kept under this name
    undo: Compensation | None = None
    grant: ApprovalGrant | None = None  # the approval this attempt carries (policy re-checks it)
    kind: ActivityKind = "connector"
    #: an approved step writes the approval's buffered audit events in its own transaction
    #: (``arg.audit_events``), one round trip fewer between the decision and the action
    carries_audit: bool = False
    saga: Saga | None = None  # the saga its undo joins (default: the run's)


@dataclass(frozen=True)
class ApprovalRound:
    """One request to humans for what policy held back."""

    action: str  # what is asked for ("post_journal_entries")
    payload: Any  # the exact action: the request and every decision bind to its digest
    summary: str  # the inbox line
    obligations: Obligations | Sequence[Obligations]  # several: one approval covering them all
    excluded: Sequence[str] | None = None  # who may not decide (default: the requester)
    requested_by: str | None = None  # default: the run's requester
    sla_seconds: float | None = None  # default: the run's approval_timeout_seconds
    #: the run's BatonRisk while it waits: a value, or one computed from the obligations
    risk: str | Callable[[Obligations], str] | None = None
    waiting: str = "waiting for approval"  # the run's stage while it waits
    restore_stage: bool = False  # back to the stage before (else "approval <outcome>")
    #: outcomes handed back to the process; "expired" fails ApprovalExpired, others rejected
    settles: frozenset[ApprovalOutcomeKind] = frozenset({"approved"})
    fail_safe: str = ""  # what failing safe means, for the expiry's message
    listed: bool = True  # kept in the run's approvals (its result lists them)
    #: policy's reasons for asking, and the action as the approver inbox shows it
    policy_reasons: Sequence[str] = ()
    action_payload: Any = None
    fields: dict[str, Any] = field(default_factory=dict)  # entries, findings, round, total

    @classmethod
    def over(cls, decisions: Sequence[PolicyDecision], **fields: Any) -> ApprovalRound:
        """One round for every action ``decisions`` held back: their obligations merged,
        policy's reasons for asking shown once each."""
        return cls(
            obligations=[d.obligations for d in decisions],
            policy_reasons=reasons_of(decisions),
            **fields,
        )


@dataclass(frozen=True)
class GuardedRounds:
    """The approval rounds that guard a governed step run over several items (entries):
    every item policy held back goes to ONE request per round, built from the decisions held
    (obligations, reasons) and bound to the digest of the items (:meth:`Governance.govern_each`).
    A YAML approval step with ``guards:`` on a ``governed`` step compiles to this."""

    action: str  # what is asked for ("post_journal_entries")
    summary: Callable[[list[Any], dict[str, Any]], str]  # (held items, request fields) -> line
    excluded: Sequence[str] = ()  # who may never decide (the preparer); amenders are added
    findings: Sequence[ComplianceFinding] = ()  # shown with the entries they concern
    entries: Callable[[list[Any]], list[AdjustingEntry]] | None = None  # the items as entries
    max_rounds: int = 5  # requests at most (the first + amendments / requested changes)
    fail_safe: str = "nothing stays done"
    settles: frozenset[ApprovalOutcomeKind] = AMEND_OR_REVISE  # else rejected (fails safe)
    more: dict[str, Any] = field(default_factory=dict)  # other ApprovalRound fields (sla, ...)


def _jsonable(item: Any) -> Any:
    return item.model_dump(mode="json") if isinstance(item, BaseModel) else item


def held_round(
    decision: PolicyDecision, *, action: str, payload: Any, summary: str, **rest: Any
) -> ApprovalRound:
    """The round for one action policy held back: policy's obligations and reasons (appended
    to ``summary``, the inbox line); ``rest``: the round's other fields."""
    return ApprovalRound(
        action=action,
        payload=payload,
        summary=f"{summary}: {'; '.join(decision.reasons)}",
        obligations=decision.obligations,
        policy_reasons=decision.reasons,
        **rest,
    )


def register_compensation(saga: Saga, kill_switch: KillSwitchGate, undo: Compensation) -> None:
    """Register ``undo`` with ``saga`` before its action runs (for a workflow that is no
    GovernedProcess, e.g. the document-review auction); it runs through the kill-switch gate
    with the compensation preset (a compensation never holds)."""
    saga.add(
        undo.description,
        lambda: kill_switch.step("compensation", undo.activity, undo.arg, undo.shown),
    )


def grant(outcome: ApprovalOutcome) -> ApprovalGrant:
    """The proof an approved round gives the step it authorises (policy re-checks it)."""
    request = outcome.request
    return ApprovalGrant(
        request_id=request.request_id,
        approvers=outcome.approvers,
        action_digest=request.action_digest,
        escalation_level=request.escalation_level,
    )


def step_summary(action: str, policy: str, approval: ApprovalGrant | None) -> str:
    """A governed step's line in the Web UI: the action, the policy it asks, and whether it
    carries an approval ("grant vpn:corp (policy baton/hr/entitlements, approved)")."""
    return f"{action} (policy {policy}{', approved' if approval else ''})"


def risk_of(obligations: Obligations) -> str:
    """BatonRisk of a round: a CFO-level approval is high, any other medium."""
    return "high" if "cfo" in obligations.approver_roles else "medium"


def fail_if_denied(decisions: Sequence[PolicyDecision], prefix: str = "policy denied ") -> None:
    """A preflight: stop before anything is done when policy denies any of ``decisions``."""
    denied = [d for d in decisions if d.verdict == "deny"]
    if denied:
        raise errors.failure(
            errors.POLICY_DENIED,
            prefix + "; ".join(f"{d.subject}: {', '.join(d.reasons)}" for d in denied),
            decision_ids=[d.decision_id for d in denied],
        )


def fail_if_drilled(drill: bool, message: str) -> None:
    """A failure injected on purpose (a ``fail_after_*`` input: tests and drills), to see what
    the run did compensated."""
    if drill:
        raise errors.failure(errors.INJECTED_FAILURE, message)


def claim_refusal(err: BaseException) -> ApplicationError | None:
    """The ``BusinessKeyClaimed`` failure behind ``err`` (another run owns the key), if any."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == errors.BUSINESS_KEY_CLAIMED:
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return None


def amend_entries(
    entries: list[AdjustingEntry], outcome: ApprovalOutcome, amended_by: dict[str, str]
) -> list[AdjustingEntry]:
    """Apply an approver's amendments (the gate checked they name entries of the request and
    change something); ``amended_by`` learns who changed which entry (they may not approve it)."""
    assert outcome.decided_by is not None
    changes = {a.entry_id: a for a in outcome.amendments}
    revised = []
    for entry in entries:
        change = changes.get(entry.entry_id)
        if change is not None:
            entry = entry.model_copy(
                update={
                    "amount": entry.amount if change.amount is None else change.amount,
                    "account": change.account or entry.account,
                    "rationale": f"{entry.rationale} [amended by "
                    f"{outcome.decided_by}: {outcome.rationale}]",
                }
            )
            amended_by[entry.entry_id] = outcome.decided_by
        revised.append(entry)
    return revised


def entry_fields(
    entries: Sequence[AdjustingEntry], findings: Sequence[ComplianceFinding], round_: int
) -> dict[str, Any]:
    """A round's request fields for adjusting entries: the entries, their total by size, the
    compliance findings on them and the round's number (1, then +1 per re-ask)."""
    ids = {e.entry_id for e in entries}
    return {
        "entries": list(entries),
        "total_amount": sum((abs(e.amount) for e in entries), Decimal("0")),
        "compliance_findings": [f for f in findings if f.entry_id in ids],
        "round": round_,
    }


class Governance:
    """The governed step and the approval round, run with the process's gates. A workflow
    sets ``inp``, ``stage``, ``audit``, ``gate``, ``kill_switch`` and ``saga`` (see
    :meth:`govern`) and provides ``_step`` (the kill-switch runner with the run's budget)."""

    inp: Any
    stage: str
    audit: AuditTrail
    gate: ApprovalGate
    kill_switch: KillSwitchGate
    saga: Saga
    #: the activity that evaluates a batch of policy queries (activity name "evaluate_policies")
    policy_activity: Callable[[Any, PolicyBatch], Awaitable[list[PolicyDecision]]]
    #: HR onboarding registered a compensation per attempt before UNDO_ONCE_PATCH
    undo_per_attempt_before_patch = False
    #: the run's claim on its business key (None: a shadow run, or a process without a key)
    claim: BusinessClaim | None = None
    #: a completed run keeps its business key claimed (a closed period stays closed: a new
    #: close of it is refused); False: released on completion. A failed run always releases.
    keeps_claim_on_completion = False
    #: the read-only claim check and the claim's end (activities/claims.py)
    claim_check_activity: Callable[[Any, ClaimCheckInput], Awaitable[None]]
    claim_settle_activity: Callable[[Any, SettleClaimInput], Awaitable[str | None]]

    def govern(
        self,
        inp: Any,
        process: str,
        *,
        trust: Any = None,
        defer_approved_audit: bool = False,
    ) -> None:
        """Set the run's building blocks (called from the workflow's ``__init__``)."""
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.gate = ApprovalGate(
            process, self.audit, trust, defer_approved_audit=defer_approved_audit
        )
        self.kill_switch = KillSwitchGate(self.audit)
        self.saga = Saga()
        self.held: dict[str, PolicyDecision] = {}  # decisions waiting for a human, by subject
        self.approvals: list[ApprovalOutcome] = []  # every round, in order
        self._undo_keys: set[str] = set()
        self.claim = self.business_claim(inp, process)

    # -- the business-key claim ----------------------------------------------------------------

    def business_claim(self, inp: Any, process: str) -> BusinessClaim | None:
        """The run's business key: its input's canonical workflow id (``inp.workflow_id()``,
        the ProcessSpec's business key). None for a shadow run (it changes nothing) and for a
        process whose input names no key; a process whose key is spelled otherwise overrides
        this."""
        key_of = getattr(inp, "workflow_id", None)
        if getattr(inp, "shadow", False) or not callable(key_of):
            return None
        return BusinessClaim(process=process, key=key_of())

    def claiming(self) -> bool:
        """Whether this run claims its business key (runs started before claims do not)."""
        return self.claim is not None and workflow.patched(CLAIMS_PATCH)

    def claimed(self, arg: Any) -> Any:
        """``arg`` carrying the run's claim, when it is a side effect's input (a ``claim``
        field still unset); anything else unchanged."""
        if (
            self.claim is None
            or not isinstance(arg, BaseModel)
            or "claim" not in type(arg).model_fields
            or getattr(arg, "claim", None) is not None
            or not self.claiming()
        ):
            return arg
        return arg.model_copy(update={"claim": self.claim})

    async def check_claim(self, when: str, *, take: bool = False) -> None:
        """Fail fast with ``BusinessKeyClaimed`` (naming the owner) when another run owns the
        business key: a read before the run works (the side effects' own transactions are the
        guard against races; this saves the work), or with ``take`` the claim itself, before
        the run asks humans (so two racing runs never both ask)."""
        if self.claim is None or not self.claiming():
            return
        try:
            await self._step(
                "connector",
                self.claim_check_activity,
                ClaimCheckInput(claim=self.claim, take=take),
                f"business key: {'claim' if take else 'is'} {self.claim.key}"
                f"{'' if take else ' free?'} ({when})",
            )
        except Exception as err:
            refusal = claim_refusal(err)
            if refusal is None:
                raise
            details = refusal.details[0] if refusal.details else {}
            raise errors.failure(errors.BUSINESS_KEY_CLAIMED, refusal.message, **details) from None

    async def settle_claim(self, outcome: Literal["completed", "failed"]) -> None:
        """The run ended: keep its claim (a completed run of a process that keeps it) or
        release it; only the owner's claim changes."""
        if self.claim is None or not self.claiming():
            return
        keep = outcome == "completed" and self.keeps_claim_on_completion
        await self._step(
            "audit",  # never holds, retries until it succeeds
            self.claim_settle_activity,
            SettleClaimInput(claim=self.claim, outcome=outcome, keep=keep),
            f"business key: {'keep' if keep else 'release'} {self.claim.key} ({outcome})",
        )

    async def _step(
        self, kind: ActivityKind, activity: ActivityMethod[R], arg: Any, summary: str
    ) -> R:
        return await self.kill_switch.step(kind, activity, arg, summary)

    def undo(
        self, description: str, call: Callable[[], Awaitable[Any]], saga: Saga | None = None
    ) -> None:
        """Register a compensation with the run's saga (or ``saga``), before its action runs."""
        (self.saga if saga is None else saga).add(description, call)  # an empty Saga is falsy

    def compensate_with(
        self, undo: Compensation, key: str | None = None, saga: Saga | None = None
    ) -> None:
        """Register ``undo`` before its action runs (with the run's saga, or ``saga``); once
        per ``key`` (running the same undo twice would undo twice)."""
        if key is not None:
            if key in self._undo_keys and not (
                # asked only for a repeat: other runs carry no marker
                self.undo_per_attempt_before_patch and not workflow.patched(UNDO_ONCE_PATCH)
            ):
                return
            self._undo_keys.add(key)
        self.undo(
            undo.description,
            lambda: self._step("compensation", undo.activity, undo.arg, undo.shown),
            saga,
        )

    def step_key(self, verb: str, name: str, approval: ApprovalGrant | None = None) -> str:
        """A governed step's idempotency key: the run, the action ("grant", "vpn:corp") and
        the approval it carries (a retry is the same step; the approved attempt a new one)."""
        return f"{workflow.info().workflow_id}/{verb}/{name}/{digest(approval)[:12]}"

    async def act_then_approve(
        self,
        items: Sequence[T],
        act: Callable[[T, ApprovalGrant | None], Awaitable[Any]],
        round_: Callable[[list[T]], ApprovalRound],
        *,
        acting: str,
    ) -> list[T]:
        """Act on each item in turn (``act(item, None)``: its governed step, None when policy
        held it back); then put every held item before humans in ONE round (``round_``) and,
        approved, act on them again with the approval attached (stage ``acting``). The held
        items; a rejection or expiry fails the run (see :meth:`approve`)."""
        waiting = [item for item in items if await act(item, None) is None]
        await self.settle(waiting, act, round_, None, amended_by={}, max_rounds=1, acting=acting)
        return waiting

    async def approve_held(
        self,
        subjects: Sequence[str],
        decisions: Sequence[PolicyDecision],
        round_: Callable[[dict[str, PolicyDecision]], ApprovalRound],
        *,
        denied_prefix: str = "policy denied ",
    ) -> dict[str, ApprovalGrant | None]:
        """After a preflight (``decisions``: policy's decision on each of ``subjects``, nothing
        done yet): fail ``PolicyDenied`` when policy denies any; put the ones it held back
        before humans in ONE round (``round_(held)``, held: the decisions by subject). The
        approval each subject carries: the round's grant, or None when it needs none."""
        fail_if_denied(decisions, prefix=denied_prefix)
        decided = zip(subjects, decisions, strict=True)
        held = {s: d for s, d in decided if d.verdict == "require_approval"}
        approval = grant(await self.approve(round_(held))) if held else None
        return {s: approval if s in held else None for s in subjects}

    async def act(self, step: GovernedStep[R]) -> R | None:
        """Run ``step``: its compensation registered first, then the action through the kill
        switch. The outcome when policy allowed it; None when policy wants a human first (the
        decision is kept in ``self.held[step.subject]``); a deny, or a step that still needs a
        human after one approved it, fails the run with ``PolicyDenied``."""
        if step.undo is not None:
            self.compensate_with(step.undo, step.key, step.saga)
        arg, carried = self.claimed(step.arg), []
        if step.carries_audit and step.grant is not None:
            carried = self.audit.take()
            arg = arg.model_copy(update={"audit_events": carried})
        try:
            outcome = await self._step(step.kind, step.activity, arg, step.summary)
        except BaseException:
            self.audit.give_back(carried)
            raise
        decision: PolicyDecision = outcome.decision  # type: ignore[attr-defined]
        if decision.verdict == "deny":
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy denied {step.what}: {'; '.join(decision.reasons)}",
                decision_id=decision.decision_id,
            )
        if decision.verdict == "require_approval":
            if step.grant is not None:
                raise errors.failure(
                    errors.POLICY_DENIED,
                    f"{step.what} still needs approval after "
                    f"{', '.join(step.grant.approvers)} approved it",
                    decision_id=decision.decision_id,
                )
            self.held[step.subject] = decision
            return None
        return outcome

    async def act_approved(
        self,
        step: Callable[[ApprovalGrant | None], GovernedStep[R]],
        round_: Callable[[PolicyDecision], ApprovalRound],
    ) -> R:
        """Run ``step(None)``; when policy wants a human first, put ``round_(decision)`` before
        humans and run ``step(grant)`` with the approval (policy checks it again). The outcome;
        a deny, a rejection or an expiry fails the run (:meth:`act`, :meth:`approve`)."""
        first = step(None)
        outcome = await self.act(first)
        if outcome is None:  # policy wants a human first
            approval = await self.approve(round_(self.held[first.subject]))
            outcome = await self.act(step(grant(approval)))
        assert outcome is not None  # act() fails a step still held after an approval
        return outcome

    async def preflight(
        self, policy: str, inputs: dict[str, dict[str, Any]], summary: str
    ) -> list[PolicyDecision]:
        """Ask ``policy`` about each subject's input document before anything is done (one
        activity; every decision is audited by the policy activity)."""
        wid = workflow.info().workflow_id
        queries = [
            PolicyQuery(policy=policy, input=doc, subject=subject, workflow_id=wid)
            for subject, doc in inputs.items()
        ]
        return await self._step(
            "policy", self.policy_activity, PolicyBatch(queries=queries), summary
        )

    async def settle(
        self,
        waiting: list[T],
        act: Callable[[T, ApprovalGrant | None], Awaitable[Any]],
        round_: Callable[[list[T]], ApprovalRound],
        revise: Callable[[list[T], ApprovalOutcome], Awaitable[list[T]]] | None,
        *,
        amended_by: dict[str, str],
        max_rounds: int,
        amend: Callable[[list[T], ApprovalOutcome, dict[str, str]], list[T]] | None = None,
        acting: str = "acting on the approval",
    ) -> ApprovalOutcome | None:
        """Put the items policy held back before humans until every one is done, or fail
        safe. ``act(item, grant)`` runs an item's governed step (None: held again). The
        approving outcome is returned (None: nothing was waiting).

        approve: act on them with the approval attached (policy re-checks it).
        amend: apply the approver's changes (``amend``, default :func:`amend_entries`); the
          amended items go through policy again and may need a fresh round (the amender may
          not approve their own change).
        request_changes: ``revise`` (e.g. the preparing agent) answers the approver's comment;
          the revision goes through policy again (None: the rounds settle on approval only).
        reject / expired (or ``max_rounds`` rounds without approval): fail; the saga undoes."""
        rounds = 0
        while waiting:
            if rounds >= max_rounds:
                raise errors.failure(
                    errors.APPROVAL_REJECTED,
                    f"no approval after {max_rounds} rounds of amendments or requested "
                    "changes; failing safe",
                )
            rounds += 1
            outcome = await self.approve(round_(waiting))
            if outcome.outcome == "approved":
                self.stage = acting  # the run's stage while it acts on the approval
                for item in waiting:
                    await act(item, grant(outcome))
                return outcome
            revised: list[T]
            if outcome.outcome == "amended":
                apply: Callable[..., Any] = amend or amend_entries
                revised = apply(waiting, outcome, amended_by)
            else:  # changes_requested: back to the preparer
                assert revise is not None, "a round settling on requested changes needs revise"
                self.stage = "revising"
                revised = await revise(waiting, outcome)
            self.stage = "acting on the revision"
            waiting = [e for e in revised if await act(e, None) is None]
        return None

    async def govern_each(
        self,
        items: list[T],
        step_of: Callable[[T, ApprovalGrant | None, str | None], GovernedStep[Any]],
        rounds: GuardedRounds,
        revise: Callable[[list[T], ApprovalOutcome], Awaitable[list[T]]],
        *,
        subject: Callable[[T], str],
        amend: Callable[[list[T], ApprovalOutcome, dict[str, str]], list[T]] | None = None,
        done: Callable[[T, Any, ApprovalGrant | None, str | None], None] | None = None,
        held: bool = False,
    ) -> ApprovalOutcome | None:
        """Run the governed step ``step_of(item, grant, amended_by)`` for each item, one after
        the other (``held``: they ran already, these are the ones policy held back); the items
        policy held back (under ``subject(item)``, see :meth:`act`) go to ONE request per round,
        built from the decisions held and bound to the digest of the items (``rounds``);
        approved, each runs again with the grant; amended or revised, through policy again
        (:meth:`settle`). ``done`` sees each item's outcome (with the grant and the amender it
        carried). The approving outcome, or None when nothing waited."""
        amended_by: dict[str, str] = {}  # who changed which item: they may not approve it

        async def act(item: T, grant_: ApprovalGrant | None) -> Any:
            by = amended_by.get(subject(item))
            outcome = await self.act(step_of(item, grant_, by))
            if outcome is not None and done is not None:
                done(item, outcome, grant_, by)
            return outcome

        def round_(these: list[T]) -> ApprovalRound:
            subjects = [subject(i) for i in these]
            entries = rounds.entries(these) if rounds.entries is not None else []
            fields = entry_fields(entries, rounds.findings, len(self.approvals) + 1)
            if rounds.entries is None:
                fields = {"round": fields["round"]}
            amenders = {amended_by[s] for s in subjects if s in amended_by}
            return ApprovalRound.over(  # policy's obligations for each held item, merged
                [self.held[s] for s in subjects],
                action=rounds.action,
                payload=[_jsonable(i) for i in these],
                summary=rounds.summary(these, fields),
                excluded=sorted({*rounds.excluded, *amenders}),
                risk=risk_of,
                settles=rounds.settles,
                fail_safe=rounds.fail_safe,
                fields=fields,
                **rounds.more,
            )

        waiting = items if held else [i for i in items if await act(i, None) is None]
        return await self.settle(
            waiting,
            act,
            round_,
            revise,
            amended_by=amended_by,
            max_rounds=rounds.max_rounds,
            amend=amend,
        )

    async def sign_off(
        self,
        policy: str,
        subject: str,
        doc: dict[str, Any],
        summary: str,
        round_of: Callable[[PolicyDecision], ApprovalRound],
        refused: str = "policy denied ",
    ) -> PolicyDecision:
        """Ask ``policy`` whether the run may go on: allowed, it goes on; denied, the run fails
        with ``PolicyDenied`` (``refused`` + policy's reasons); a human first, the round
        ``round_of(decision)`` is put before them (a rejection or an expiry fails safe)."""
        [decision] = await self.preflight(policy, {subject: doc}, summary)
        await self.approve_held(
            [subject], [decision], lambda held: round_of(held[subject]), denied_prefix=refused
        )
        return decision

    async def approve(self, round_: ApprovalRound) -> ApprovalOutcome:
        """Put ``round_`` before humans (a shadow run simulates it from policy's candidates)
        and return its outcome when the round settles on it; fail safe otherwise."""
        if not getattr(self.inp, "shadow", False):
            await self.check_claim("before asking for approval", take=True)
        obligations = (
            round_.obligations
            if isinstance(round_.obligations, Obligations)
            else merge_obligations(round_.obligations)
        )
        requested_by = round_.requested_by or self.inp.requested_by
        request = new_request(
            process=self.gate.process,
            action=round_.action,
            action_digest=digest(round_.payload),
            summary=round_.summary,
            obligations=obligations,
            requested_by=requested_by,
            excluded=list(round_.excluded if round_.excluded is not None else [requested_by]),
            policy_reasons=list(round_.policy_reasons),
            action_payload=round_.action_payload,
            **round_.fields,
        )
        if round_.risk is not None:
            risk = round_.risk if isinstance(round_.risk, str) else round_.risk(obligations)
            workflow.upsert_search_attributes([visibility.RISK.value_set(risk)])
        if getattr(self.inp, "shadow", False):  # nobody is asked: policy's candidates stand in
            outcome = self.gate.simulate(request)
        else:
            before, self.stage = self.stage, round_.waiting
            sla = round_.sla_seconds or self.inp.approval_timeout_seconds
            outcome = await self.gate.request(request, timedelta(seconds=sla))
            self.stage = before if round_.restore_stage else f"approval {outcome.outcome}"
        if round_.listed:
            self.approvals.append(outcome)
        if outcome.outcome in round_.settles:
            return outcome
        rid = request.request_id
        if outcome.outcome == "expired":
            safe = f"; failing safe: {round_.fail_safe}" if round_.fail_safe else ""
            raise errors.failure(
                errors.APPROVAL_EXPIRED,
                f"approval request {rid} expired ({outcome.rationale}){safe}",
            )
        by = f"{outcome.decided_by} " if outcome.decided_by else ""
        raise errors.failure(
            errors.APPROVAL_REJECTED,
            f"{by}{outcome.outcome} {rid} ({round_.summary}): {outcome.rationale}",
        )
