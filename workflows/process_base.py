"""What every governed process workflow shares: the approval handlers (Update with validator,
and the same decision by Signal), the kill-switch release signal, the pending-approvals query
and the step runner. A process sets ``self.gate`` (ApprovalGate) and ``self.kill_switch``
(KillSwitchGate) in its ``__init__`` and inherits these; the names are the ones a stock
`temporal` CLI user types (workflows/contracts.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow

from workflows import visibility
from workflows.approval_gate import ApprovalGate
from workflows.contracts import (
    APPROVAL_SIGNAL,
    APPROVAL_UPDATE,
    KILL_SWITCH_RELEASED_SIGNAL,
    PENDING_APPROVALS_QUERY,
    ApprovalAck,
    ApprovalDecision,
    ApprovalRequest,
    TokenUsage,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.presets import ActivityKind

R = TypeVar("R")


class RunCost:
    """What a run's model calls cost so far, mirrored into its ``BatonTokens`` and
    ``BatonCostUsd`` search attributes.

    A routed call (activities/router.py) reports the run's totals as the database charged them:
    every request of every attempt, a failed attempt's too, so the run's figures match the
    charges exactly. A call that is not routed adds what its answer cost."""

    def __init__(self) -> None:
        self._routed_tokens = 0
        self._routed_cost = 0.0
        self._direct_tokens = 0
        self._direct_cost = 0.0

    @property
    def tokens(self) -> int:
        return self._routed_tokens + self._direct_tokens

    @property
    def cost_usd(self) -> float:
        return round(self._routed_cost + self._direct_cost, 8)

    def add(self, usage: TokenUsage) -> None:
        if usage.run_tokens is not None and usage.run_cost_usd is not None:
            # parallel calls finish in any order: the largest total read is the latest
            self._routed_tokens = max(self._routed_tokens, usage.run_tokens)
            self._routed_cost = max(self._routed_cost, usage.run_cost_usd)
        else:
            self._direct_tokens += usage.total_tokens
            self._direct_cost = round(self._direct_cost + usage.cost_usd, 8)
        workflow.upsert_search_attributes(
            [
                visibility.COST_USD.value_set(self.cost_usd),
                visibility.TOKENS.value_set(self.tokens),
            ]
        )


class GovernedProcess:
    gate: ApprovalGate
    kill_switch: KillSwitchGate

    @workflow.update(name=APPROVAL_UPDATE)
    async def decide_approval(self, decision: ApprovalDecision) -> ApprovalAck:
        return self.gate.accept(decision, via="update")

    @decide_approval.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        self.gate.validate(decision)

    @workflow.signal(name=APPROVAL_SIGNAL)
    def submit_approval(self, decision: ApprovalDecision) -> None:
        self.gate.receive_signal(decision)

    @workflow.signal(name=KILL_SWITCH_RELEASED_SIGNAL)
    def kill_switch_released(self) -> None:
        """Sent by `baton kill clear`: look again now instead of at the next poll."""
        self.kill_switch.release()

    @workflow.query(name=PENDING_APPROVALS_QUERY)
    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.gate.pending()

    async def _step(
        self,
        kind: ActivityKind,
        activity: Callable[[Any, Any], Awaitable[R]],
        arg: Any,
        summary: str,
    ) -> R:
        """One activity with its kind's preset, holding for the kill switch / policy engine."""
        return await self.kill_switch.step(kind, activity, arg, summary)
