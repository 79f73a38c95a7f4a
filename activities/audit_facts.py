"""What one audit row says to an operator: an agent call's usage, a policy verdict, a
compensation, an approval step. The one reading of the ledger shared by the worker's metrics
(activities/metrics.py) and the KPI report (baton/kpi.py), so both count the same things.

Tokens and cost are read from the agent call's own audit row (``tokens``, ``cost_usd``, written
with the spend record of activities/spend.py in one transaction). :func:`agent_usage` is the only
place that reads them: when per-call accounting moves (model router), change it there.

Pure functions over plain values: no I/O, safe to import anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

AGENT_ACTOR = "agent:"
POLICY_ACTOR = "policy:"

#: Rows written by a compensation (the saga undoing a side effect).
COMPENSATION_ACTIONS = frozenset({"ledger.reversed", "idp.revoked", "period.reopened"})
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_ESCALATED = "approval.escalated"
#: Rows that close an approval request, and the outcome each names.
APPROVAL_CLOSED = {
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.amended": "amended",
    "approval.changes_requested": "changes_requested",
    "approval.expired": "expired",
    "approval.withdrawn": "withdrawn",
}


@dataclass(frozen=True)
class AgentUsage:
    """What one agent call used."""

    agent: str
    model: str
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class PolicyVerdict:
    policy: str
    verdict: str  # allow | deny | require_approval


def agent_usage(
    actor: str, action: str, model: str | None, tokens: int, cost_usd: float
) -> AgentUsage | None:
    """The usage of an agent call, read from its audit row; None for any other row."""
    if not actor.startswith(AGENT_ACTOR) or not action.startswith("agent."):
        return None
    return AgentUsage(
        agent=actor.removeprefix(AGENT_ACTOR),
        model=model or "unknown",
        tokens=int(tokens or 0),
        cost_usd=float(cost_usd or 0.0),
    )


def policy_verdict(actor: str, action: str) -> PolicyVerdict | None:
    """The verdict of a policy decision row; None for any other row."""
    if not actor.startswith(POLICY_ACTOR) or not action.startswith("policy."):
        return None
    return PolicyVerdict(policy=actor.removeprefix(POLICY_ACTOR), verdict=action[len("policy.") :])


def is_compensation(action: str) -> bool:
    return action in COMPENSATION_ACTIONS


__all__ = [
    "AGENT_ACTOR",
    "APPROVAL_CLOSED",
    "APPROVAL_ESCALATED",
    "APPROVAL_REQUESTED",
    "AgentUsage",
    "COMPENSATION_ACTIONS",
    "POLICY_ACTOR",
    "PolicyVerdict",
    "agent_usage",
    "is_compensation",
    "policy_verdict",
]
