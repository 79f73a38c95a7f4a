"""Saga: compensations registered before each action, run in reverse when the process fails.

Register the compensation BEFORE running the action: if the worker dies after the side effect
but before the workflow records success, the compensation is already known. Compensations must
be idempotent and a no-op when their action never happened (see reverse_journal_entry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

from workflows import telemetry
from workflows.audit_trail import AuditTrail


class Saga:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.compensated: list[str] = []
        self.failed: list[str] = []

    def add(self, description: str, compensation: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append((description, compensation))

    def __len__(self) -> int:
        return len(self._steps)

    async def compensate(self) -> list[str]:
        """Run every registered compensation, newest first, each to completion.

        Each runs in its own task behind ``asyncio.shield``: a cancellation that arrives while
        compensating (the run was cancelled during an approval wait, say) must not stop a
        reversal halfway.
        """
        while self._steps:
            description, compensation = self._steps.pop()
            task = asyncio.ensure_future(compensation())
            while True:
                try:
                    await asyncio.shield(task)
                    self.compensated.append(description)
                    telemetry.compensation_ran(ok=True)
                    break
                except asyncio.CancelledError:
                    if task.done():
                        break
                    workflow.logger.warning("cancel received while compensating; finishing")
                except Exception as err:  # keep undoing the rest; the failure is reported
                    workflow.logger.error(f"compensation failed: {description}: {err}")
                    self.failed.append(description)
                    telemetry.compensation_ran(ok=False)
                    break
        return self.compensated


async def unwind(
    err: BaseException,
    *,
    saga: Saga,
    audit: AuditTrail,
    event: str,
    what: str,
    withdraw: Callable[[str], None] | None = None,
    before_flush: Callable[[], Awaitable[Any]] | None = None,
    failed_event: str | None = None,
) -> bool:
    """What every process does when it fails or is cancelled, before re-raising: withdraw its
    pending approval requests (``withdraw``, e.g. ``ApprovalGate.withdraw``), run the saga's
    compensations, audit ``<event>.cancelled`` or ``<event>.failed`` with what was undone, then
    write the audit trail (after ``before_flush``, e.g. persisting a blackboard), shielded from
    the cancellation (``failed_event`` names both outcomes' event instead, for a process that
    audited them as one). ``what`` names the process in the withdrawal reason ("the close was
    cancelled"). Returns whether it was a cancellation."""
    cancelled = is_cancelled_exception(err)
    if withdraw is not None:
        withdraw(f"the {what} was cancelled" if cancelled else f"the {what} failed: {err}")
    undone = await saga.compensate()
    audit.record(
        "baton:workflow",
        failed_event or (f"{event}.cancelled" if cancelled else f"{event}.failed"),
        detail={
            "error": str(err) or type(err).__name__,
            "compensated": undone,
            "compensation_failures": saga.failed,
        },
    )
    if before_flush is not None:
        await asyncio.shield(asyncio.ensure_future(before_flush()))
    await asyncio.shield(asyncio.ensure_future(audit.flush()))
    return cancelled


__all__ = [
    "Saga",
    "unwind",
]
