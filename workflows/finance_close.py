"""Month-end finance close (case study A of our brief), read top to bottom.

1. data collector reads the period's ledger and bank statement;
2. reconciler matches them deterministically; an LLM agent proposes adjusting entries for the rest;
3. policy preflight on every proposed entry; an LLM compliance checker reviews entries + verdicts;
4. an LLM writes the close memo;
5. each entry is posted through the sensitive activity, which asks policy right before it writes:
   allowed entries post at once, entries that need a human wait for ONE approval request;
6. after approval the waiting entries post (policy re-checks the approval); the period is closed.

A deny, a rejection, an expired approval, a failure or a cancellation (also while waiting for the
approver) reverses everything posted so far and reopens the period, then the run fails with a
typed error. Everything goes to the audit ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    APPROVAL_SIGNAL,
    APPROVAL_UPDATE,
    PENDING_APPROVALS_QUERY,
    STATUS_QUERY,
    AdjustingEntry,
    ApprovalAck,
    ApprovalDecision,
    ApprovalGrant,
    ApprovalRequest,
    ClosePeriodInput,
    CollectPeriodInput,
    ComplianceInput,
    FinanceCloseInput,
    FinanceCloseResult,
    MemoInput,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    PostedEntry,
    PostEntryInput,
    ProcessStatus,
    ProposeAdjustmentsInput,
    ReconcileInput,
    ReverseEntryInput,
    TokenUsage,
    digest,
)
from workflows.presets import PRESETS, ActivityKind
from workflows.saga import Saga

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.finance import POSTING_POLICY, FinanceActivities, posting_policy_input

R = TypeVar("R")

PROCESS = "finance_close"
PREPARER = "agent:reconciler"


@workflow.defn(name="FinanceClose")
class FinanceCloseWorkflow:
    @workflow.init
    def __init__(self, inp: FinanceCloseInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.gate = ApprovalGate()
        self.audit = AuditTrail()
        self.saga = Saga()
        self.posted: list[PostedEntry] = []
        self.tokens = 0
        self.cost_usd = 0.0
        self.approval_state = "none"
        # policy decisions of entries waiting for a human, by entry id
        self.pending_decisions: dict[str, PolicyDecision] = {}

    # -- the process -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: FinanceCloseInput) -> FinanceCloseResult:
        workflow.upsert_search_attributes(
            [
                visibility.PROCESS.value_set(PROCESS),
                visibility.TENANT.value_set(inp.tenant),
                visibility.APPROVAL_STATE.value_set("none"),
                visibility.RISK.value_set("low"),
                visibility.COST_USD.value_set(0.0),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "close.started",
            detail={"tenant": inp.tenant, "period": inp.period},
        )
        try:
            return await self._close(inp)
        # Failure, rejection, deny or cancellation (CancelledError is a BaseException): undo, then
        # re-raise. Not BaseException as a whole: an eviction from the worker's cache closes the
        # coroutine with GeneratorExit, and that must not run compensations.
        except (Exception, asyncio.CancelledError) as err:
            self.stage = "compensating"
            undone = await self.saga.compensate()
            self.audit.record(
                "baton:workflow",
                "close.cancelled" if is_cancelled_exception(err) else "close.failed",
                detail={
                    "error": str(err) or type(err).__name__,
                    "compensated": undone,
                    "compensation_failures": self.saga.failed,
                },
            )
            await asyncio.shield(asyncio.ensure_future(self.audit.flush()))
            self.stage = "failed"
            raise

    async def _close(self, inp: FinanceCloseInput) -> FinanceCloseResult:
        fin, agents = FinanceActivities, AgentActivities
        self.stage = "collecting"
        data = await self._step(
            "connector",
            fin.collect_period_data,
            CollectPeriodInput(tenant=inp.tenant, period=inp.period),
            "data collector: ledger + bank statement",
        )
        if data.period_status != "open":
            raise errors.failure(
                errors.PERIOD_CLOSED, f"period {inp.period} of {inp.tenant} is already closed"
            )

        self.stage = "reconciling"
        recon = await self._step(
            "connector",
            fin.reconcile_transactions,
            ReconcileInput(data=data),
            "reconciler: exact + tolerance matching",
        )
        proposal = await self._step(
            "agent",
            agents.propose_adjustments,
            ProposeAdjustmentsInput(
                tenant=inp.tenant,
                period=inp.period,
                unmatched_bank=recon.unmatched_bank,
                unmatched_ledger=recon.unmatched_ledger,
                duplicate_ledger=recon.duplicate_ledger,
                duplicate_ledger_ids=[e.entry_id for e in recon.duplicate_ledger],
            ),
            f"reconciler agent (LLM): explain {len(recon.unmatched_bank)} bank lines, "
            f"{len(recon.unmatched_ledger)} ledger entries",
        )
        self._charge(proposal.usage)
        entries = proposal.entries

        self.stage = "reviewing"
        preflight = await self._step(
            "policy",
            fin.evaluate_policies,
            PolicyBatch(queries=[self._posting_query(e, data.period_status) for e in entries]),
            f"policy {POSTING_POLICY}: preflight of {len(entries)} entries",
        )
        review = await self._step(
            "agent",
            agents.review_compliance,
            ComplianceInput(
                tenant=inp.tenant, period=inp.period, entries=entries, decisions=preflight
            ),
            "compliance checker (LLM): entries + policy verdicts",
        )
        self._charge(review.usage)
        flagged = {f.entry_id for f in review.findings if f.severity != "info"}
        denied = [d for d in preflight if d.verdict == "deny"]
        if denied:  # stop before anything is posted
            raise errors.failure(
                errors.POLICY_DENIED,
                "policy denied "
                + "; ".join(f"{d.subject}: {', '.join(d.reasons)}" for d in denied),
                decision_ids=[d.decision_id for d in denied],
            )

        memo = await self._step(
            "agent",
            agents.write_close_memo,
            MemoInput(
                tenant=inp.tenant,
                period=inp.period,
                matched=len(recon.matches),
                unmatched_bank=len(recon.unmatched_bank),
                unmatched_ledger=len(recon.unmatched_ledger),
                entries=entries,
                compliance_summary=review.summary,
            ),
            "summary generator (LLM): close memo",
        )
        self._charge(memo.usage)

        self.stage = "posting"
        waiting: list[AdjustingEntry] = []
        for entry in entries:
            if await self._post(entry, flagged=entry.entry_id in flagged) is None:
                waiting.append(entry)

        approvals: list[ApprovalDecision] = []
        if waiting:
            decision = await self._approve(waiting, flagged, review.findings)
            approvals.append(decision)
            grant = ApprovalGrant(
                request_id=decision.request_id,
                approver=decision.approver,
                action_digest=decision.action_digest,
            )
            self.stage = "posting approved entries"
            for entry in waiting:
                if await self._post(entry, flagged=entry.entry_id in flagged, grant=grant) is None:
                    raise errors.failure(
                        errors.POLICY_DENIED,
                        f"entry {entry.entry_id} still needs approval after "
                        f"{decision.approver} approved it",
                    )

        if inp.fail_after_posting:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after posting (fail_after_posting=true)"
            )

        self.stage = "closing period"
        close = ClosePeriodInput(tenant=inp.tenant, period=inp.period, closed_by=inp.requested_by)
        self.saga.add(
            f"reopen period {inp.period}",
            lambda: self._step(
                "compensation",
                fin.close_period,
                close.model_copy(update={"reopen": True}),
                f"compensation: reopen period {inp.period}",
            ),
        )
        await self._step("connector", fin.close_period, close, f"close period {inp.period}")

        self.stage = "done"
        self.audit.record(
            "baton:workflow",
            "close.completed",
            detail={"posted": len(self.posted), "tokens": self.tokens, "cost_usd": self.cost_usd},
        )
        await self.audit.flush()
        return FinanceCloseResult(
            tenant=inp.tenant,
            period=inp.period,
            ledger_entries=len(data.ledger),
            bank_lines=len(data.bank),
            matched=len(recon.matches),
            unmatched_bank_lines=len(recon.unmatched_bank),
            unmatched_ledger_entries=len(recon.unmatched_ledger),
            posted=self.posted,
            memo=memo.memo,
            compliance_summary=review.summary,
            approvals=approvals,
            tokens=self.tokens,
            cost_usd=self.cost_usd,
        )

    # -- the sensitive step: policy gate + posting, with its compensation registered first ----

    async def _post(
        self, entry: AdjustingEntry, *, flagged: bool, grant: ApprovalGrant | None = None
    ) -> str | None:
        """Post one entry; the posting id, or None when policy requires an approval first."""
        info = workflow.info()
        key = f"{info.workflow_id}/post/{entry.entry_id}/{digest(entry)[:16]}"
        request = PostEntryInput(
            tenant=self.inp.tenant,
            period=self.inp.period,
            entry=entry,
            preparer=PREPARER,
            requested_by=self.inp.requested_by,
            compliance_flagged=flagged,
            approval=grant,
            idempotency_key=key,
        )
        if grant is None:  # first attempt at this entry: register its undo before acting
            self.saga.add(
                f"reverse {entry.entry_id}",
                lambda: self._step(
                    "compensation",
                    FinanceActivities.reverse_journal_entry,
                    ReverseEntryInput(
                        original_key=key,
                        reason=f"close of {self.inp.period} undone",
                        idempotency_key=f"{key}/reverse",
                    ),
                    f"compensation: reverse {entry.entry_id}",
                ),
            )
        outcome = await self._step(
            "connector",
            FinanceActivities.post_journal_entry,
            request,
            f"post {entry.entry_id} {entry.amount} to {entry.account} "
            f"(policy {POSTING_POLICY}{', approved' if grant else ''})",
        )
        verdict = outcome.decision.verdict
        if verdict == "deny":
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy denied posting {entry.entry_id}: {'; '.join(outcome.decision.reasons)}",
                decision_id=outcome.decision.decision_id,
            )
        if verdict == "require_approval":
            self.pending_decisions[entry.entry_id] = outcome.decision
            return None
        assert outcome.posting_id is not None
        self.posted.append(
            PostedEntry(
                entry_id=entry.entry_id,
                account=entry.account,
                amount=entry.amount,
                posting_id=outcome.posting_id,
                approved_by=grant.approver if grant else None,
            )
        )
        return outcome.posting_id

    # -- the approval ---------------------------------------------------------------------

    async def _approve(
        self, entries: list[AdjustingEntry], flagged: set[str], findings: list[Any]
    ) -> ApprovalDecision:
        decisions = [self.pending_decisions[e.entry_id] for e in entries]
        roles = sorted({r for d in decisions for r in d.obligations.approver_roles})
        eligible = set(decisions[0].obligations.eligible_approvers)
        for d in decisions[1:]:  # one approver must be allowed to approve every entry
            eligible &= set(d.obligations.eligible_approvers)
        total = sum((abs(e.amount) for e in entries), Decimal("0"))
        waiting_ids = {e.entry_id for e in entries}
        now = workflow.now()
        timeout = timedelta(seconds=self.inp.approval_timeout_seconds)
        request = ApprovalRequest(
            request_id=f"apr-{workflow.uuid4().hex[:8]}",
            action="post_journal_entries",
            action_digest=digest([e.model_dump(mode="json") for e in entries]),
            summary=f"post {len(entries)} adjusting entries totalling {total} "
            f"for {self.inp.tenant} {self.inp.period}",
            entries=entries,
            total_amount=total,
            approver_roles=roles,
            eligible_approvers=sorted(eligible),
            requested_by=self.inp.requested_by,
            requested_at=now,
            deadline=now + timeout,
            compliance_findings=[f for f in findings if f.entry_id in waiting_ids],
        )
        self.gate.open(request)
        # risk for the Web UI list filters: a CFO-level approval is high, any other is medium
        risk = "high" if "cfo" in roles else "medium"
        workflow.upsert_search_attributes([visibility.RISK.value_set(risk)])
        self._set_approval_state("pending")
        self.stage = "waiting for approval"
        workflow.set_current_details(
            f"waiting for approval by {' or '.join(roles)} "
            f"({', '.join(request.eligible_approvers) or 'nobody eligible'}) since "
            f"{now.isoformat(timespec='seconds')}: request {request.request_id}, {request.summary}"
        )
        self.audit.record(
            "baton:workflow",
            "approval.requested",
            detail={
                "request_id": request.request_id,
                "roles": roles,
                "eligible": request.eligible_approvers,
                "entries": [e.entry_id for e in entries],
                "total": str(total),
                "action_digest": request.action_digest,
            },
        )
        await self.audit.flush()

        decision = await self.gate.wait(request.request_id, timeout)
        workflow.set_current_details("")
        if decision is None:
            self._set_approval_state("expired")
            self.audit.record(
                "baton:workflow", "approval.expired", detail={"request_id": request.request_id}
            )
            raise errors.failure(
                errors.APPROVAL_EXPIRED,
                f"approval request {request.request_id} expired after {timeout}; "
                "failing safe: nothing stays posted",
            )
        self.audit.record(
            decision.approver,
            "approval.approved" if decision.verdict == "approve" else "approval.rejected",
            detail={"request_id": decision.request_id, "action_digest": decision.action_digest},
            rationale=decision.rationale,
        )
        if decision.verdict == "reject":
            self._set_approval_state("rejected")
            raise errors.failure(
                errors.APPROVAL_REJECTED,
                f"{decision.approver} rejected {request.request_id}: {decision.rationale}",
            )
        self._set_approval_state("approved")
        return decision

    @workflow.update(name=APPROVAL_UPDATE)
    async def decide_approval(self, decision: ApprovalDecision) -> ApprovalAck:
        self.gate.accept(decision)
        return ApprovalAck(
            request_id=decision.request_id,
            accepted=True,
            message=f"{decision.verdict} by {decision.approver} recorded",
        )

    @decide_approval.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        reason = self.gate.check(decision)
        if reason is not None:
            raise ValueError(reason)

    @workflow.signal(name=APPROVAL_SIGNAL)
    def submit_approval(self, decision: ApprovalDecision) -> None:
        reason = self.gate.check(decision)
        if reason is not None:  # a signal cannot be refused to the sender: record, ignore
            workflow.logger.warning(f"approval signal refused: {reason}")
            self.audit.record(
                decision.approver,
                "approval.refused",
                detail={
                    "request_id": decision.request_id,
                    "via": "signal",
                    "verdict": decision.verdict,
                },
                rationale=reason,
            )
            return
        self.gate.accept(decision)

    # -- queries ----------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> ProcessStatus:
        return ProcessStatus(
            workflow_id=workflow.info().workflow_id,
            process=PROCESS,
            stage=self.stage,
            approval_state=self.approval_state,  # type: ignore[arg-type]
            pending=self.gate.pending(),
            posted=self.posted,
            compensated=self.saga.compensated,
            tokens=self.tokens,
            cost_usd=self.cost_usd,
        )

    @workflow.query(name=PENDING_APPROVALS_QUERY)
    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.gate.pending()

    # -- helpers ----------------------------------------------------------------------------

    async def _step(
        self,
        kind: ActivityKind,
        activity: Callable[[Any, Any], Awaitable[R]],
        arg: Any,
        summary: str,
    ) -> R:
        preset = PRESETS[kind]
        return await workflow.execute_activity_method(
            activity,
            arg,  # type: ignore[arg-type]
            start_to_close_timeout=preset.start_to_close,
            heartbeat_timeout=preset.heartbeat,
            retry_policy=preset.retry,
            summary=summary[:200],
        )

    def _posting_query(self, entry: AdjustingEntry, period_status: str) -> PolicyQuery:
        draft = PostEntryInput(
            tenant=self.inp.tenant,
            period=self.inp.period,
            entry=entry,
            preparer=PREPARER,
            requested_by=self.inp.requested_by,
            idempotency_key="preflight",
        )
        return PolicyQuery(
            policy=POSTING_POLICY,
            input=posting_policy_input(draft, period_status),
            subject=entry.entry_id,
            workflow_id=workflow.info().workflow_id,
        )

    def _charge(self, usage: TokenUsage) -> None:
        self.tokens += usage.total_tokens
        self.cost_usd = round(self.cost_usd + usage.cost_usd, 8)
        workflow.upsert_search_attributes([visibility.COST_USD.value_set(self.cost_usd)])

    def _set_approval_state(self, state: str) -> None:
        self.approval_state = state
        workflow.upsert_search_attributes([visibility.APPROVAL_STATE.value_set(state)])
