"""Refused approval Updates, written to the audit ledger.

Temporal keeps an Update its validator rejects out of the run's history (decision 5: invalid
decisions never enter history), so the workflow cannot record it the way it records a refused
Signal. This worker interceptor sees the validator's refusal on the live worker (validators do
not run on replay, and a rejected Update is never replayed) and hands one audit event to a sink
the worker owns, which writes it outside the workflow (activities/audit.py
:class:`RefusedUpdateWriter`). The event is keyed by the Update's id, so a client that retries
the same Update is written once.

Must not: touch workflow state or issue commands (the validator runs read-only); do I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.worker import (
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from workflows.contracts import APPROVAL_UPDATE, AuditEvent

#: The action of a refused decision's audit row (the same as a refused Signal's).
REFUSED_ACTION = "approval.refused"


def refused_update_event(input: HandleUpdateInput, err: BaseException) -> AuditEvent:
    """The audit row of an approval Update the validator refused: who it claims to be (only a
    claim), what it asked, when the workflow received it and why it was refused."""
    info = workflow.info()
    decision: Any = input.args[0] if input.args else None
    claimed = getattr(decision, "approver", None)
    detail: dict[str, Any] = {
        "request_id": getattr(decision, "request_id", None),
        "via": "update",
        "update_id": input.id,
        "verdict": getattr(decision, "verdict", None),
        "claimed_by": claimed,
        "received_at": workflow.now().isoformat(),
    }
    return AuditEvent(
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        seq=f"update/{input.id}/refused",
        actor="baton:workflow",
        action=REFUSED_ACTION,
        detail=detail,
        rationale=f"claimed by {claimed} (unverified): {err}"[:2000],
    )


class AuditRefusedUpdates(Interceptor):
    """Worker interceptor: an approval Update its validator refuses goes to ``sink`` (called on
    the workflow's thread; it must only hand the event over, thread-safely, and never raise)."""

    def __init__(self, sink: Callable[[AuditEvent], None]) -> None:
        self.sink = sink

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        sink = self.sink

        class _Inbound(WorkflowInboundInterceptor):
            def handle_update_validator(self, input: HandleUpdateInput) -> None:
                try:
                    super().handle_update_validator(input)
                except Exception as err:
                    if input.update == APPROVAL_UPDATE and not workflow.unsafe.is_replaying():
                        sink(refused_update_event(input, err))
                    raise

        return _Inbound


__all__ = ["AuditRefusedUpdates", "REFUSED_ACTION", "refused_update_event"]
