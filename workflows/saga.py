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
                    break
                except asyncio.CancelledError:
                    if task.done():
                        break
                    workflow.logger.warning("cancel received while compensating; finishing")
                except Exception as err:  # keep undoing the rest; the failure is reported
                    workflow.logger.error(f"compensation failed: {description}: {err}")
                    self.failed.append(description)
                    break
        return self.compensated
