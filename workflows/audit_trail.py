"""The workflow's own audit events (approvals, refusals, outcomes), buffered and flushed.

Activities write their own audit rows next to their side effects; this buffer is for what only
the workflow knows. Sequence keys 'wf/<n>' are deterministic, so a replay or a retried flush
writes nothing twice.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows.contracts import AuditBatch, AuditEvent
from workflows.presets import PRESETS

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities


class AuditTrail:
    def __init__(self) -> None:
        self._next = 0
        self._buffer: list[AuditEvent] = []

    def record(
        self,
        actor: str,
        action: str,
        *,
        detail: dict[str, Any] | None = None,
        rationale: str = "",
        decision_id: str | None = None,
    ) -> None:
        info = workflow.info()
        self._next += 1
        self._buffer.append(
            AuditEvent(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                seq=f"wf/{self._next}",
                actor=actor,
                action=action,
                detail=detail or {},
                rationale=rationale,
                decision_id=decision_id,
            )
        )

    def take(self) -> list[AuditEvent]:
        """Hand the buffered events to an activity that writes them in its own transaction
        (e.g. a posting and the approval that authorises it). If that activity fails, give
        them back with :meth:`give_back` so a later flush still writes them."""
        batch, self._buffer = self._buffer, []
        return batch

    def give_back(self, events: list[AuditEvent]) -> None:
        """Events from :meth:`take` whose activity failed: they go first in the next flush (a
        key written already is not written twice)."""
        self._buffer[:0] = events

    async def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        await self.write(batch, f"audit: {', '.join(e.action for e in batch)}")

    @staticmethod
    async def write(events: list[AuditEvent], summary: str) -> None:
        """Write ``events`` in one audit activity (the audit preset: retried until it
        succeeds); ``summary``: its line in the Web UI."""
        preset = PRESETS["audit"]
        await workflow.execute_activity_method(
            AuditActivities.record_audit,
            AuditBatch(events=events),
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
            summary=summary[:200],
        )


__all__ = [
    "AuditTrail",
]
