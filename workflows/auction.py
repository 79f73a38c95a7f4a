"""Auction: agent tiers bid on a task; an allocator awards it by one documented rule.

The award rule (``award``, a pure function, tested exhaustively in tests/test_auction_award.py):

1. A bid is **eligible** when it is for this task and round, its bidder has not failed this task
   in an earlier round (``excluded``), its bidder sent only one bid this round, and the bidder's
   capabilities include every capability the task requires. Every other bid is listed in
   ``Award.rejected`` with the reason.
2. Each eligible bid scores ``cost_weight * expected_cost_usd + latency_weight *
   expected_latency_seconds`` (``AwardRule``; defaults 1.0 per USD and 0.01 per second, i.e. a
   second of latency is worth a cent), rounded to 1e-9 so equal offers tie exactly.
3. The **lowest score wins**. Ties break deterministically, in this order: lower expected cost
   (to 1e-9 USD), then lower expected latency, then the bidder name (alphabetical). The result
   never depends on the order the bids arrived in.
4. No eligible bid: no winner (``Award.winner is None``).

The orchestration (``Auction.allocate``, workflow code):

* Bids are collected as activities, one per bidder, **in parallel**, each bounded by the bid
  deadline (its schedule-to-close timeout, so Temporal enforces it, retries included). A bidder
  that declines, misses the deadline, fails, or is stopped by the kill switch does not bid.
* Every bid, every non-bid and the award go to the audit trail (``auction.bid``,
  ``auction.no_bid``, ``auction.awarded``), flushed after each round.
* No eligible bid: the task is **escalated to a human** (``auction.escalated``, type
  ``AuctionNoBids``), never silently dropped.
* The award gate (``check``, e.g. a policy decision) is asked about each winner before it
  starts; a winner it refuses is excluded (``auction.award_refused``) and the same bids are
  awarded again without it: the next-ranked eligible bidder wins.
* The winner then does the work (``perform``). If that fails (its activity failed after its
  retries), the winner is excluded and the task is **re-auctioned** among the others, at most
  ``max_rounds`` auctions in all; then it is escalated (``AuctionAllWinnersFailed``).
* A cancellation while bids are outstanding cancels the bid activities, audits
  ``auction.cancelled`` with the bidders still out, and re-raises for the caller's saga.

Must not: do I/O itself (it is workflow code), or decide anything outside ``award``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Generic, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, TimeoutError, is_cancelled_exception

from workflows.audit_trail import AuditTrail
from workflows.kill_switch_gate import engaged
from workflows.presets import PRESETS

with workflow.unsafe.imports_passed_through():
    from activities.auction import AuctionActivities
    from workflows.contracts import PolicyDecision, TokenUsage
    from workflows.contracts_auction import (
        ALL_WINNERS_FAILED,
        NO_BIDS,
        AgentTier,
        AuctionTask,
        Award,
        AwardRule,
        Bid,
        BidRequest,
        BidResponse,
        ScoredBid,
        TaskAllocation,
    )

R = TypeVar("R")


def score(bid: Bid, rule: AwardRule) -> float:
    """The award rule's score of one bid (lower is better)."""
    seconds = bid.expected_latency_ms / 1000.0
    return round(rule.cost_weight * bid.expected_cost_usd + rule.latency_weight * seconds, 9)


def award(
    task: AuctionTask,
    bids: Iterable[Bid],
    rule: AwardRule,
    *,
    round: int = 1,
    excluded: Iterable[str] | Mapping[str, str] = (),
) -> Award:
    """Award ``task`` among ``bids`` by the rule in this module's docstring. Pure.

    ``excluded``: bidders that may not win (failed the task, or refused by the award policy);
    a mapping gives the reason recorded for each."""
    bids = list(bids)
    out = (
        dict(excluded)
        if isinstance(excluded, Mapping)
        else dict.fromkeys(excluded, "failed this task in an earlier round")
    )
    required = set(task.requires)
    count: dict[str, int] = {}
    for b in bids:
        count[b.bidder] = count.get(b.bidder, 0) + 1
    rejected: dict[str, str] = {}
    eligible: list[ScoredBid] = []
    for b in sorted(bids, key=lambda b: b.bidder):
        if count[b.bidder] > 1:
            reason = f"sent {count[b.bidder]} bids in round {round}; one is allowed"
        elif b.task_id != task.task_id:
            reason = f"bid for task {b.task_id!r}, not {task.task_id!r}"
        elif b.round != round:
            reason = f"bid for round {b.round}, not round {round}"
        elif b.bidder in out:
            reason = out[b.bidder]
        elif missing := sorted(required - set(b.capabilities)):
            reason = f"lacks capability {', '.join(missing)}"
        else:
            eligible.append(
                ScoredBid(
                    bidder=b.bidder,
                    score=score(b, rule),
                    expected_cost_usd=b.expected_cost_usd,
                    expected_latency_ms=b.expected_latency_ms,
                )
            )
            continue
        rejected[b.bidder] = reason
    eligible.sort(key=_rank_key)
    best = eligible[0] if eligible else None
    return Award(
        task_id=task.task_id,
        round=round,
        winner=best.bidder if best else None,
        score=best.score if best else None,
        ranked=eligible,
        rejected=rejected,
        rule=rule,
    )


def _rank_key(s: ScoredBid) -> tuple[float, float, float, str]:
    # costs to 1e-9 USD and latencies to 1e-6 ms, so float noise never breaks a tie
    return (s.score, round(s.expected_cost_usd, 9), round(s.expected_latency_ms, 6), s.bidder)


class Outcome(Generic[R]):
    """What ``allocate`` returns: the allocation record and, when reviewed, the work's result."""

    def __init__(self, allocation: TaskAllocation, result: R | None) -> None:
        self.allocation = allocation
        self.result = result


class Auction:
    """Runs auctions inside a workflow; one instance per workflow run."""

    def __init__(self, audit: AuditTrail, tenant: str) -> None:
        self.audit = audit
        self.tenant = tenant
        self.current_task: str | None = None
        self.current_round: int | None = None
        #: what asking for bids cost (each bid is an agent call)
        self.usage: list[TokenUsage] = []

    async def allocate(
        self,
        task: AuctionTask,
        bidders: Sequence[AgentTier],
        rule: AwardRule,
        *,
        deadline: timedelta,
        max_rounds: int,
        perform: Callable[[AgentTier], Awaitable[R]],
        check: Callable[[AgentTier, ScoredBid, int], Awaitable[PolicyDecision]] | None = None,
    ) -> Outcome[R]:
        """Auction ``task`` among ``bidders`` and have the winner ``perform`` it; re-auction
        without a winner that fails, at most ``max_rounds`` times; escalate when nobody can.

        ``check`` (the award gate) is asked about each winner before it starts; a winner it
        does not allow is excluded and the same round's bids are awarded again without it."""
        by_name = {t.name: t for t in bidders}
        failed: dict[str, str] = {}
        denied: dict[str, str] = {}
        awards: list[Award] = []
        try:
            for rnd in range(1, max_rounds + 1):
                self.current_task, self.current_round = task.task_id, rnd
                asked = [t for t in bidders if t.name not in failed and t.name not in denied]
                bids, no_bids = await self._collect(task, asked, rnd, deadline)
                while True:
                    excluded = {
                        **dict.fromkeys(failed, "failed this task in an earlier round"),
                        **{k: f"refused by the award policy: {v}" for k, v in denied.items()},
                    }
                    decision = award(task, bids, rule, round=rnd, excluded=excluded)
                    awards.append(decision)
                    self._record_award(decision, no_bids)
                    if decision.winner is None or check is None:
                        break
                    verdict = await check(by_name[decision.winner], decision.ranked[0], rnd)
                    if verdict.verdict == "allow":
                        break
                    denied[decision.winner] = "; ".join(verdict.reasons) or verdict.verdict
                    self.audit.record(
                        "baton:allocator",
                        "auction.award_refused",
                        detail={"task_id": task.task_id, "round": rnd, "winner": decision.winner},
                        rationale=f"the award policy said {verdict.verdict}: "
                        f"{denied[decision.winner]}; awarding to the next-ranked bidder",
                        decision_id=verdict.decision_id,
                    )
                await self.audit.flush()  # the round's bids and awards, before any work
                if decision.winner is None:
                    kind = ALL_WINNERS_FAILED if failed else NO_BIDS
                    why = (
                        f"no eligible bid in round {rnd}"
                        + (f" (failed winners: {', '.join(failed)})" if failed else "")
                        + ": "
                        + "; ".join(
                            f"{k}: {v}" for k, v in sorted({**no_bids, **decision.rejected}.items())
                        )
                    )
                    return self._escalate(task, awards, failed, denied, kind, why)
                winner = by_name[decision.winner]
                try:
                    result = await perform(winner)
                except ActivityError as err:
                    cause = err.cause or err
                    failed[winner.name] = getattr(cause, "message", None) or str(cause)
                    self.audit.record(
                        f"bidder:{winner.name}",
                        "auction.winner_failed",
                        detail={
                            "task_id": task.task_id,
                            "round": rnd,
                            "error": failed[winner.name],
                        },
                        rationale="re-auctioning among the other bidders"
                        if rnd < max_rounds
                        else f"no rounds left ({max_rounds} allowed)",
                    )
                    await self.audit.flush()
                    continue
                return Outcome(
                    TaskAllocation(
                        task_id=task.task_id,
                        status="reviewed",
                        winner=winner.name,
                        awards=awards,
                        failed_winners=failed,
                        denied=denied,
                    ),
                    result,
                )
            why = f"every winner failed within {max_rounds} rounds: " + "; ".join(
                f"{k}: {v}" for k, v in failed.items()
            )
            return self._escalate(task, awards, failed, denied, ALL_WINNERS_FAILED, why)
        finally:
            self.current_task = self.current_round = None

    async def _collect(
        self, task: AuctionTask, bidders: Sequence[AgentTier], rnd: int, deadline: timedelta
    ) -> tuple[list[Bid], dict[str, str]]:
        """Ask every bidder at once; a bid must arrive within ``deadline``. Returns the bids and,
        per bidder that did not bid, why."""
        preset = PRESETS["agent"]
        calls = [
            workflow.execute_activity_method(
                AuctionActivities.bid_on_task,
                BidRequest(tenant=self.tenant, round=rnd, bidder=tier, task=task),
                schedule_to_close_timeout=deadline,
                start_to_close_timeout=min(deadline, preset.start_to_close),
                heartbeat_timeout=preset.heartbeat,
                retry_policy=preset.retry,
                summary=f"bid: {tier.name} on {task.task_id} (round {rnd})",
            )
            for tier in bidders
        ]
        gathered = asyncio.gather(*calls, return_exceptions=True)
        try:
            answers: list[BidResponse | BaseException] = await gathered
        except asyncio.CancelledError:
            self.audit.record(
                "baton:workflow",
                "auction.cancelled",
                detail={
                    "task_id": task.task_id,
                    "round": rnd,
                    "bidders": [t.name for t in bidders],
                },
                rationale="the run was cancelled while bids were outstanding; bid activities "
                "were cancelled",
            )
            raise
        bids: list[Bid] = []
        no_bids: dict[str, str] = {}
        for tier, answer in zip(bidders, answers, strict=True):
            if isinstance(answer, BaseException):
                if is_cancelled_exception(answer) and not isinstance(answer, ActivityError):
                    raise answer
                no_bids[tier.name] = _no_bid_reason(answer, deadline)
            else:
                self.usage.append(answer.usage)
                if answer.bid is None:
                    no_bids[tier.name] = f"declined: {answer.declined}"
            if isinstance(answer, BaseException) or answer.bid is None:
                self.audit.record(
                    f"bidder:{tier.name}",
                    "auction.no_bid",
                    detail={"task_id": task.task_id, "round": rnd},
                    rationale=no_bids[tier.name],
                )
                continue
            bid = answer.bid
            bids.append(bid)
            self.audit.record(
                f"bidder:{tier.name}",
                "auction.bid",
                detail=bid.model_dump(mode="json"),
                rationale=bid.note,
            )
        return bids, no_bids

    def _record_award(self, decision: Award, no_bids: dict[str, str]) -> None:
        if decision.winner is None:
            return
        self.audit.record(
            "baton:allocator",
            "auction.awarded",
            detail={**decision.model_dump(mode="json"), "no_bids": no_bids},
            rationale=f"{decision.winner} has the lowest score {decision.score} "
            f"(cost weight {decision.rule.cost_weight}, latency weight "
            f"{decision.rule.latency_weight}/s) among {len(decision.ranked)} eligible bids",
        )

    def _escalate(
        self,
        task: AuctionTask,
        awards: list[Award],
        failed: dict[str, str],
        denied: dict[str, str],
        kind: str,
        why: str,
    ) -> Outcome[R]:
        self.audit.record(
            "baton:allocator",
            "auction.escalated",
            detail={
                "task_id": task.task_id,
                "type": kind,
                "rounds": len(awards),
                "failed_winners": failed,
                "refused_by_policy": denied,
                "last_award": awards[-1].model_dump(mode="json") if awards else None,
            },
            rationale=f"needs a human: {why}",
        )
        return Outcome(
            TaskAllocation(
                task_id=task.task_id,
                status="escalated",
                awards=awards,
                failed_winners=failed,
                denied=denied,
                reason=why,
                escalation_type=kind,
            ),
            None,
        )


def _no_bid_reason(err: BaseException, deadline: timedelta) -> str:
    stopped = engaged(err)
    if stopped is not None:
        return f"stopped by the kill switch ({stopped[0].scope}: {stopped[0].reason})"
    cause = err.cause if isinstance(err, ActivityError) else None
    if isinstance(cause, TimeoutError):
        return f"missed the bid deadline ({deadline.total_seconds():g} s)"
    message = getattr(cause, "message", None) or str(cause or err)
    return f"bid failed: {message}"


__all__ = [
    "Auction",
    "Outcome",
    "award",
    "score",
]
