"""Document review allocation: a batch of document reviews, each auctioned among agent tiers.

For each task of the batch, in order:

1. the tiers bid (workflows/auction.py: one ``bid_on_task`` activity per tier, in parallel,
   within the bid deadline); the allocator awards the task to the lowest score among capable
   bidders (the rule is in workflows/auction.py);
2. the award gate asks policy (policy/auction/award.rego: the tier's clearance for the
   document's classification, the tenant's cost cap) before the winner starts; a refused winner
   is passed over for the next-ranked bidder;
3. the winner reviews the document on its own model (``review_document``, an agent step the
   kill switch can hold); if it fails, the task is re-auctioned without it (bounded rounds);
4. the review is published to the review register (``publish_review``), its retraction
   registered first (saga).

A task nobody can take (no eligible bid, or every winner failed) is escalated to a human: it is
listed in the result and the audit trail with the reason, and the other tasks go on.

A failure or a cancellation (also mid-auction: the outstanding bid activities are cancelled)
retracts every review published by this run, audits why, and fails the run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from workflows import visibility
from workflows.auction import Auction
from workflows.audit_trail import AuditTrail
from workflows.governed import Compensation, register_compensation
from workflows.kill_switch_gate import KillSwitchGate
from workflows.saga import Saga, unwind

with workflow.unsafe.imports_passed_through():
    from activities.auction import AWARD_POLICY, AuctionActivities
    from workflows.contracts import KILL_SWITCH_RELEASED_SIGNAL, PolicyDecision
    from workflows.contracts.auction import (
        AUCTION_STATUS_QUERY,
        DOCUMENT_REVIEW_PROCESS,
        DOCUMENT_REVIEW_WORKFLOW,
        AgentTier,
        AuctionStatus,
        AuctionTask,
        AwardCheckInput,
        DocumentReviewInput,
        DocumentReviewResult,
        PublishReviewInput,
        RetractReviewInput,
        ReviewInput,
        ReviewResult,
        ScoredBid,
        TaskAllocation,
    )


@workflow.defn(name=DOCUMENT_REVIEW_WORKFLOW)
class DocumentReviewWorkflow:
    @workflow.init
    def __init__(self, inp: DocumentReviewInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.kill_switch = KillSwitchGate(self.audit)
        self.auction = Auction(self.audit, inp.tenant)
        self.saga = Saga()
        self.allocations: list[TaskAllocation] = []
        self.reviews: list[ReviewResult] = []

    @workflow.run
    async def run(self, inp: DocumentReviewInput) -> DocumentReviewResult:
        workflow.upsert_search_attributes(
            [
                visibility.PROCESS.value_set(DOCUMENT_REVIEW_PROCESS),
                visibility.TENANT.value_set(inp.tenant),
                visibility.COST_USD.value_set(0.0),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "document_review.started",
            detail={
                "batch_id": inp.batch_id,
                "tasks": [t.task_id for t in inp.tasks],
                "tiers": [t.name for t in inp.tiers],
                "rule": inp.rule.model_dump(),
                "bid_deadline_seconds": inp.bid_deadline_seconds,
                "max_rounds": inp.max_rounds,
            },
        )
        try:
            for task in inp.tasks:
                await self._allocate(task)
        except (Exception, asyncio.CancelledError) as err:
            self.stage = "compensating"
            cancelled = await unwind(
                err, saga=self.saga, audit=self.audit, event="document_review", what="review"
            )
            self.stage = "cancelled" if cancelled else "failed"
            raise
        self.stage = "done"
        result = DocumentReviewResult(
            tenant=inp.tenant,
            batch_id=inp.batch_id,
            allocations=self.allocations,
            tokens=self._tokens(),
            cost_usd=self._cost(),
        )
        self.audit.record(
            "baton:workflow",
            "document_review.completed",
            detail={
                "reviewed": {a.task_id: a.winner for a in self.allocations if a.winner},
                "escalated": [a.task_id for a in result.escalated],
                "cost_usd": result.cost_usd,
            },
        )
        await self.audit.flush()
        return result

    async def _allocate(self, task: AuctionTask) -> None:
        self.stage = f"auctioning {task.task_id}"
        outcome = await self.auction.allocate(
            task,
            self.inp.tiers,
            self.inp.rule,
            deadline=timedelta(seconds=self.inp.bid_deadline_seconds),
            max_rounds=self.inp.max_rounds,
            perform=lambda tier: self._review(task, tier),
            check=lambda tier, bid, rnd: self._check_award(task, tier, bid, rnd),
        )
        allocation, review = outcome.allocation, outcome.result
        if review is not None:
            self.reviews.append(review)
            allocation.review = review
            await self._publish(task, review)
        self.allocations.append(allocation)
        workflow.upsert_search_attributes([visibility.COST_USD.value_set(self._cost())])
        await self.audit.flush()

    async def _check_award(
        self, task: AuctionTask, tier: AgentTier, bid: ScoredBid, rnd: int
    ) -> PolicyDecision:
        return await self.kill_switch.step(
            "policy",
            AuctionActivities.check_award,
            AwardCheckInput(
                tenant=self.inp.tenant,
                task=task,
                winner=tier,
                expected_cost_usd=bid.expected_cost_usd,
                round=rnd,
            ),
            f"policy {AWARD_POLICY}: {task.task_id} to {tier.name}?",
        )

    async def _review(self, task: AuctionTask, tier: AgentTier) -> ReviewResult:
        self.stage = f"{tier.name} reviewing {task.task_id}"
        return await self.kill_switch.step(
            "agent",
            AuctionActivities.review_document,
            ReviewInput(tenant=self.inp.tenant, tier=tier, task=task),
            f"document_reviewer@{tier.name} (LLM {tier.model}): {task.task_id}",
        )

    async def _publish(self, task: AuctionTask, review: ReviewResult) -> None:
        key = f"{workflow.info().workflow_id}/review/{task.task_id}"
        register_compensation(
            self.saga,
            self.kill_switch,
            Compensation(
                f"retract review of {task.task_id}",
                AuctionActivities.retract_review,
                RetractReviewInput(original_key=key, reason="the review batch was undone"),
                f"compensation: retract review of {task.task_id}",
            ),
        )
        await self.kill_switch.step(
            "connector",
            AuctionActivities.publish_review,
            PublishReviewInput(
                tenant=self.inp.tenant,
                batch_id=self.inp.batch_id,
                task_id=task.task_id,
                review=review,
                idempotency_key=key,
            ),
            f"review register: publish {task.task_id} ({review.verdict})",
        )

    def _tokens(self) -> int:
        usages = [*self.auction.usage, *(r.usage for r in self.reviews)]
        return sum(u.total_tokens for u in usages)

    def _cost(self) -> float:
        usages = [*self.auction.usage, *(r.usage for r in self.reviews)]
        # a float even when nothing was spent: a Double search attribute refuses an int 0
        return round(sum((u.cost_usd for u in usages), 0.0), 8)

    @workflow.signal(name=KILL_SWITCH_RELEASED_SIGNAL)
    def kill_switch_released(self) -> None:
        """Sent by `baton kill clear`: look again now instead of at the next poll."""
        self.kill_switch.release()

    @workflow.query(name=AUCTION_STATUS_QUERY)
    def status(self) -> AuctionStatus:
        return AuctionStatus(
            stage=self.stage,
            allocations=self.allocations,
            current_task=self.auction.current_task,
            current_round=self.auction.current_round,
            compensated=self.saga.compensated,
        )


__all__ = [
    "DocumentReviewWorkflow",
]
