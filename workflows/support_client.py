"""Typed client of the customer-support escalation (workflows/support.py).

support = SupportClient(baton_client)
await support.start_queue(SupportCoordinatorInput(tenant="acme"))
ack = await support.enqueue(case)              # Update: accepted/refused at once
await support.case_result(ack.workflow_id)     # SupportCaseResult
"""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from workflows.client import BatonClient, BatonClientError
from workflows.contracts.support import (
    ENQUEUE_CASE_UPDATE,
    SUPPORT_STATUS_QUERY,
    CoordinatorStatus,
    EnqueueAck,
    SupportCase,
    SupportCaseInput,
    SupportCaseResult,
    SupportCoordinatorInput,
)
from workflows.support import SupportCaseWorkflow, SupportCoordinatorWorkflow, case_workflow_id


class CaseRefused(BatonClientError):
    """The queue refused a case (duplicate id, another tenant's case)."""


def queue_workflow_id(tenant: str, name: str = "main") -> str:
    return f"support-queue-{tenant}-{name}"


class SupportClient:
    def __init__(self, baton: BatonClient) -> None:
        self.baton = baton
        self.client = baton.client

    async def start_queue(
        self, inp: SupportCoordinatorInput
    ) -> WorkflowHandle[SupportCoordinatorWorkflow, None]:
        """Start the tenant's queue coordinator, or attach to the running one."""
        return await self.client.start_workflow(
            SupportCoordinatorWorkflow.run,
            inp,
            id=queue_workflow_id(inp.tenant, inp.name),
            task_queue=self.baton.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def enqueue(
        self, case: SupportCase, *, queue: str = "main", tenant: str | None = None
    ) -> EnqueueAck:
        """Put ``case`` on the queue ``queue`` of its tenant (or of ``tenant``: the queue
        refuses another tenant's case)."""
        handle = self.client.get_workflow_handle(queue_workflow_id(tenant or case.tenant, queue))
        try:
            ack = await handle.execute_update(ENQUEUE_CASE_UPDATE, case, result_type=EnqueueAck)
            assert isinstance(ack, EnqueueAck)
            return ack
        except WorkflowUpdateFailedError as err:
            raise CaseRefused(getattr(err.cause, "message", None) or str(err.cause)) from err

    async def queue_status(self, tenant: str, queue: str = "main") -> CoordinatorStatus:
        handle = self.client.get_workflow_handle(queue_workflow_id(tenant, queue))
        return await handle.query(SUPPORT_STATUS_QUERY, result_type=CoordinatorStatus)

    async def start_case(
        self, inp: SupportCaseInput
    ) -> WorkflowHandle[SupportCaseWorkflow, SupportCaseResult]:
        """Run one case without the queue (the coordinator starts the same workflow)."""
        return await self.client.start_workflow(
            SupportCaseWorkflow.run,
            inp,
            id=case_workflow_id(inp.case),
            task_queue=self.baton.task_queue,
        )

    async def case_status(self, workflow_id: str) -> dict[str, Any]:
        handle = self.client.get_workflow_handle(workflow_id)
        return await handle.query(SUPPORT_STATUS_QUERY, result_type=dict)

    async def case_result(self, workflow_id: str) -> SupportCaseResult:
        handle = self.client.get_workflow_handle(workflow_id, result_type=SupportCaseResult)
        return await handle.result()


__all__ = [
    "CaseRefused",
    "SupportClient",
    "queue_workflow_id",
]
