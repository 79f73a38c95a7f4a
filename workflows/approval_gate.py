"""The approval gate: pending approval requests, the checks on a decision, and the wait.

A decision arrives by Update (primary: the validator refuses bad decisions before they enter
history, and the caller hears why at once) or by Signal (for the stock `temporal` CLI and the
Web UI: a refused signal is recorded, never acted on). Both go through :meth:`ApprovalGate.check`.

A decision is bound to the digest of the exact action the approver reviewed; the approver must
be one of the request's eligible approvers, a list computed by policy from the directory when
the request was made (the validator cannot do I/O, so policy's answer travels with the request).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.contracts import ApprovalDecision, ApprovalRequest


class ApprovalGate:
    def __init__(self) -> None:
        self.requests: dict[str, ApprovalRequest] = {}
        self.decisions: dict[str, ApprovalDecision] = {}
        self.expired: set[str] = set()

    def open(self, request: ApprovalRequest) -> None:
        self.requests[request.request_id] = request

    def pending(self) -> list[ApprovalRequest]:
        return [
            r
            for rid, r in self.requests.items()
            if rid not in self.decisions and rid not in self.expired
        ]

    def check(self, decision: ApprovalDecision) -> str | None:
        """Why this decision must be refused, or None if it may be accepted."""
        request = self.requests.get(decision.request_id)
        if request is None:
            return f"unknown approval request {decision.request_id!r}"
        if decision.request_id in self.decisions:
            earlier = self.decisions[decision.request_id]
            return (
                f"approval request {decision.request_id!r} is already closed: "
                f"{earlier.verdict} by {earlier.approver}"
            )
        if decision.request_id in self.expired:
            return f"approval request {decision.request_id!r} expired before a decision"
        if decision.action_digest != request.action_digest:
            return (
                "action digest mismatch: the action changed since it was reviewed "
                f"(request digest {request.action_digest[:12]}..., "
                f"decision digest {decision.action_digest[:12]}...)"
            )
        if decision.approver == request.requested_by:
            return (
                f"segregation of duties: {decision.approver} requested this action "
                "and cannot decide on it"
            )
        if decision.approver not in request.eligible_approvers:
            return (
                f"{decision.approver} may not decide on this request: it needs one of the roles "
                f"{', '.join(request.approver_roles)} "
                f"(eligible: {', '.join(request.eligible_approvers) or 'nobody'})"
            )
        return None

    def accept(self, decision: ApprovalDecision) -> None:
        self.decisions[decision.request_id] = decision

    async def wait(self, request_id: str, sla: timedelta) -> ApprovalDecision | None:
        """Wait durably for a decision; None if the SLA passes first."""
        try:
            await workflow.wait_condition(lambda: request_id in self.decisions, timeout=sla)
        except TimeoutError:
            self.expired.add(request_id)
            return None
        return self.decisions[request_id]
