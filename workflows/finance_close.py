"""Month-end finance close (case study A of our brief), read top to bottom.

1. data collector reads the period's ledger and bank statement;
2. reconciler matches them deterministically; an LLM agent proposes adjusting entries for the rest;
3. policy preflight on every proposed entry; an LLM compliance checker reviews entries + verdicts;
4. an LLM writes the close memo;
5. each entry is posted through the sensitive activity, which asks policy right before it writes:
   allowed entries post at once, entries that need a human go to ONE approval request (the
   approval gate: N-of-M approvers, SLA and escalation, see workflows/approval_gate.py);
6. approved entries post with the approval attached (policy re-checks it); an amendment or a
   request for changes sends the changed entries through the policy gate again, and a fresh
   request if they still need one; then the period is closed.

A deny, a rejection, an expired approval, a failure or a cancellation (also while waiting for the
approver) reverses everything posted so far and reopens the period, then the run fails with a
typed error. Everything goes to the audit ledger.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from temporalio import workflow

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate, merge_obligations, new_request, reasons_of
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    STATUS_QUERY,
    AdjustingEntry,
    ApprovalGrant,
    ApprovalOutcome,
    ClosePeriodInput,
    CollectPeriodInput,
    ComplianceFinding,
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
    ReviseAdjustmentsInput,
    digest,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.process_base import GovernedProcess, RunCost, set_search_attributes
from workflows.saga import Saga

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.finance import POSTING_POLICY, FinanceActivities, posting_policy_input

R = TypeVar("R")

PROCESS = "finance_close"
PREPARER = "agent:reconciler"
#: approval requests one close may open (first request + amendments / requested changes)
MAX_APPROVAL_ROUNDS = 5


@workflow.defn(name="FinanceClose")
class FinanceCloseWorkflow(GovernedProcess):
    @workflow.init
    def __init__(self, inp: FinanceCloseInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.gate = ApprovalGate(PROCESS, self.audit, inp.approval_trust, defer_approved_audit=True)
        self.kill_switch = KillSwitchGate(self.audit)
        self.undo_registered: set[str] = set()
        self.saga = Saga()
        self.posted: list[PostedEntry] = []
        self.cost = RunCost()  # the run's model tokens and cost, in its search attributes
        # policy decisions of entries waiting for a human, by entry id
        self.pending_decisions: dict[str, PolicyDecision] = {}

    # -- the process -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: FinanceCloseInput) -> FinanceCloseResult:
        set_search_attributes(
            [
                visibility.PROCESS.value_set(PROCESS),
                visibility.TENANT.value_set(inp.tenant),
                visibility.APPROVAL_STATE.value_set("none"),
                visibility.RISK.value_set("low"),
                visibility.COST_USD.value_set(0.0),
                visibility.TOKENS.value_set(0),
                visibility.SHADOW.value_set(inp.shadow),
                visibility.VERSION.value_set(inp.version),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "close.started",
            detail={"tenant": inp.tenant, "period": inp.period, "version": inp.version},
        )
        return await self._undoing_on_failure(self._close(inp), event="close", what="close")

    async def _close(self, inp: FinanceCloseInput) -> FinanceCloseResult:
        fin, agents = FinanceActivities, AgentActivities
        self.stage = "collecting"
        data = await self._step(
            "connector",
            fin.collect_period_data,
            CollectPeriodInput(tenant=inp.tenant, period=inp.period),
            "data collector: ledger + bank statement",
        )
        if data.period_status != "open" and not inp.shadow:
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
        self.cost.add(proposal.usage)
        entries = proposal.entries

        self.stage = "reviewing"
        preflight = await self._step(
            "policy",
            fin.evaluate_policies,
            PolicyBatch(
                queries=[
                    self._posting_query(e, "open" if inp.shadow else data.period_status)
                    for e in entries
                ]
            ),
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
        self.cost.add(review.usage)
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
        self.cost.add(memo.usage)

        self.stage = "posting"
        waiting = [e for e in entries if await self._post(e, flagged=e.entry_id in flagged) is None]
        approvals = await self._approve_and_post(waiting, flagged, review.findings)

        if inp.fail_after_posting:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after posting (fail_after_posting=true)"
            )

        self.stage = "closing period"
        close = ClosePeriodInput(
            tenant=inp.tenant, period=inp.period, closed_by=inp.requested_by, shadow=inp.shadow
        )
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
            detail={
                "posted": len(self.posted),
                "tokens": self.cost.tokens,
                "cost_usd": self.cost.cost_usd,
            },
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
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
        )

    # -- the sensitive step: policy gate + posting, with its compensation registered first ----

    async def _post(
        self,
        entry: AdjustingEntry,
        *,
        flagged: bool,
        grant: ApprovalGrant | None = None,
        amended_by: str | None = None,
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
            amended_by=amended_by,
            approval=grant,
            idempotency_key=key,
            shadow=self.inp.shadow,
            # an approved posting carries the approval's audit events into its transaction
            audit_events=self.audit.take() if grant is not None else [],
        )
        if key not in self.undo_registered:  # register the undo before acting, once per key
            self.undo_registered.add(key)
            self.saga.add(
                f"reverse {entry.entry_id}",
                lambda: self._step(
                    "compensation",
                    FinanceActivities.reverse_journal_entry,
                    ReverseEntryInput(
                        original_key=key,
                        reason=f"close of {self.inp.period} undone",
                        idempotency_key=f"{key}/reverse",
                        shadow=self.inp.shadow,
                    ),
                    f"compensation: reverse {entry.entry_id}",
                ),
            )
        try:
            outcome = await self._step(
                "connector",
                FinanceActivities.post_journal_entry,
                request,
                f"post {entry.entry_id} {entry.amount} to {entry.account} "
                f"(policy {POSTING_POLICY}{', approved' if grant else ''})",
            )
        except BaseException:
            self.audit.give_back(request.audit_events)
            raise
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
                approved_by=grant.approvers if grant else [],
                amended_by=amended_by,
            )
        )
        return outcome.posting_id

    # -- the approval ---------------------------------------------------------------------

    async def _approve_and_post(
        self, waiting: list[AdjustingEntry], flagged: set[str], findings: list[ComplianceFinding]
    ) -> list[ApprovalOutcome]:
        """Put the entries policy held back before humans until they are posted, or fail safe.

        approve: post them with the approval attached (policy re-checks it).
        amend: apply the approver's changes; the amended entries go through the policy gate
          again and may need a fresh approval (the amender may not approve their own change).
        request_changes: the reconciler agent revises the entries from the approver's comment;
          the revision goes through the policy gate again.
        reject / expired: fail; everything posted is reversed.
        """
        outcomes: list[ApprovalOutcome] = []
        amended_by: dict[str, str] = {}
        while waiting:
            if len(outcomes) >= MAX_APPROVAL_ROUNDS:
                raise errors.failure(
                    errors.APPROVAL_REJECTED,
                    f"no approval after {MAX_APPROVAL_ROUNDS} rounds of amendments or requested "
                    "changes; failing safe",
                )
            outcome = await self._ask_humans(waiting, findings, len(outcomes) + 1, amended_by)
            outcomes.append(outcome)
            request = outcome.request
            if outcome.outcome == "expired":
                raise errors.failure(
                    errors.APPROVAL_EXPIRED,
                    f"approval request {request.request_id} expired ({outcome.rationale}); "
                    "failing safe: nothing stays posted",
                )
            if outcome.outcome == "rejected":
                raise errors.failure(
                    errors.APPROVAL_REJECTED,
                    f"{outcome.decided_by} rejected {request.request_id}: {outcome.rationale}",
                )
            if outcome.outcome == "approved":
                self.stage = "posting approved entries"
                grant = ApprovalGrant(
                    request_id=request.request_id,
                    approvers=outcome.approvers,
                    action_digest=request.action_digest,
                    escalation_level=request.escalation_level,
                )
                for entry in waiting:
                    by = amended_by.get(entry.entry_id)
                    if (
                        await self._post(
                            entry, flagged=entry.entry_id in flagged, grant=grant, amended_by=by
                        )
                        is None
                    ):
                        raise errors.failure(
                            errors.POLICY_DENIED,
                            f"entry {entry.entry_id} still needs approval after "
                            f"{', '.join(outcome.approvers)} approved it",
                        )
                return outcomes
            if outcome.outcome == "amended":
                assert outcome.decided_by is not None
                changes = {a.entry_id: a for a in outcome.amendments}
                revised = []
                for entry in waiting:
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
            else:  # changes_requested: back to the preparer
                self.stage = "revising entries"
                proposal = await self._step(
                    "agent",
                    AgentActivities.revise_adjustments,
                    ReviseAdjustmentsInput(
                        tenant=self.inp.tenant,
                        period=self.inp.period,
                        entries=waiting,
                        comment=outcome.rationale,
                        reviewer=outcome.decided_by or "",
                    ),
                    f"reconciler agent (LLM): revise {len(waiting)} entries as "
                    f"{outcome.decided_by} asked",
                )
                self.cost.add(proposal.usage)
                revised = proposal.entries
            self.stage = "posting revised entries"
            waiting = [
                e
                for e in revised
                if await self._post(
                    e, flagged=e.entry_id in flagged, amended_by=amended_by.get(e.entry_id)
                )
                is None
            ]
        return outcomes

    async def _ask_humans(
        self,
        entries: list[AdjustingEntry],
        findings: list[ComplianceFinding],
        round_: int,
        amended_by: dict[str, str],
    ) -> ApprovalOutcome:
        obligations = merge_obligations(
            [self.pending_decisions[e.entry_id].obligations for e in entries]
        )
        total = sum((abs(e.amount) for e in entries), Decimal("0"))
        ids = {e.entry_id for e in entries}
        request = new_request(
            process=PROCESS,
            action="post_journal_entries",
            action_digest=digest([e.model_dump(mode="json") for e in entries]),
            summary=f"post {len(entries)} adjusting entries totalling {total} "
            f"for {self.inp.tenant} {self.inp.period}",
            entries=entries,
            total_amount=total,
            obligations=obligations,
            requested_by=self.inp.requested_by,
            excluded=sorted({PREPARER, *(amended_by[i] for i in ids if i in amended_by)}),
            compliance_findings=[f for f in findings if f.entry_id in ids],
            round=round_,
            policy_reasons=reasons_of([self.pending_decisions[e.entry_id] for e in entries]),
        )
        # risk for the Web UI list filters: a CFO-level approval is high, any other is medium
        risk = "high" if "cfo" in obligations.approver_roles else "medium"
        workflow.upsert_search_attributes([visibility.RISK.value_set(risk)])
        if self.inp.shadow:
            return self.gate.simulate(request)
        self.stage = "waiting for approval"
        outcome = await self.gate.request(
            request, timedelta(seconds=self.inp.approval_timeout_seconds)
        )
        self.stage = f"approval {outcome.outcome}"
        return outcome

    # -- queries ----------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> ProcessStatus:
        return ProcessStatus(
            workflow_id=workflow.info().workflow_id,
            process=PROCESS,
            stage=self.stage,
            approval_state=self.gate.state,  # type: ignore[arg-type]
            pending=self.gate.pending(),
            posted=self.posted,
            compensated=self.saga.compensated,
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
            held_by=self.kill_switch.held_by,
        )

    # -- helpers ----------------------------------------------------------------------------

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
