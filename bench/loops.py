"""Workflows the benchmark runs next to Baton's real FinanceCloseWorkflow.

- ``StepLoopWorkflow`` runs N steps of one kind back to back in ONE run, so the time between the
  starts of consecutive steps is the workflow-side cost of a step:
  ``bare`` one no-op activity; ``local`` one no-op local activity; ``governed`` Baton's real
  sensitive activity (policy decision + posting + audit row in one activity); ``naive`` the
  three-activity gate (evaluate_policies, a no-op "post", record_audit); ``plain`` the same
  posting by a plain activity with no policy, kill switch or audit.
- ``BareCloseWorkflow`` runs as many activities as a finance close, in the same order, all no-ops:
  the orchestration-only baseline for runs per second.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.contracts import (
    AdjustingEntry,
    AuditBatch,
    AuditEvent,
    PolicyBatch,
    PolicyQuery,
    PostEntryInput,
)
from workflows.presets import PRESETS

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from activities.finance import POSTING_POLICY, FinanceActivities, posting_policy_input
    from bench.stand_ins import BareCloseInput, LoopInput, NoopInput, PlainPosting, noop

NOOP_TIMEOUT = timedelta(seconds=30)
CLOSE_SHAPE = [
    "collect_period_data",
    "reconcile_transactions",
    "propose_adjustments",
    "evaluate_policies",
    "review_compliance",
    "write_close_memo",
    # post_journal_entry x posts
    "close_period",
    "record_audit",
]


def bank_fee_posting(tenant: str, period: str, i: int, idempotency_key: str) -> PostEntryInput:
    """The governed step the bench repeats: a small bank fee policy allows without approval."""
    return PostEntryInput(
        tenant=tenant,
        period=period,
        entry=AdjustingEntry(
            entry_id=f"ADJ-B{i:04d}",
            account="6100-bank-fees",
            amount=Decimal("-12.50"),
            source_ids=[f"B{i:04d}"],
            rationale="bench: bank fee never booked",
        ),
        preparer="agent:reconciler",
        requested_by="alice",
        idempotency_key=idempotency_key,
    )


def naive_policy_batch(request: PostEntryInput, workflow_id: str) -> PolicyBatch:
    """The naive gate's first activity's input (evaluate_policies): may ``request`` post?"""
    query = PolicyQuery(
        policy=POSTING_POLICY,
        input=posting_policy_input(request, "open"),
        subject=request.entry.entry_id,
        workflow_id=workflow_id,
    )
    return PolicyBatch(queries=[query])


def naive_audit_batch(
    request: PostEntryInput, workflow_id: str, run_id: str, i: int, decision_id: str | None
) -> AuditBatch:
    """The naive gate's last activity's input (record_audit): the ``i``-th posting's row."""
    event = AuditEvent(
        workflow_id=workflow_id,
        run_id=run_id,
        seq=f"wf/naive/{i}",
        actor=request.preparer,
        action="ledger.posted",
        detail={"entry_id": request.entry.entry_id, "naive": True},
        decision_id=decision_id,
    )
    return AuditBatch(events=[event])


@workflow.defn(name="BenchStepLoop")
class StepLoopWorkflow:
    @workflow.run
    async def run(self, inp: LoopInput) -> int:
        for i in range(inp.steps):
            if inp.mode == "bare":
                await workflow.execute_activity(
                    noop, NoopInput(step=i), start_to_close_timeout=NOOP_TIMEOUT
                )
            elif inp.mode == "local":
                await workflow.execute_local_activity(
                    noop, NoopInput(step=i), start_to_close_timeout=NOOP_TIMEOUT
                )
            elif inp.mode == "governed":
                await self._governed(inp, i)
            elif inp.mode == "plain":  # the same posting, no policy/kill switch/audit
                preset = PRESETS["connector"]
                await workflow.execute_activity_method(
                    PlainPosting.plain_post,
                    self._request(inp, i),
                    start_to_close_timeout=preset.start_to_close,
                    retry_policy=preset.retry,
                )
            else:
                await self._naive(inp, i)
        return inp.steps

    def _request(self, inp: LoopInput, i: int) -> PostEntryInput:
        key = f"{workflow.info().workflow_id}/post/{i}"
        return bank_fee_posting(inp.tenant, inp.period, i, key)

    async def _governed(self, inp: LoopInput, i: int) -> None:
        preset = PRESETS["connector"]
        outcome = await workflow.execute_activity_method(
            FinanceActivities.post_journal_entry,
            self._request(inp, i),
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
        )
        if outcome.decision.verdict != "allow":
            raise ApplicationError(f"bench entry not allowed: {outcome.decision.reasons}")

    async def _naive(self, inp: LoopInput, i: int) -> None:
        request = self._request(inp, i)
        info = workflow.info()
        policy = PRESETS["policy"]
        [decision] = await workflow.execute_activity_method(
            FinanceActivities.evaluate_policies,
            naive_policy_batch(request, info.workflow_id),
            start_to_close_timeout=policy.start_to_close,
            retry_policy=policy.retry,
        )
        if decision.verdict != "allow":
            raise ApplicationError(f"bench entry not allowed: {decision.reasons}")
        await workflow.execute_activity(
            noop, NoopInput(step=i, label="post"), start_to_close_timeout=NOOP_TIMEOUT
        )
        audit = PRESETS["audit"]
        await workflow.execute_activity_method(
            AuditActivities.record_audit,
            naive_audit_batch(request, info.workflow_id, info.run_id, i, decision.decision_id),
            start_to_close_timeout=audit.start_to_close,
            retry_policy=audit.retry,
        )


@workflow.defn(name="BenchBareClose")
class BareCloseWorkflow:
    @workflow.run
    async def run(self, inp: BareCloseInput) -> int:
        names = [*CLOSE_SHAPE[:6], *["post_journal_entry"] * inp.posts, *CLOSE_SHAPE[6:]]
        for n, name in enumerate(names):
            await workflow.execute_activity(
                noop,
                NoopInput(step=n, label=name),
                start_to_close_timeout=NOOP_TIMEOUT,
                summary=f"no-op standing in for {name}",
            )
        return len(names)
