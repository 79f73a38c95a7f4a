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

An entry policy denies is held as an exception: never posted, listed in the result, the memo,
the run's current details and `baton close exceptions`; the rest of the close goes on. Before the
period closes, policy baton/finance/close_exceptions decides on the open exceptions: allow (a
small total), a finance-controller's sign-off (ApprovalRound), or deny (the close fails safe).

A rejection, an expired approval, a deny of the close, a failure or a cancellation (also while
waiting for the approver) reverses everything posted so far and reopens the period, then the run
fails with a typed error. Everything goes to the audit ledger.
"""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal

from temporalio import workflow

from workflows import errors
from workflows.approval_gate import reasons_of
from workflows.contracts import (
    AdjustingEntry,
    ApprovalGrant,
    ApprovalOutcome,
    CloseException,
    ClosePeriodInput,
    CollectPeriodInput,
    ComplianceFinding,
    ComplianceInput,
    FinanceCloseInput,
    FinanceCloseResult,
    MemoInput,
    PolicyDecision,
    PostedEntry,
    PostEntryInput,
    ProposeAdjustmentsInput,
    ReconcileInput,
    ReverseEntryInput,
    ReviseAdjustmentsInput,
    digest,
)
from workflows.governed import (
    ApprovalRound,
    Compensation,
    GovernedStep,
    fail_if_denied,
    risk_of,
)
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.finance import POSTING_POLICY, FinanceActivities, posting_policy_input

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
    def __init__(self, inp: FinanceCloseInput) -> None:
        self.govern(inp, PROCESS, trust=inp.approval_trust, defer_approved_audit=True)
        self.posted: list[PostedEntry] = []
        self.exceptions: list[CloseException] = []

    # -- the process -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: FinanceCloseInput) -> FinanceCloseResult:
        self.begin(
            "close.started",
            {"tenant": inp.tenant, "period": inp.period, "version": inp.version},
            tenant=inp.tenant,
            shadow=inp.shadow,
            version=inp.version,
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
        entries = proposal.entries

        self.stage = "reviewing"
        status = "open" if inp.shadow else data.period_status
        preflight = await self.preflight(
            POSTING_POLICY,
            {e.entry_id: posting_policy_input(self._draft(e), status) for e in entries},
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
        flagged = {f.entry_id for f in review.findings if f.severity != "info"}
        denied = [d for d in preflight if d.verdict == "deny"]
        if denied and workflow.patched(EXCEPTIONS_PATCH):
            entries = self._hold_as_exceptions(entries, denied)
        else:
            fail_if_denied(preflight)  # stop before anything is posted

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
        memo_text = memo.memo + exceptions_section(self.exceptions)

        self.stage = "posting"
        amended_by: dict[str, str] = {}  # who changed which entry: they may not approve it

        def post(entry: AdjustingEntry, approval: ApprovalGrant | None) -> Awaitable[str | None]:
            by = amended_by.get(entry.entry_id)
            flag = entry.entry_id in flagged
            return self._post(entry, flagged=flag, approval=approval, amended_by=by)

        waiting = [e for e in entries if await post(e, None) is None]
        await self.settle(
            waiting,
            post,
            lambda held: self._round(held, review.findings, amended_by),
            self._revise,
            amended_by=amended_by,
            max_rounds=MAX_APPROVAL_ROUNDS,
        )

        if inp.fail_after_posting:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after posting (fail_after_posting=true)"
            )

        if self.exceptions:
            await self._sign_off_exceptions()

        self.stage = "closing period"
        close = ClosePeriodInput(
            tenant=inp.tenant, period=inp.period, closed_by=inp.requested_by, shadow=inp.shadow
        )
        self.compensate_with(
            Compensation(
                f"reopen period {inp.period}",
                fin.close_period,
                close.model_copy(update={"reopen": True}),
                f"compensation: reopen period {inp.period}",
            )
        )
        await self._step("connector", fin.close_period, close, f"close period {inp.period}")
        await self.finish(
            "close.completed",
            {
                "posted": len(self.posted),
                **({"exceptions": len(self.exceptions)} if self.exceptions else {}),
                "tokens": self.cost.tokens,
                "cost_usd": self.cost.cost_usd,
            },
        )
        return FinanceCloseResult(
            tenant=inp.tenant,
            period=inp.period,
            ledger_entries=len(data.ledger),
            bank_lines=len(data.bank),
            matched=len(recon.matches),
            unmatched_bank_lines=len(recon.unmatched_bank),
            unmatched_ledger_entries=len(recon.unmatched_ledger),
            posted=self.posted,
            memo=memo_text,
            compliance_summary=review.summary,
            approvals=self.approvals,
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
            exceptions=self.exceptions,
        )

    # -- exceptions: what policy denied is held, not posted ---------------------------------

    def _hold_as_exceptions(
        self, entries: list[AdjustingEntry], denied: list[PolicyDecision]
    ) -> list[AdjustingEntry]:
        """Hold the denied entries as exceptions (audited, shown in the Web UI); the rest go on."""
        by_id = {d.subject: d for d in denied}
        for entry in entries:
            decision = by_id.get(entry.entry_id)
            if decision is not None:
                self.exceptions.append(
                    CloseException(
                        entry_id=entry.entry_id,
                        account=entry.account,
                        amount=entry.amount,
                        reasons=decision.reasons,
                        decision_id=decision.decision_id,
                    )
                )
        self.audit.record(
            "baton:workflow",
            "close.exceptions_held",
            detail={
                "exceptions": [e.model_dump(mode="json") for e in self.exceptions],
                "total": str(exceptions_total(self.exceptions)),
            },
            rationale=f"{len(self.exceptions)} entries denied by policy {POSTING_POLICY} are "
            "held as exceptions and not posted; the rest of the close goes on",
        )
        workflow.set_current_details(exceptions_details(self.exceptions))
        return [e for e in entries if e.entry_id not in by_id]

    async def _sign_off_exceptions(self) -> None:
        """Ask policy whether the period may close with the open exceptions: allow, a
        finance-controller's sign-off (a rejection fails safe), or deny (fail safe)."""
        inp, held = self.inp, self.exceptions
        self.stage = "deciding on exceptions"
        workflow.set_current_details(exceptions_details(held))
        subject = f"{inp.period}/exceptions"
        [decision] = await self.preflight(
            CLOSE_EXCEPTIONS_POLICY,
            {
                subject: {
                    "action": "close_with_exceptions",
                    "tenant": inp.tenant,
                    "period": inp.period,
                    "requested_by": inp.requested_by,
                    "preparer": PREPARER,
                    "exceptions": [
                        {
                            "entry_id": e.entry_id,
                            "account": e.account,
                            "amount": float(e.amount),
                            "reasons": e.reasons,
                        }
                        for e in held
                    ],
                }
            },
            f"policy {CLOSE_EXCEPTIONS_POLICY}: close {inp.period} with {len(held)} exceptions",
        )
        fail_if_denied([decision], f"policy refuses to close {inp.period} with exceptions: ")
        if decision.verdict == "require_approval":
            total = exceptions_total(held)
            payload = [e.model_dump(mode="json") for e in held]
            await self.approve(
                ApprovalRound(
                    action="close_with_exceptions",
                    payload=payload,
                    summary=f"close {inp.tenant} {inp.period} with {len(held)} open "
                    f"exceptions totalling {total} (not posted)",
                    obligations=decision.obligations,
                    policy_reasons=decision.reasons,
                    excluded=sorted({PREPARER, inp.requested_by}),
                    risk=risk_of,
                    waiting="waiting for a sign-off of the exceptions",
                    fail_safe="nothing stays posted",
                    action_payload=payload,
                    fields={"total_amount": total},
                )
            )
        workflow.set_current_details(exceptions_details(held))

    # -- the sensitive step: policy gate + posting, with its compensation registered first ----

    async def _post(
        self,
        entry: AdjustingEntry,
        *,
        flagged: bool,
        approval: ApprovalGrant | None = None,
        amended_by: str | None = None,
    ) -> str | None:
        """Post one entry; the posting id, or None when policy requires an approval first."""
        key = f"{workflow.info().workflow_id}/post/{entry.entry_id}/{digest(entry)[:16]}"
        inp = self.inp
        outcome = await self.act(
            GovernedStep(
                what=f"posting {entry.entry_id}",
                activity=FinanceActivities.post_journal_entry,
                arg=self._draft(entry).model_copy(
                    update={
                        "compliance_flagged": flagged,
                        "amended_by": amended_by,
                        "approval": approval,
                        "idempotency_key": key,
                        "shadow": inp.shadow,
                    }
                ),
                summary=f"post {entry.entry_id} {entry.amount} to {entry.account} "
                f"(policy {POSTING_POLICY}{', approved' if approval else ''})",
                key=key,
                subject=entry.entry_id,
                undo=Compensation(
                    f"reverse {entry.entry_id}",
                    FinanceActivities.reverse_journal_entry,
                    ReverseEntryInput(
                        original_key=key,
                        reason=f"close of {inp.period} undone",
                        idempotency_key=f"{key}/reverse",
                        shadow=inp.shadow,
                    ),
                    f"compensation: reverse {entry.entry_id}",
                ),
                grant=approval,
                carries_audit=True,  # the approval's audit events ride in the posting
            )
        )
        if outcome is None:
            return None
        assert outcome.posting_id is not None
        self.posted.append(
            PostedEntry(
                entry_id=entry.entry_id,
                account=entry.account,
                amount=entry.amount,
                posting_id=outcome.posting_id,
                approved_by=approval.approvers if approval else [],
                amended_by=amended_by,
            )
        )
        return outcome.posting_id

    # -- the approval ---------------------------------------------------------------------

    async def _revise(
        self, entries: list[AdjustingEntry], outcome: ApprovalOutcome
    ) -> list[AdjustingEntry]:
        """An approver asked for changes: the reconciler agent revises the entries."""
        proposal = await self._step(
            "agent",
            AgentActivities.revise_adjustments,
            ReviseAdjustmentsInput(
                tenant=self.inp.tenant,
                period=self.inp.period,
                entries=entries,
                comment=outcome.rationale,
                reviewer=outcome.decided_by or "",
            ),
            f"reconciler agent (LLM): revise {len(entries)} entries as {outcome.decided_by} asked",
        )
        return proposal.entries

    def _round(
        self,
        entries: list[AdjustingEntry],
        findings: list[ComplianceFinding],
        amended_by: dict[str, str],
    ) -> ApprovalRound:
        """One request for every entry still waiting; its preparer and amenders may not decide."""
        total = sum((abs(e.amount) for e in entries), Decimal("0"))
        ids = {e.entry_id for e in entries}
        return ApprovalRound(
            action="post_journal_entries",
            payload=[e.model_dump(mode="json") for e in entries],
            summary=f"post {len(entries)} adjusting entries totalling {total} "
            f"for {self.inp.tenant} {self.inp.period}",
            obligations=self.obligations([e.entry_id for e in entries]),
            policy_reasons=reasons_of([self.held[e.entry_id] for e in entries]),
            excluded=sorted({PREPARER, *(amended_by[i] for i in ids if i in amended_by)}),
            risk=risk_of,
            settles=frozenset({"approved", "amended", "changes_requested"}),
            fail_safe="nothing stays posted",
            fields={
                "entries": entries,
                "total_amount": total,
                "compliance_findings": [f for f in findings if f.entry_id in ids],
                "round": len(self.approvals) + 1,
            },
        )

    # -- helpers ----------------------------------------------------------------------------

    def _draft(self, entry: AdjustingEntry) -> PostEntryInput:
        """The posting as policy sees it before anything is posted."""
        inp = self.inp
        return PostEntryInput(
            tenant=inp.tenant,
            period=inp.period,
            entry=entry,
            preparer=PREPARER,
            requested_by=inp.requested_by,
            idempotency_key="preflight",
        )


def exceptions_total(exceptions: list[CloseException]) -> Decimal:
    """The open exceptions' total, by size whatever the sign (as the close policy counts it)."""
    return sum((abs(e.amount) for e in exceptions), Decimal("0"))


def exceptions_details(exceptions: list[CloseException]) -> str:
    """The run's current details in the Web UI while it has open exceptions."""
    lines = [
        f"**{len(exceptions)} open exceptions** (denied by policy, not posted), "
        f"total {exceptions_total(exceptions)}:"
    ]
    lines += [
        f"- {e.entry_id} {e.amount} to {e.account}: {'; '.join(e.reasons)} "
        f"(decision {e.decision_id})"
        for e in exceptions
    ]
    return "\n".join(lines)[:4000]


def exceptions_section(exceptions: list[CloseException]) -> str:
    """The close memo's section on the exceptions (empty when there are none)."""
    if not exceptions:
        return ""
    lines = [
        "",
        "",
        f"Exceptions held (denied by policy, not posted; total {exceptions_total(exceptions)}):",
    ]
    lines += [
        f"- {e.entry_id}: {e.amount} to {e.account}: {'; '.join(e.reasons)} "
        f"(policy decision {e.decision_id})"
        for e in exceptions
    ]
    return "\n".join(lines)
