"""The support queue: ``SupportCoordinator`` (long-running, one per tenant) takes cases by
Update (or Signal) into a durable priority queue (P1 first, then arrival), runs at most
``max_parallel`` cases at a time as ``SupportCase`` child workflows (workflows/support.py), and
continues as new after ``continue_after`` cases (or when Temporal suggests it), carrying the queue
and the ids it has seen, so its history stays bounded. It asks no policy and acts on no system:
each case governs itself.
"""

from __future__ import annotations

import asyncio
import heapq

from temporalio import workflow

from workflows import visibility
from workflows.contracts.support import (
    ENQUEUE_CASE_SIGNAL,
    ENQUEUE_CASE_UPDATE,
    SUPPORT_STATUS_QUERY,
    SUPPORT_WORKFLOW,
    CoordinatorStatus,
    EnqueueAck,
    QueuedCase,
    SupportCase,
    SupportCaseInput,
    SupportCaseResult,
    SupportCoordinatorInput,
)

__all__ = ["PRIORITY_RANK", "SEEN_KEPT", "SupportCoordinatorWorkflow", "case_workflow_id"]

PRIORITY_RANK = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
#: Case ids a coordinator carries across continue-as-new to refuse duplicates (bounded input).
SEEN_KEPT = 5000


def case_workflow_id(case: SupportCase) -> str:
    return f"support-{case.tenant}-{case.case_id}"


@workflow.defn(name="SupportCoordinator")
class SupportCoordinatorWorkflow:
    @workflow.init
    def __init__(self, inp: SupportCoordinatorInput) -> None:
        self.inp = inp
        self.heap: list[tuple[int, int, str]] = []
        self.cases: dict[str, QueuedCase] = {}
        for q in inp.queue:
            self._push(q)
        self.seen: dict[str, None] = dict.fromkeys(
            [*inp.seen, *(q.case.case_id for q in inp.queue)]
        )
        self.next_seq = max([q.seq for q in inp.queue], default=0) + 1
        self.running: set[str] = set()
        self.done: dict[str, str] = dict(inp.done)
        self.handled = inp.handled
        self.started_here = 0

    def _push(self, q: QueuedCase) -> None:
        self.cases[q.case.case_id] = q
        heapq.heappush(self.heap, (PRIORITY_RANK[q.case.priority], q.seq, q.case.case_id))

    @workflow.run
    async def run(self, inp: SupportCoordinatorInput) -> None:
        workflow.upsert_search_attributes(
            [
                visibility.PROCESS.value_set("support_coordinator"),
                visibility.TENANT.value_set(inp.tenant),
            ]
        )
        while True:
            await workflow.wait_condition(
                lambda: (
                    (bool(self.heap) and len(self.running) < inp.max_parallel)
                    or self._time_to_continue()
                )
            )
            if self._time_to_continue():
                await workflow.wait_condition(
                    lambda: not self.running and workflow.all_handlers_finished()
                )
                queue = [self.cases[cid] for _, _, cid in sorted(self.heap)]
                workflow.continue_as_new(
                    inp.model_copy(
                        update={
                            "queue": queue,
                            "handled": self.handled,
                            # the latest ids, and the queued ones (carried with the queue)
                            "seen": list(self.seen)[-SEEN_KEPT:],
                            # the last results only: the input stays small
                            "done": dict(list(self.done.items())[-100:]),
                            "runs": inp.runs + 1,
                        }
                    )
                )
            _, _, case_id = heapq.heappop(self.heap)
            queued = self.cases.pop(case_id)
            self.running.add(case_id)
            self.started_here += 1
            asyncio.ensure_future(self._run_case(queued.case))

    def _time_to_continue(self) -> bool:
        return self.started_here >= self.inp.continue_after or (
            workflow.info().is_continue_as_new_suggested()
        )

    async def _run_case(self, case: SupportCase) -> None:
        try:
            result = await workflow.execute_child_workflow(
                SUPPORT_WORKFLOW,
                SupportCaseInput(
                    case=case,
                    requested_by=self.inp.requested_by,
                    budget=self.inp.budget,
                    sla_seconds=self.inp.sla_seconds.get(case.priority),
                    approval_timeout_seconds=self.inp.approval_timeout_seconds,
                ),
                id=case_workflow_id(case),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                result_type=SupportCaseResult,
            )
            self.done[case.case_id] = f"updated ({result.status}, {result.category})"
        except Exception as err:  # the case failed (denied, rejected ...): record, go on
            self.done[case.case_id] = f"failed: {err.cause if hasattr(err, 'cause') else err}"
        finally:
            self.running.discard(case.case_id)
            self.handled += 1

    @workflow.update(name=ENQUEUE_CASE_UPDATE)
    def enqueue_case(self, case: SupportCase) -> EnqueueAck:
        return self._enqueue(case)

    def _enqueue(self, case: SupportCase) -> EnqueueAck:
        self.seen[case.case_id] = None
        q = QueuedCase(case=case, enqueued_at=workflow.now(), seq=self.next_seq)
        self.next_seq += 1
        self._push(q)
        position = sorted(self.heap).index((PRIORITY_RANK[case.priority], q.seq, case.case_id))
        return EnqueueAck(
            case_id=case.case_id,
            accepted=True,
            position=position + 1,
            workflow_id=case_workflow_id(case),
        )

    @workflow.signal(name=ENQUEUE_CASE_SIGNAL)
    def enqueue_case_signal(self, case: SupportCase) -> None:
        """The same as the Update, for `temporal workflow signal` and the Web UI; a case the
        Update would refuse is dropped (the sender hears nothing: prefer the Update)."""
        try:
            self._validate_case(case)
        except ValueError as err:
            workflow.logger.warning("enqueue_case signal refused: %s", err)
            return
        self._enqueue(case)

    @enqueue_case.validator
    def _validate_case(self, case: SupportCase) -> None:
        if case.tenant != self.inp.tenant:
            raise ValueError(
                f"case {case.case_id} is for tenant {case.tenant!r}; this queue serves "
                f"{self.inp.tenant!r}"
            )
        if case.case_id in self.seen:
            raise ValueError(f"case {case.case_id} was already enqueued (case ids are unique)")

    @workflow.query(name=SUPPORT_STATUS_QUERY)
    def status(self) -> CoordinatorStatus:
        return CoordinatorStatus(
            queued=[cid for _, _, cid in sorted(self.heap)],
            running=sorted(self.running),
            done=self.done,
            handled=self.handled,
            runs=self.inp.runs,
        )
