"""Month-end finance close (case study A of our brief), read top to bottom: collect the ledger
and bank statement (kept in the payload store: workflows/close_data.py); match them, an LLM
agent proposes adjusting entries for the rest; policy preflights each entry, an LLM compliance
checker reviews them; an LLM writes the memo; each entry posts as a governed step (policy
decides in the posting's transaction), the ones held back go to ONE approval request per round
(workflows/governed.py govern_each: approved, posted with the approval; amended or revised by
the agent, through policy again); the period closes. A denied entry is held as an exception
(workflows/held_exceptions.py) that policy baton/finance/close_exceptions decides on before the
period closes. A rejection, expiry, deny, failure or cancellation reverses the postings and
reopens the period, then the run fails.
"""

from __future__ import annotations

from temporalio import workflow

from workflows import contracts as c
from workflows import errors
from workflows.close_data import collect_and_reconcile
from workflows.contracts import POSTING_POLICY, AdjustingEntry, ApprovalGrant, posting_policy_input
from workflows.governed import (
    Compensation,
    GovernedStep,
    GuardedRounds,
    fail_if_denied,
    step_summary,
)
from workflows.held_exceptions import exceptions_section
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities as Agents
    from activities.finance import FinanceActivities as Finance

__all__ = [
    "CLOSE_EXCEPTIONS_POLICY",
    "EXCEPTIONS_PATCH",
    "MAX_APPROVAL_ROUNDS",
    "PREPARER",
    "PROCESS",
    "FinanceCloseWorkflow",
]

PROCESS = "finance_close"
PREPARER = "agent:reconciler"
#: approval requests one close may open (first request + amendments / requested changes)
MAX_APPROVAL_ROUNDS = 5
#: The policy asked before a period closes with open exceptions
#: (policy/finance/close_exceptions.rego).
CLOSE_EXCEPTIONS_POLICY = "baton/finance/close_exceptions"
#: Replay safety: runs started before it failed the whole close on one denied entry. Asked only
#: when an entry is denied, so a close without exceptions records no marker.
EXCEPTIONS_PATCH = "denied-entries-held-as-exceptions"


@workflow.defn(name="FinanceClose")
class FinanceCloseWorkflow(GovernedProcess):
    keeps_claim_on_completion = True  # a closed period stays closed: a new close is refused

    @workflow.init
    def __init__(self, inp: c.FinanceCloseInput) -> None:
        self.govern(inp, PROCESS, trust=inp.approval_trust, defer_approved_audit=True)
        self.posted: list[c.PostedEntry] = []
        self.exceptions = []

    @workflow.run
    async def run(self, inp: c.FinanceCloseInput) -> c.FinanceCloseResult:
        self.begin(
            "close.started",
            {"tenant": inp.tenant, "period": inp.period, "version": inp.version},
            tenant=inp.tenant,
            shadow=inp.shadow,
            version=inp.version,
        )
        return await self._undoing_on_failure(self._close(inp), event="close", what="close")

    async def _close(self, inp: c.FinanceCloseInput) -> c.FinanceCloseResult:
        tenant, period = inp.tenant, inp.period
        recon = await collect_and_reconcile(
            self,
            tenant,
            period,
            shadow=inp.shadow,
            collect_in_history=Finance.collect_period_data,
            reconcile_in_history=Finance.reconcile_transactions,
        )
        bank, ledger = recon.unmatched_bank, recon.unmatched_ledger
        proposal = await self._step(
            "agent",
            Agents.propose_adjustments,
            c.ProposeAdjustmentsInput(
                tenant=tenant,
                period=period,
                unmatched_bank=bank,
                unmatched_ledger=ledger,
                duplicate_ledger=recon.duplicate_ledger,
                duplicate_ledger_ids=[e.entry_id for e in recon.duplicate_ledger],
            ),
            f"reconciler agent (LLM): explain {len(bank)} bank lines, {len(ledger)} ledger entries",
        )
        entries = proposal.entries

        self.stage = "reviewing"
        status = "open" if inp.shadow else recon.period_status
        preflight = await self.preflight(
            POSTING_POLICY,
            {e.entry_id: posting_policy_input(self._posting(e).arg, status) for e in entries},
            f"policy {POSTING_POLICY}: preflight of {len(entries)} entries",
        )
        review = await self._step(
            "agent",
            Agents.review_compliance,
            c.ComplianceInput(tenant=tenant, period=period, entries=entries, decisions=preflight),
            "compliance checker (LLM): entries + policy verdicts",
        )
        flagged = {f.entry_id for f in review.findings if f.severity != "info"}
        denied = [d for d in preflight if d.verdict == "deny"]
        if denied and workflow.patched(EXCEPTIONS_PATCH):
            entries = self.hold_exceptions(
                entries, denied, policy=POSTING_POLICY, event="close.exceptions_held"
            )
        else:
            fail_if_denied(preflight)  # stop before anything is posted

        memo = await self._step(
            "agent",
            Agents.write_close_memo,
            c.MemoInput(
                tenant=tenant,
                period=period,
                matched=recon.matched,
                unmatched_bank=len(bank),
                unmatched_ledger=len(ledger),
                entries=entries,
                compliance_summary=review.summary,
            ),
            "summary generator (LLM): close memo",
        )

        self.stage = "posting"  # what policy allows posts now; the rest goes to humans
        await self.govern_each(
            entries,
            lambda e, grant, by: self._posting(e, e.entry_id in flagged, grant, by),
            GuardedRounds(
                action="post_journal_entries",
                summary=lambda held, f: (
                    f"post {len(held)} adjusting entries totalling "
                    f"{f['total_amount']} for {tenant} {period}"
                ),
                excluded=[PREPARER],
                findings=review.findings,
                entries=list,
                max_rounds=MAX_APPROVAL_ROUNDS,
                fail_safe="nothing stays posted",
            ),
            self._revise,
            subject=lambda e: e.entry_id,
            done=lambda e, out, grant, by: self.record_posted(e, out.posting_id, grant, by),
        )
        if inp.fail_after_posting:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after posting (fail_after_posting=true)"
            )
        if self.exceptions:
            await self.sign_off_exceptions(
                CLOSE_EXCEPTIONS_POLICY,
                subject=f"{period}/exceptions",
                facts=inp.model_dump(include={"tenant", "period", "requested_by"})
                | {"preparer": PREPARER},
                what=f"close {period}",
                asked=f"close {tenant} {period}",
                excluded=[PREPARER, inp.requested_by],
            )

        self.stage = "closing period"
        close = c.ClosePeriodInput(
            tenant=tenant, period=period, closed_by=inp.requested_by, shadow=inp.shadow
        )
        reopen = close.model_copy(update={"reopen": True})
        self.compensate_with(Compensation(f"reopen period {period}", Finance.close_period, reopen))
        await self._step("connector", Finance.close_period, close, f"close period {period}")
        held = {"exceptions": len(self.exceptions)} if self.exceptions else {}
        tokens, cost_usd = self.cost.tokens, self.cost.cost_usd
        done = {"posted": len(self.posted), **held, "tokens": tokens, "cost_usd": cost_usd}
        await self.finish("close.completed", done)
        return c.FinanceCloseResult(
            **inp.model_dump(include={"tenant", "period"}),
            ledger_entries=recon.ledger_entries,
            bank_lines=recon.bank_lines,
            matched=recon.matched,
            unmatched_bank_lines=len(bank),
            unmatched_ledger_entries=len(ledger),
            posted=self.posted,
            memo=memo.memo + exceptions_section(self.exceptions),
            compliance_summary=review.summary,
            approvals=self.approvals,
            tokens=tokens,
            cost_usd=cost_usd,
            exceptions=self.exceptions,
        )

    # -- the sensitive step: policy decides in the posting's transaction; its undo first ------

    def _posting(
        self,
        entry: AdjustingEntry,
        flagged: bool = False,
        approval: ApprovalGrant | None = None,
        amended_by: str | None = None,
    ) -> GovernedStep[c.PostEntryOutcome]:
        """Posting one entry as a governed step (its ``arg``: the posting policy sees)."""
        key = f"{workflow.info().workflow_id}/post/{entry.entry_id}/{c.digest(entry)[:16]}"
        inp = self.inp
        reverse = c.ReverseEntryInput(
            original_key=key,
            reason=f"close of {inp.period} undone",
            idempotency_key=f"{key}/reverse",
            shadow=inp.shadow,
        )
        return GovernedStep(
            what=f"posting {entry.entry_id}",
            activity=Finance.post_journal_entry,
            arg=c.PostEntryInput(
                **inp.model_dump(include={"tenant", "period", "requested_by", "shadow"}),
                entry=entry,
                preparer=PREPARER,
                compliance_flagged=flagged,
                amended_by=amended_by,
                approval=approval,
                idempotency_key=key,
            ),
            summary=step_summary(
                f"post {entry.entry_id} {entry.amount} to {entry.account}", POSTING_POLICY, approval
            ),
            key=key,
            subject=entry.entry_id,
            undo=Compensation(f"reverse {entry.entry_id}", Finance.reverse_journal_entry, reverse),
            grant=approval,
            carries_audit=True,  # the approval's audit events ride in the posting
        )

    async def _revise(
        self, entries: list[AdjustingEntry], outcome: c.ApprovalOutcome
    ) -> list[AdjustingEntry]:
        """An approver asked for changes: the reconciler agent revises the entries."""
        proposal = await self._step(
            "agent",
            Agents.revise_adjustments,
            c.ReviseAdjustmentsInput(
                **self.inp.model_dump(include={"tenant", "period"}),
                entries=entries,
                comment=outcome.rationale,
                reviewer=outcome.decided_by or "",
            ),
            f"reconciler agent (LLM): revise {len(entries)} entries as {outcome.decided_by} asked",
        )
        return proposal.entries
