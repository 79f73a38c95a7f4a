"""The approval gate: one module every Baton process uses to put an action before humans.

A process hands the gate a policy verdict of ``require_approval`` (its obligations say which roles,
how many distinct people, the escalation chain and who holds each role) and awaits
:meth:`ApprovalGate.request`. The gate then

* opens an :class:`ApprovalRequest` bound to the digest of the exact action, shows it in the Web UI
  (search attributes + current details), audits it and notifies the approvers;
* takes decisions by Update (the validator refuses bad ones before they enter history, and the
  caller hears why) or by Signal (a refused signal is audited and ignored). Both go through
  :meth:`check`, so the two paths accept and refuse exactly the same decisions;
* counts approvals N-of-M: every approval fills one slot, one person fills at most one slot, and
  the request is approved when every slot is filled (an assignment is searched for, so the order
  in which approvers arrive never matters);
* closes the request at the first reject, amend or request-changes by an eligible approver;
* escalates when a tier's SLA passes: audits the breach, notifies the next tier and lets its roles
  fill any open slot; after the last tier it expires the request (the process fails safe).

Everything stays in workflow state and history, so it is durable across worker and server
restarts. The validator cannot do I/O: who holds which role travels with the request
(``candidates``, computed by policy from the directory when the request was made).

Pure functions at the bottom (slots, assignment, eligibility) hold the rules; they are unit-tested
without Temporal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from workflows import telemetry, visibility
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    PENDING_MEMO,
    ApprovalAck,
    ApprovalComment,
    ApprovalDecision,
    ApprovalDelegationInput,
    ApprovalNote,
    ApprovalOutcome,
    ApprovalOutcomeKind,
    ApprovalRequest,
    ApprovalRequirement,
    ApprovalVote,
    Delegation,
    EscalationTier,
    Notification,
    NotificationKind,
    Obligations,
    PendingApproval,
    PolicyDecision,
)
from workflows.contracts.security import ApprovalTrust
from workflows.presets import PRESETS
from workflows.signed_approval import (
    AssertionRefused,
    VerifiedIdentity,
    approver_refusal,
    unseal_assertion,
)

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities

#: Refused Signals audited per run; later ones are only counted (ApprovalGate.refused_signals),
#: not written one by one: a flood of forged signals must not fill the ledger. The last row
#: written says so, and the rest are summarised (``approval.refusals_summarised``).
REFUSED_SIGNAL_AUDIT_LIMIT = 20
#: Refusals beyond the limit one summary row covers while the run waits (one more summary when
#: the request closes covers the rest).
REFUSAL_SUMMARY_EVERY = 100

#: Comments and delegations one request keeps (history stays small; a flood is refused).
MAX_COMMENTS_PER_REQUEST = 50
MAX_DELEGATIONS_PER_REQUEST = 10
#: An approver inbox Update whose sender may sign it: a comment or a delegation.
_InboxUpdate = ApprovalComment | ApprovalDelegationInput

CLOSING_VERDICTS: dict[str, ApprovalOutcomeKind] = {
    "reject": "rejected",
    "amend": "amended",
    "request_changes": "changes_requested",
}


@dataclass(frozen=True)
class Check:
    """The gate's answer to a decision: refused (with the reason), a duplicate, or acceptable."""

    refusal: str | None = None
    duplicate: bool = False


class ApprovalGate:
    #: workflow.patched() id of "an approval's audit events ride with the approved action"
    DEFER_PATCH = "approval-audit-rides-with-action"
    #: workflow.patched() id of "approval tokens are bound to one decision and used once";
    #: runs started before it keep accepting the tokens they were started with
    BOUND_TOKENS_PATCH = "approval-tokens-bound-and-single-use"
    #: workflow.patched() id of "refused Signals beyond the per-run limit are not audited"
    REFUSAL_LIMIT_PATCH = "refused-signals-rate-limited"
    #: workflow.patched() id of "a decision attempt that does not close the request (refused,
    #: malformed, a vote that still needs others) is written while the run waits"; runs started
    #: before it wrote them with the next flush. Asked when the first such attempt arrives, so
    #: a run whose approvals close at once records no marker.
    PROMPT_AUDIT_PATCH = "decision-attempts-audited-while-waiting"

    def __init__(
        self,
        process: str,
        audit: AuditTrail,
        trust: ApprovalTrust | None = None,
        *,
        defer_approved_audit: bool = False,
    ) -> None:
        """``trust``: the approval issuer; when set, every decision must carry a valid JWT from
        it. ``defer_approved_audit``: when a request is approved, leave its audit events in the
        buffer for the caller's next governed step to write in its own transaction (see
        AuditTrail.take), instead of flushing them first: one activity round trip fewer between
        the decision and the action. The caller must take them (or flush)."""
        self.process = process
        self.audit = audit
        self.trust = trust
        #: the workers' X25519 key that opens sealed approval tokens (set by the worker's
        #: RequireSignedApprovals interceptor; never in the input or history)
        self.seal_key: Any = None
        #: approval token ids (jti) accepted in this run -> the request they decided
        self.used_tokens: dict[str, str] = {}
        #: whether token binding and single use apply (BOUND_TOKENS_PATCH; decided at the
        #: run's first request, None before it: then they apply)
        self.bound_tokens: bool | None = None
        self.refused_signals = 0
        #: refusals beyond the limit not yet covered by a summary row, and when they came
        self.unsummarised: list[tuple[str, str]] = []  # (received at, reason)
        #: PROMPT_AUDIT_PATCH for this run (None: not asked yet) and whether an attempt waits
        #: in the buffer for the waiting loop to write it
        self.prompt_audit: bool | None = None
        self.attempts_buffered = False
        self.defer_approved_audit = defer_approved_audit
        self.requests: dict[str, ApprovalRequest] = {}
        self.outcomes: dict[str, ApprovalOutcome] = {}
        self.closing: dict[str, ApprovalDecision] = {}  # the decision that closed a request
        self.state = "none"  # for the BatonApprovalState search attribute and the status query

    # -- what a process calls ------------------------------------------------------------------

    async def request(self, draft: ApprovalRequest, sla: timedelta) -> ApprovalOutcome:
        """Open ``draft``, wait (escalating) for the humans, and return how it closed."""
        rid = draft.request_id
        if rid in self.requests:
            raise ValueError(f"approval request {rid} was already opened")
        if self.trust is not None and self.bound_tokens is None:
            self.bound_tokens = workflow.patched(self.BOUND_TOKENS_PATCH)
        draft.deadline = workflow.now() + sla
        refresh_tier(draft)
        self.requests[rid] = draft
        self._publish(draft)
        self.audit.record(
            draft.requested_by,
            "approval.requested",
            detail={
                "request_id": rid,
                "action": draft.action,
                "action_digest": draft.action_digest,
                "requirements": [r.model_dump() for r in draft.requirements],
                "eligible": draft.eligible_approvers,
                "excluded": draft.excluded,
                "deadline": draft.deadline.isoformat(),
                "round": draft.round,
            },
            rationale=draft.summary,
        )
        telemetry.approval_requested(self.process, rid)
        await self.audit.flush()
        await self._notify("approval.requested", draft, draft.approver_roles)

        while rid not in self.outcomes:
            remaining = (draft.deadline - workflow.now()).total_seconds()
            try:
                await workflow.wait_condition(
                    lambda: rid in self.outcomes or self.attempts_buffered,
                    timeout=max(remaining, 0.001),
                )
            except TimeoutError:
                await self._sla_passed(draft)
                continue
            if rid not in self.outcomes and self.attempts_buffered:
                # a refused, malformed or partial decision arrived while nothing else is
                # coming: write it now (the approving decision, when it comes, does not wait
                # for this: it is its own activation)
                self.attempts_buffered = False
                self._summarise_refusals(REFUSAL_SUMMARY_EVERY)
                await self.audit.flush()
        if self.prompt_audit:
            self._summarise_refusals(1)
        outcome = self.outcomes[rid]
        if outcome.outcome != "withdrawn":  # withdraw() counted it
            telemetry.approval_closed(
                self.process, outcome.outcome, workflow.now() - draft.requested_at, rid
            )
        self.state = outcome.outcome
        self._publish(None)
        deferred = (
            self.defer_approved_audit
            and outcome.outcome == "approved"
            and workflow.patched(self.DEFER_PATCH)
        )
        if not deferred:
            await self.audit.flush()
        return outcome

    def simulate(self, request: ApprovalRequest) -> ApprovalOutcome:
        """Shadow runs ask no human: policy's candidates stand in, one per slot, recorded."""
        approvers = simulated_approvers(request)
        self.audit.record(
            "baton:shadow",
            "approval.simulated",
            detail={
                "request_id": request.request_id,
                "requirements": [r.model_dump() for r in request.requirements],
                "approvers": approvers,
            },
            rationale="shadow run: approvals are simulated from policy's candidates",
        )
        if approvers is None:
            return ApprovalOutcome(
                request=request,
                outcome="expired",
                rationale="shadow run: the directory has nobody to fill every approval slot",
            )
        return ApprovalOutcome(
            request=request,
            outcome="approved",
            decided_by="baton:shadow",
            rationale="simulated",
            approvers=approvers,
        )

    def withdraw(self, reason: str) -> None:
        """The process is failing or cancelled: close every pending request, so the inbox and
        the Web UI's pending filters stop listing it, and audit why."""
        for request in self.pending():
            self.outcomes[request.request_id] = ApprovalOutcome(
                request=request, outcome="withdrawn", rationale=reason
            )
            self.audit.record(
                "baton:workflow",
                "approval.withdrawn",
                detail={"request_id": request.request_id},
                rationale=reason,
            )
            self.state = "withdrawn"
            self._publish(None)
            telemetry.approval_closed(
                self.process,
                "withdrawn",
                workflow.now() - request.requested_at,
                request.request_id,
            )

    def pending(self) -> list[ApprovalRequest]:
        return [r for rid, r in self.requests.items() if rid not in self.outcomes]

    # -- decisions (called by the process's update validator/handler and signal handler) --------

    def check(self, decision: ApprovalDecision) -> Check:
        """Whether ``decision`` is refused (and why), a harmless duplicate, or acceptable."""
        request = self.requests.get(decision.request_id)
        if self.trust is not None:  # before anything else: an unverified caller learns nothing
            refusal, identity = self._verify(decision, request)
            if refusal is not None:
                return Check(f"signed approval refused: {refusal}")
            token_id = identity.token_id if identity is not None else None
            used_on = self.used_tokens.get(token_id) if token_id is not None else None
            if used_on is not None and self.bound_tokens is not False:
                return Check(
                    f"signed approval refused: approval token {token_id} was already "
                    f"used in this run (on {used_on}); each token decides once: ask for a new one"
                )
        if request is None:
            known = ", ".join(r.request_id for r in self.pending()) or "none pending"
            return Check(f"unknown approval request {decision.request_id!r} ({known})")
        if self._is_duplicate(request, decision):
            return Check(duplicate=True)
        if decision.request_id in self.outcomes:
            closed = self.outcomes[decision.request_id]
            by = f" by {closed.decided_by}" if closed.decided_by else ""
            return Check(
                f"approval request {decision.request_id!r} is already closed: {closed.outcome}{by}"
            )
        if decision.action_digest != request.action_digest:
            return Check(
                "action digest mismatch: the action changed since it was reviewed "
                f"(request digest {request.action_digest[:12]}..., "
                f"decision digest {decision.action_digest[:12]}...); review it again"
            )
        if decision.approver == request.requested_by:
            return Check(
                f"segregation of duties: {decision.approver} requested this action "
                "and cannot decide on it"
            )
        handed_on = delegated_by(request, decision.approver)
        if handed_on is not None:
            return Check(
                f"{decision.approver} delegated {request.request_id} to {handed_on.to} and no "
                "longer decides on it"
            )
        if decision.approver in request.excluded:
            return Check(
                f"segregation of duties: {decision.approver} prepared or amended this action "
                "and cannot decide on it"
            )
        if decision.approver not in request.eligible_approvers:
            return Check(
                f"{decision.approver} may not decide on this request: it needs one of the roles "
                f"{', '.join(request.approver_roles)} "
                f"(eligible now: {', '.join(request.eligible_approvers) or 'nobody'})"
            )
        if decision.verdict == "approve":
            voters = [v.approver for v in request.approvals]
            if decision.approver in voters:
                return Check(
                    f"{decision.approver} has already approved {request.request_id}; "
                    "each approval must come from a different person (still needed: "
                    f"{describe(still_needed(request))})"
                )
            if assign(request, [*voters, decision.approver]) is None:
                return Check(
                    f"{decision.approver}'s roles are already covered on {request.request_id} "
                    f"(approved by {', '.join(voters)}); still needed: "
                    f"{describe(still_needed(request))}"
                )
        if decision.verdict == "amend" and decision.arguments is not None:
            payload = request.action_payload if isinstance(request.action_payload, dict) else {}
            if not request.action.startswith("tool:") or decision.amendments:
                return Check(
                    f"{request.request_id} is not a tool call: amend it with entry amendments"
                )
            if decision.arguments == payload.get("arguments"):
                return Check("the edited arguments change nothing")
        elif decision.verdict == "amend":
            entries = {e.entry_id: e for e in request.entries}
            for change in decision.amendments:
                entry = entries.get(change.entry_id)
                if entry is None:
                    return Check(
                        f"amendment names entry {change.entry_id!r}, which is not part of "
                        f"{request.request_id} ({', '.join(entries) or 'no entries'})"
                    )
                same_amount = change.amount is None or change.amount == entry.amount
                same_account = change.account is None or change.account == entry.account
                if same_amount and same_account:
                    return Check(f"amendment of {change.entry_id} changes nothing")
            if len({c.entry_id for c in decision.amendments}) != len(decision.amendments):
                return Check("amendments name the same entry more than once")
        return Check()

    def accept(self, decision: ApprovalDecision, via: str) -> ApprovalAck:
        """Record a decision :meth:`check` passed. Idempotent for duplicates."""
        request = self.requests[decision.request_id]
        signer = self._signer(decision)
        if "token_id" in signer and self.bound_tokens is not False:  # spent, even by a duplicate
            self.used_tokens[signer["token_id"]] = request.request_id
        if self._is_duplicate(request, decision):
            return ApprovalAck(
                request_id=request.request_id,
                accepted=True,
                duplicate=True,
                message=f"duplicate: {decision.verdict} by {decision.approver} was already "
                "recorded; nothing changed",
                still_needed=still_needed(request),
            )
        if decision.verdict == "approve":
            voters = [v.approver for v in request.approvals] + [decision.approver]
            slots = assign(request, voters) or {}
            request.approvals.append(
                ApprovalVote(
                    approver=decision.approver,
                    role=slots.get(decision.approver, "?"),
                    at=workflow.now(),
                    rationale=decision.rationale,
                    via=via,  # type: ignore[arg-type]
                )
            )
            missing = still_needed(request)
            self.audit.record(
                decision.approver,
                "approval.vote",
                detail={
                    "request_id": request.request_id,
                    "as_role": slots.get(decision.approver),
                    "via": via,
                    "action_digest": decision.action_digest,
                    "still_needed": [m.model_dump() for m in missing],
                    "received_at": workflow.now().isoformat(),
                    **signer,
                },
                rationale=decision.rationale,
            )
            if not missing:
                # the rationale is on the vote just above: written once per batch, not twice
                self.audit.record(
                    decision.approver,
                    "approval.approved",
                    detail={
                        "request_id": request.request_id,
                        "approvers": [v.approver for v in request.approvals],
                        "escalation_level": request.escalation_level,
                        "action_digest": decision.action_digest,
                        "rationale_on": "approval.vote",
                    },
                )
                self._close(request, decision, "approved")
                message = f"approved: {request.request_id} has every approval it needs"
            else:
                self._publish(request)
                self._attempt_buffered()
                message = f"approval by {decision.approver} counted; still needed: " + describe(
                    missing
                )
            return ApprovalAck(
                request_id=request.request_id,
                accepted=True,
                message=message,
                still_needed=missing,
            )
        outcome = CLOSING_VERDICTS[decision.verdict]
        self.audit.record(
            decision.approver,
            f"approval.{outcome}",
            detail={
                "request_id": request.request_id,
                "via": via,
                "action_digest": decision.action_digest,
                "amendments": [a.model_dump(mode="json") for a in decision.amendments],
                "received_at": workflow.now().isoformat(),
                **({"arguments": decision.arguments} if decision.arguments is not None else {}),
                **signer,
            },
            rationale=decision.rationale,
        )
        self._close(request, decision, outcome)
        return ApprovalAck(
            request_id=request.request_id,
            accepted=True,
            message=f"{outcome.replace('_', ' ')} by {decision.approver} recorded",
        )

    def validate(self, decision: ApprovalDecision) -> None:
        """The Update validator: raise with the reason when the decision must be refused."""
        refusal = self.check(decision).refusal
        if refusal is not None:
            raise ValueError(refusal)

    def receive_signal(self, decision: ApprovalDecision) -> None:
        """The Signal path: the same checks; a refused decision is audited and ignored."""
        refusal = self.check(decision).refusal
        if refusal is not None:  # a signal cannot be refused to the sender: record, ignore
            self.refuse_signal(decision, refusal)
            return
        self.accept(decision, via="signal")

    def receive_raw_signal(self, payload: Any) -> None:
        """The Signal path from the wire: ``payload`` is whatever the sender sent (decoded
        JSON, or None when it was not JSON). A payload that is not a decision is refused like
        a forged one: audited with what was wrong with it, counted against the same limit."""
        try:
            decision = ApprovalDecision.model_validate(payload)
        except ValidationError as err:
            self.refuse_malformed(payload, malformed_reason(err))
            return
        self.receive_signal(decision)

    def refuse_signal(self, decision: ApprovalDecision, reason: str) -> None:
        """A signal cannot be refused to its sender: audit the refusal and ignore the decision.

        The name in a refused decision is only a claim: the row's actor is the workflow and the
        rationale says "claimed by X (unverified)". Only the first
        :data:`REFUSED_SIGNAL_AUDIT_LIMIT` refusals of a run are written one by one; the rest
        are summarised."""
        detail: dict[str, Any] = {
            "request_id": decision.request_id,
            "via": "signal",
            "verdict": decision.verdict,
            "claimed_by": decision.approver,
        }
        self._refused(detail, reason, f"claimed by {decision.approver} (unverified): {reason}")

    def refuse_malformed(self, payload: Any, reason: str) -> None:
        """A Signal whose payload is not an approval decision: audited as a refusal naming
        what was wrong (the fields it could read are only claims)."""
        fields = payload if isinstance(payload, dict) else {}
        detail: dict[str, Any] = {
            "via": "signal",
            "malformed": True,
            "request_id": _claim(fields.get("request_id")),
            "verdict": _claim(fields.get("verdict")),
            "claimed_by": _claim(fields.get("approver")),
        }
        self._refused(detail, reason, f"malformed approval signal: {reason}")

    def _refused(self, detail: dict[str, Any], reason: str, rationale: str) -> None:
        self.refused_signals += 1
        now = workflow.now()
        if self.refused_signals > REFUSED_SIGNAL_AUDIT_LIMIT and workflow.patched(
            self.REFUSAL_LIMIT_PATCH
        ):
            if self._audit_promptly():
                self.unsummarised.append((now.isoformat(), reason[:200]))
                if len(self.unsummarised) >= REFUSAL_SUMMARY_EVERY:
                    self.attempts_buffered = True
            return
        workflow.logger.warning(f"approval signal refused: {reason}")
        if self.refused_signals == REFUSED_SIGNAL_AUDIT_LIMIT:
            detail["further_refusals"] = (
                "counted and summarised in approval.refusals_summarised (rate limit per run)"
            )
        self.audit.record(
            "baton:workflow",
            "approval.refused",
            detail={**detail, "received_at": now.isoformat()},
            rationale=rationale,
        )
        self._attempt_buffered()

    def _audit_promptly(self) -> bool:
        """Whether this run writes decision attempts while it waits (PROMPT_AUDIT_PATCH)."""
        if self.prompt_audit is None:
            self.prompt_audit = workflow.patched(self.PROMPT_AUDIT_PATCH)
        return self.prompt_audit

    def _attempt_buffered(self) -> None:
        """A decision attempt that leaves the request open was recorded: have the waiting loop
        write it now rather than with the run's next step."""
        if self._audit_promptly():
            self.attempts_buffered = True

    def _summarise_refusals(self, at_least: int) -> None:
        """One audit row for the refusals beyond the limit that no row covers yet."""
        if len(self.unsummarised) < at_least:
            return
        batch, self.unsummarised = self.unsummarised, []
        reasons: dict[str, int] = {}
        for _, reason in batch:
            reasons[reason] = reasons.get(reason, 0) + 1
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        self.audit.record(
            "baton:workflow",
            "approval.refusals_summarised",
            detail={
                "via": "signal",
                "count": len(batch),
                "first_received_at": batch[0][0],
                "last_received_at": batch[-1][0],
                "refused_so_far": self.refused_signals,
                "top_reasons": [{"reason": r, "count": n} for r, n in top],
            },
            rationale=f"{len(batch)} more refused approval signals (rate limit per run: "
            f"only the first {REFUSED_SIGNAL_AUDIT_LIMIT} are written one by one)",
        )

    # -- comments and delegation (the approver inbox; Updates comment_approval and
    # delegate_approval in workflows/process_base.py) -------------------------------------------

    def validate_comment(self, comment: ApprovalComment) -> None:
        """The comment Update's validator: the author must be the requester or an approver of
        the pending request (signed, when the run has an approval issuer), looking at the
        current action."""
        request = self.requests.get(comment.request_id)
        refusal = self._actor_refusal(comment.author, comment, None)
        if refusal is None:
            refusal = _pending_refusal(self, request, comment.request_id, comment.action_digest)
        if refusal is None:
            assert request is not None
            if comment.author not in participants(request):
                refusal = (
                    f"{comment.author} may not comment on {request.request_id}: only its "
                    f"requester ({request.requested_by}) and its approvers "
                    f"({', '.join(request.eligible_approvers) or 'nobody'}) may"
                )
            elif len(request.comments) >= MAX_COMMENTS_PER_REQUEST:
                refusal = (
                    f"{request.request_id} already has {MAX_COMMENTS_PER_REQUEST} comments, the "
                    "most one request keeps; decide, or request changes"
                )
        if refusal is not None:
            raise ValueError(refusal)

    async def comment(self, comment: ApprovalComment) -> ApprovalAck:
        """Record a comment the validator passed: on the request (every approver sees it in the
        inbox), in the memo's count and in the audit trail."""
        request = self.requests[comment.request_id]
        signer = self._spend(comment.author, comment)
        request.comments.append(
            ApprovalNote(author=comment.author, at=workflow.now(), text=comment.text)
        )
        self.audit.record(
            comment.author,
            "approval.comment",
            detail={"request_id": request.request_id, **signer},
            rationale=comment.text,
        )
        self._publish(request)
        await self.audit.flush()
        return ApprovalAck(
            request_id=request.request_id,
            accepted=True,
            message=f"comment by {comment.author} recorded on {request.request_id}",
            still_needed=still_needed(request),
        )

    def validate_delegation(self, inp: ApprovalDelegationInput) -> None:
        """The delegation Update's validator: the delegator must be an eligible approver of the
        pending request who has not approved it yet (signed, when the run has an issuer). Who
        may receive it is policy's question, asked by the handler."""
        request = self.requests.get(inp.request_id)
        refusal = self._actor_refusal(
            inp.approver, inp, request.approver_roles if request is not None else None
        )
        if refusal is None:
            refusal = _pending_refusal(self, request, inp.request_id, inp.action_digest)
        if refusal is None:
            assert request is not None
            refusal = delegation_refusal(request, inp)
        if refusal is not None:
            raise ValueError(refusal)

    def delegation_query(self, inp: ApprovalDelegationInput, tenant: str) -> dict[str, Any]:
        """The input of policy baton/base/delegation for ``inp``."""
        request = self.requests[inp.request_id]
        return {
            "action": "delegate_approval",
            "process": self.process,
            "tenant": tenant,
            "request_id": request.request_id,
            "delegator": inp.approver,
            "delegate": inp.delegate,
            "roles": open_roles(request) or request.approver_roles,
            "requested_by": request.requested_by,
            "excluded": request.excluded,
            "approved_by": [v.approver for v in request.approvals],
        }

    async def delegate(self, inp: ApprovalDelegationInput, decision: PolicyDecision) -> ApprovalAck:
        """Apply policy's answer to a delegation: allowed, the delegator steps out, the delegate
        becomes eligible for the roles they hold and is notified; denied, the refusal is audited
        and the Update fails with policy's reasons. Either way the decision is audited."""
        request = self.requests[inp.request_id]
        signer = self._spend(inp.approver, inp)
        policy = {"policy_decision": decision.decision_id, "policy_revision": decision.revision}
        # the request may have closed (or changed) while policy was asked
        refusal = _pending_refusal(self, request, inp.request_id, inp.action_digest)
        refusal = refusal or delegation_refusal(request, inp)
        if refusal is None and decision.verdict != "allow":
            refusal = "policy refuses the delegation: " + "; ".join(decision.reasons)
        # the roles the delegate may fill: those policy listed them for when it opened the request
        roles = [r for r in request.approver_roles if inp.delegate in request.candidates.get(r, [])]
        if refusal is None and not roles:
            refusal = (
                f"{inp.delegate} is not among the people policy named for the roles of "
                f"{request.request_id} ({', '.join(request.approver_roles)})"
            )
        if refusal is not None:
            self.audit.record(
                inp.approver,
                "approval.delegation_refused",
                detail={"request_id": request.request_id, "delegate": inp.delegate, **policy},
                rationale=refusal,
            )
            await self.audit.flush()
            raise ApplicationError(refusal, type="DelegationRefused", non_retryable=True)
        request.excluded = sorted({*request.excluded, inp.approver})
        request.delegations.append(
            Delegation(
                from_approver=inp.approver,
                to=inp.delegate,
                at=workflow.now(),
                rationale=inp.rationale,
                roles=roles,
            )
        )
        refresh_tier(request)
        self.audit.record(
            inp.approver,
            "approval.delegated",
            detail={
                "request_id": request.request_id,
                "delegate": inp.delegate,
                "roles": roles,
                "eligible": request.eligible_approvers,
                **policy,
                **signer,
            },
            rationale=inp.rationale,
        )
        self._publish(request)
        await self.audit.flush()
        await self._notify("approval.delegated", request, roles, recipients=[inp.delegate])
        return ApprovalAck(
            request_id=request.request_id,
            accepted=True,
            message=f"{inp.approver} delegated {request.request_id} to {inp.delegate}",
            still_needed=still_needed(request),
        )

    def _actor_refusal(
        self, actor: str, update: _InboxUpdate, roles: list[str] | None
    ) -> str | None:
        """A comment's or delegation's signed identity, checked like a decision's: bound to
        this workflow, the request and the digest, sealed, and each token used once."""
        if self.trust is None:
            return None
        refusal, identity = self._verify_token(
            actor, update.request_id, update.action_digest, update.assertion, roles
        )
        if refusal is not None:
            return f"signed approval refused: {refusal}"
        assert identity is not None and identity.token_id is not None
        used_on = self.used_tokens.get(identity.token_id)
        if used_on is not None:
            return (
                f"signed approval refused: approval token {identity.token_id} was already used "
                f"in this run (on {used_on}); each token is used once: ask for a new one"
            )
        return None

    def _spend(self, actor: str, update: _InboxUpdate) -> dict[str, str]:
        """Mark a comment's or delegation's token used; its audit detail (never the token)."""
        if self.trust is None:
            return {}
        _, identity = self._verify_token(
            actor, update.request_id, update.action_digest, update.assertion, None
        )
        if identity is None:
            return {}
        if identity.token_id:
            self.used_tokens[identity.token_id] = update.request_id
        return identity.audit_detail()

    def _verify_token(
        self,
        actor: str,
        request_id: str,
        action_digest: str,
        assertion: str | None,
        roles: list[str] | None,
        *,
        bound: bool = True,
    ) -> tuple[str | None, VerifiedIdentity | None]:
        """Open (if sealed) and verify ``actor``'s approval token, bound (unless ``bound`` is
        False: runs from before tokens were bound) to this workflow, ``request_id`` and
        ``action_digest``, and holding one of ``roles`` (any, when None); (refusal, identity)."""
        assert self.trust is not None
        try:
            token = unseal_assertion(assertion, self.seal_key) if assertion else None
        except AssertionRefused as err:
            return str(err), None
        if token is not None and self.seal_key is not None and token == assertion:
            return (
                "this worker takes approval tokens sealed to its seal key only (a plain token "
                "would be written to workflow history): send it with `baton approve --token` or "
                "BatonClient, which seal it",
                None,
            )
        return approver_refusal(
            token,
            self.trust,
            workflow.now(),
            approver=actor,
            acceptable_roles=roles,
            binding={
                "workflow_id": workflow.info().workflow_id,
                "request_id": request_id,
                "action_digest": action_digest,
            }
            if bound
            else None,
        )

    # -- internals -----------------------------------------------------------------------------

    def _verify(
        self, decision: ApprovalDecision, request: ApprovalRequest | None
    ) -> tuple[str | None, VerifiedIdentity | None]:
        """Open (if sealed) and verify the decision's approval token, bound to this workflow,
        the decision's request id and action digest; (refusal, identity)."""
        return self._verify_token(
            decision.approver,
            decision.request_id,
            decision.action_digest,
            decision.assertion,
            # a request this run does not know: the token must still verify before the caller
            # hears anything about the run's requests; roles are checked against a request
            request.approver_roles if request is not None else None,
            bound=self.bound_tokens is not False,
        )

    def _signer(self, decision: ApprovalDecision) -> dict[str, str]:
        """For the audit trail: which issuer key vouched for the approver, the token's id,
        subject and sha256 (signed runs only); never the token itself."""
        if self.trust is None:
            return {}
        _, identity = self._verify(decision, self.requests.get(decision.request_id))
        return identity.audit_detail() if identity is not None else {}

    def _is_duplicate(self, request: ApprovalRequest, decision: ApprovalDecision) -> bool:
        if decision.action_digest != request.action_digest:
            return False
        if decision.verdict == "approve":
            return any(
                v.approver == decision.approver and v.rationale == decision.rationale
                for v in request.approvals
            )
        closing = self.closing.get(request.request_id)
        return closing is not None and closing == decision

    def _close(
        self, request: ApprovalRequest, decision: ApprovalDecision, outcome: ApprovalOutcomeKind
    ) -> None:
        self.closing[request.request_id] = decision
        self.outcomes[request.request_id] = ApprovalOutcome(
            request=request,
            outcome=outcome,
            decided_by=decision.approver,
            rationale=decision.rationale,
            approvers=[v.approver for v in request.approvals],
            amendments=decision.amendments,
            arguments=decision.arguments,
        )

    async def _sla_passed(self, request: ApprovalRequest) -> None:
        level = request.escalation_level
        final = level >= len(request.escalation)
        self.audit.record(
            "baton:workflow",
            "approval.sla_breached",
            detail={
                "request_id": request.request_id,
                "escalation_level": level,
                "deadline": request.deadline.isoformat(),
                "approvals_so_far": [v.approver for v in request.approvals],
                "final": final,
            },
        )
        if final:
            self.outcomes[request.request_id] = ApprovalOutcome(
                request=request,
                outcome="expired",
                rationale=f"no decision by {request.deadline.isoformat()} after "
                f"{level} escalation(s)",
                approvers=[v.approver for v in request.approvals],
            )
            self.audit.record(
                "baton:workflow",
                "approval.expired",
                detail={"request_id": request.request_id, "escalation_level": level},
            )
            await self._notify("approval.expired", request, request.approver_roles)
            return
        tier = request.escalation[level]
        request.escalation_level = level + 1
        request.deadline = workflow.now() + timedelta(seconds=tier.sla_seconds)
        refresh_tier(request)
        self._publish(request)
        self.audit.record(
            "baton:workflow",
            "approval.escalated",
            detail={
                "request_id": request.request_id,
                "escalation_level": request.escalation_level,
                "notified_roles": tier.roles,
                "eligible": request.eligible_approvers,
                "deadline": request.deadline.isoformat(),
            },
        )
        telemetry.approval_escalated(self.process, request.escalation_level, request.request_id)
        await self.audit.flush()
        await self._notify("approval.escalated", request, tier.roles)

    async def _notify(
        self,
        kind: NotificationKind,
        request: ApprovalRequest,
        roles: list[str],
        *,
        recipients: list[str] | None = None,
    ) -> None:
        """Tell the people holding ``roles``; a notification that cannot be sent is audited, and
        never stops the approval (the request stays visible in the inbox and the Web UI)."""
        info = workflow.info()
        if recipients is None:
            recipients = sorted({p for r in roles for p in request.candidates.get(r, [])})
        if kind == "approval.expired":
            recipients = sorted({*recipients, request.requested_by})
        note = Notification(
            kind=kind,
            workflow_id=info.workflow_id,
            request_id=request.request_id,
            process=self.process,
            summary=request.summary,
            roles=roles,
            recipients=recipients,
            deadline=request.deadline if kind != "approval.expired" else None,
            escalation_level=request.escalation_level,
            idempotency_key=f"{info.workflow_id}/{info.run_id}/{request.request_id}/"
            f"{kind}/{request.escalation_level}",
        )
        preset = PRESETS["notification"]
        try:
            await workflow.execute_activity_method(
                NotifyActivities.notify,
                note,
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"notify {', '.join(roles)}: {kind} {request.request_id}"[:200],
            )
        except ActivityError as err:
            if is_cancelled_exception(err):  # the run is being cancelled: that is no failure
                raise
            cause = err.cause or err
            self.audit.record(
                "baton:workflow",
                "notification.failed",
                detail={"request_id": request.request_id, "kind": kind, "roles": roles},
                rationale=str(cause),
            )

    def _publish(self, request: ApprovalRequest | None) -> None:
        """Search attributes, memo (the inbox line) and current details of the Web UI: what is
        pending, for whom, since when."""
        if request is None:
            workflow.upsert_search_attributes(
                [
                    visibility.APPROVAL_STATE.value_set(self.state),
                    visibility.PENDING_ROLES.value_unset(),
                ]
            )
            workflow.upsert_memo({PENDING_MEMO: None})
            workflow.set_current_details("")
            return
        self.state = "pending"
        workflow.upsert_search_attributes(
            [
                visibility.APPROVAL_STATE.value_set("pending"),
                visibility.PENDING_ROLES.value_set(open_roles(request)),
            ]
        )
        line = PendingApproval(
            workflow_id=workflow.info().workflow_id,
            process=self.process,
            request_id=request.request_id,
            summary=request.summary,
            total_amount=request.total_amount,
            requested_by=request.requested_by,
            requested_at=request.requested_at,
            deadline=request.deadline,
            approver_roles=open_roles(request),
            eligible_approvers=request.eligible_approvers,
            still_needed=still_needed(request),
            approved_by=[v.approver for v in request.approvals],
            escalation_level=request.escalation_level,
            action_digest=request.action_digest,
            action=request.action,
            comments=len(request.comments),
            delegated_to={d.to: d.from_approver for d in request.delegations},
        )
        workflow.upsert_memo({PENDING_MEMO: [line.model_dump(mode="json")]})
        workflow.set_current_details(details_text(request))


# ----------------------------------------------------------------------------------------------
# The rules, as pure functions
# ----------------------------------------------------------------------------------------------


def new_request(
    *,
    process: str,
    action: str,
    action_digest: str,
    summary: str,
    obligations: Obligations,
    requested_by: str,
    excluded: list[str],
    **extra: Any,
) -> ApprovalRequest:
    """A fresh approval request for what policy's ``obligations`` ask (who, how many, the
    escalation chain), opened now; ``extra`` fills the process's own fields (entries, findings,
    round). The gate works out who is eligible and the deadline when it opens it."""
    now = workflow.now()
    return ApprovalRequest(
        request_id=f"apr-{workflow.uuid4().hex[:8]}",
        process=process,
        action=action,
        action_digest=action_digest,
        summary=summary,
        requirements=obligations.required_approvals,
        approver_roles=obligations.approver_roles,
        eligible_approvers=[],
        candidates=obligations.candidates,
        escalation=obligations.escalation,
        requested_by=requested_by,
        excluded=excluded,
        requested_at=now,
        deadline=now,
        **extra,
    )


def malformed_reason(err: ValidationError) -> str:
    """What was wrong with a payload that is not an approval decision, field by field."""
    problems = []
    for e in err.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        problems.append(f"{where}: {e['msg']}")
    more = f" (+{err.error_count() - 5} more)" if err.error_count() > 5 else ""
    return ("not an approval decision: " + "; ".join(problems) + more)[:500]


def _claim(value: Any) -> str | None:
    """A field of a malformed payload, as a short string for the audit row (only a claim)."""
    return None if value is None else str(value)[:200]


def reasons_of(decisions: Sequence[PolicyDecision]) -> list[str]:
    """Policy's reasons for asking, once each, in order (for the approver inbox)."""
    return list(dict.fromkeys(r for d in decisions for r in d.reasons))


def merge_obligations(obligations: Sequence[Obligations]) -> Obligations:
    """One approval covering several actions: the strictest count per role, and only people
    who may approve every action that needs their role."""
    counts: dict[str, int] = {}
    candidates: dict[str, set[str]] = {}
    escalation: list[EscalationTier] = []
    for o in obligations:
        for r in o.required_approvals:
            counts[r.role] = max(counts.get(r.role, 0), r.count)
        for role, people in o.candidates.items():
            candidates[role] = candidates[role] & set(people) if role in candidates else set(people)
        escalation = escalation or o.escalation
    return Obligations(
        approver_roles=sorted(counts),
        required_approvals=[ApprovalRequirement(role=r, count=counts[r]) for r in sorted(counts)],
        escalation=escalation,
        candidates={role: sorted(people) for role, people in sorted(candidates.items())},
    )


def participants(request: ApprovalRequest) -> set[str]:
    """Who may comment on a request: its requester, whoever may decide now, who approved and
    who delegated it."""
    return {
        request.requested_by,
        *request.eligible_approvers,
        *(v.approver for v in request.approvals),
        *(d.from_approver for d in request.delegations),
    }


def delegated_by(request: ApprovalRequest, person: str) -> Delegation | None:
    """The delegation by which ``person`` handed ``request`` on, if any."""
    return next((d for d in request.delegations if d.from_approver == person), None)


def delegation_refusal(request: ApprovalRequest, inp: ApprovalDelegationInput) -> str | None:
    """Why ``inp.approver`` may not hand ``request`` on (None: policy decides the delegate)."""
    who = inp.approver
    if who == request.requested_by or who not in request.eligible_approvers:
        return (
            f"{who} may not delegate {request.request_id}: only an eligible approver may "
            f"(eligible now: {', '.join(request.eligible_approvers) or 'nobody'})"
        )
    if any(v.approver == who for v in request.approvals):
        return f"{who} has already approved {request.request_id}; an approval is not handed on"
    if inp.delegate == who:
        return f"{who} cannot delegate {request.request_id} to themself"
    if len(request.delegations) >= MAX_DELEGATIONS_PER_REQUEST:
        return f"{request.request_id} was delegated {MAX_DELEGATIONS_PER_REQUEST} times already"
    return None


def _pending_refusal(
    gate: ApprovalGate, request: ApprovalRequest | None, request_id: str, action_digest: str
) -> str | None:
    if request is None or request_id in gate.outcomes:
        return f"approval request {request_id!r} is not pending"
    if action_digest != request.action_digest:
        return (
            "action digest mismatch: the action changed since it was reviewed "
            f"(request digest {request.action_digest[:12]}..., given {action_digest[:12]}...); "
            "review it again"
        )
    return None


def slot_roles(request: ApprovalRequest) -> list[str]:
    """One entry per approval needed, e.g. ['cfo', 'finance-controller']."""
    return [r.role for r in request.requirements for _ in range(r.count)]


def widened_roles(request: ApprovalRequest) -> list[str]:
    """Roles of the escalation tiers entered so far: they may fill any open slot."""
    return [role for tier in request.escalation[: request.escalation_level] for role in tier.roles]


def can_fill(request: ApprovalRequest, person: str, slot_role: str) -> bool:
    return any(
        person in request.candidates.get(role, []) for role in [slot_role, *widened_roles(request)]
    )


def assign(request: ApprovalRequest, people: Sequence[str]) -> dict[str, str] | None:
    """A slot role for each person, every person in a different slot; None if impossible.

    A bipartite matching by augmenting paths: small (a few people and slots), exact, and
    independent of the order in which approvals arrived."""
    slots = slot_roles(request)
    holder: dict[int, str] = {}  # slot index -> person

    def place(person: str, seen: set[int]) -> bool:
        for i, role in enumerate(slots):
            if i in seen or not can_fill(request, person, role):
                continue
            seen.add(i)
            if i not in holder or place(holder[i], seen):
                holder[i] = person
                return True
        return False

    for person in people:
        if not place(person, set()):
            return None
    return {person: slots[i] for i, person in holder.items()}


def simulated_approvers(request: ApprovalRequest) -> list[str] | None:
    """Who policy would have asked, one distinct eligible person per slot (a shadow run's
    simulated approval); None when the directory cannot fill every slot."""
    chosen: list[str] = []
    for role in slot_roles(request):
        for person in request.candidates.get(role, []):
            excluded = person in request.excluded or person == request.requested_by
            if excluded or person in chosen:
                continue
            if assign(request, [*chosen, person]) is not None:
                chosen.append(person)
                break
    return chosen if len(chosen) == len(slot_roles(request)) else None


def still_needed(request: ApprovalRequest) -> list[ApprovalRequirement]:
    """The slots the current approvals leave open, as requirements."""
    taken = assign(request, [v.approver for v in request.approvals]) or {}
    open_slots = slot_roles(request)
    for role in taken.values():
        open_slots.remove(role)
    return [
        ApprovalRequirement(role=role, count=open_slots.count(role))
        for role in sorted(set(open_slots))
    ]


def open_roles(request: ApprovalRequest) -> list[str]:
    """Roles whose holders can move the request forward now: those of the open slots, plus the
    escalation tiers entered so far (the approver inbox filters on these)."""
    missing = still_needed(request)
    if not missing:
        return []
    return sorted({*(r.role for r in missing), *widened_roles(request)})


def refresh_tier(request: ApprovalRequest) -> None:
    """Recompute who may decide now (required roles plus the tiers entered so far)."""
    roles = sorted({*(r.role for r in request.requirements), *widened_roles(request)})
    request.approver_roles = roles
    request.eligible_approvers = sorted(
        {p for role in roles for p in request.candidates.get(role, [])} - set(request.excluded)
    )


def describe(requirements: Sequence[ApprovalRequirement]) -> str:
    return " + ".join(f"{r.count} x {r.role}" for r in requirements) or "nothing"


def details_text(request: ApprovalRequest) -> str:
    """The Web UI's current details of a run waiting on ``request`` (markdown)."""
    have = ", ".join(f"{v.approver} as {v.role}" for v in request.approvals) or "none yet"
    level = request.escalation_level
    return (
        f"**Waiting for approval** `{request.request_id}` (round {request.round})\n\n"
        f"{request.summary}\n\n"
        f"- needs: {describe(still_needed(request))} (of {describe(request.requirements)})\n"
        f"- approvals so far: {have}\n"
        f"- who may decide: {', '.join(request.eligible_approvers) or 'nobody'} "
        f"(roles {', '.join(request.approver_roles)})\n"
        f"- requested by {request.requested_by} at {_ts(request.requested_at)}\n"
        f"- SLA deadline {_ts(request.deadline)}, escalation tier {level} of "
        f"{len(request.escalation)}\n"
        f"- decide: `baton approve {request.request_id} --as <you>` or Update "
        f"`decide_approval` with action_digest `{request.action_digest}`"
    )


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


__all__ = [
    "ApprovalGate",
    "CLOSING_VERDICTS",
    "Check",
    "MAX_COMMENTS_PER_REQUEST",
    "MAX_DELEGATIONS_PER_REQUEST",
    "REFUSED_SIGNAL_AUDIT_LIMIT",
    "assign",
    "can_fill",
    "delegated_by",
    "delegation_refusal",
    "describe",
    "details_text",
    "merge_obligations",
    "new_request",
    "open_roles",
    "participants",
    "reasons_of",
    "refresh_tier",
    "simulated_approvers",
    "slot_roles",
    "still_needed",
    "widened_roles",
]
