"""A worker interceptor that timestamps every activity (local ones too) in this process.

Per-step cost is read from these marks: the time between the starts of consecutive steps of
one workflow is everything one step costs (activity + completion + workflow task + scheduling
the next activity). The marks use ``time.perf_counter()``: the bench, its client and its worker
share one process, so client-side and worker-side times are comparable.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


@dataclass
class Mark:
    workflow_id: str
    activity_type: str
    started: float
    ended: float | None = None
    #: a post_journal_entry call that carries an approval grant
    approved: bool = False


class Recorder:
    def __init__(self) -> None:
        self.marks: list[Mark] = []
        self._waiters: list[tuple[Callable[[Mark, bool], bool], asyncio.Future[Mark]]] = []

    def clear(self) -> None:
        self.marks.clear()

    def starts(self, workflow_id: str, activity_type: str) -> list[float]:
        return sorted(
            m.started
            for m in self.marks
            if m.workflow_id == workflow_id and m.activity_type == activity_type
        )

    def by_workflow(self) -> dict[str, list[Mark]]:
        grouped: dict[str, list[Mark]] = defaultdict(list)
        for m in self.marks:
            grouped[m.workflow_id].append(m)
        return grouped

    def expect(self, match: Callable[[Mark, bool], bool]) -> asyncio.Future[Mark]:
        """A future resolved by the first activity start (ended=False) or end (ended=True)
        for which ``match(mark, ended)`` holds."""
        future: asyncio.Future[Mark] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, future))
        return future

    def _notify(self, mark: Mark, ended: bool) -> None:
        for entry in list(self._waiters):
            match, future = entry
            if future.done():
                self._waiters.remove(entry)
            elif match(mark, ended):
                future.set_result(mark)
                self._waiters.remove(entry)


class TimingInterceptor(Interceptor):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.recorder)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, recorder: Recorder) -> None:
        super().__init__(next)
        self.recorder = recorder

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        arg = input.args[0] if input.args else None
        mark = Mark(
            workflow_id=info.workflow_id or "",
            activity_type=info.activity_type,
            started=time.perf_counter(),
            approved=getattr(arg, "approval", None) is not None,
        )
        self.recorder.marks.append(mark)
        self.recorder._notify(mark, ended=False)
        try:
            return await super().execute_activity(input)
        finally:
            mark.ended = time.perf_counter()
            self.recorder._notify(mark, ended=True)
