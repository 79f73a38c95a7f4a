"""The errors Baton's clients raise on purpose (a process already started under its business key,
a refused approval, nothing pending), and the start under a business key that raises the first.
Their own module so every client (workflows/client.py, workflows/client_auction.py,
workflows/support_client.py) raises the same classes without importing each other;
workflows/client.py re-exports them.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from workflows.errors import BatonError

__all__ = [
    "ApprovalRefused",
    "BatonClientError",
    "NoPendingApproval",
    "ProcessAlreadyStarted",
    "start_keyed",
]


class BatonClientError(BatonError):
    """Base of the errors this client raises on purpose."""


class ProcessAlreadyStarted(BatonClientError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"a process with business key {workflow_id!r} is already running or has completed; "
            "pass join_existing=True (CLI: --join) to attach to a running one"
        )
        self.workflow_id = workflow_id


class ApprovalRefused(BatonClientError):
    """The workflow's validator refused a decision; ``reason`` says why. Nothing was recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"approval refused: {reason}")
        self.reason = reason


class NoPendingApproval(BatonClientError):
    pass


async def start_keyed(
    client: Client,
    run: Any,
    inp: Any,
    *,
    workflow_id: str,
    task_queue: str,
    join_existing: bool = False,
    **options: Any,
) -> WorkflowHandle[Any, Any]:
    """Start ``run`` under its business key ``workflow_id``: with ``join_existing`` a run under
    the key that is still running is returned instead; else it raises ProcessAlreadyStarted.
    ``options``: the rest of ``start_workflow`` (reuse policy, search attributes, memo, ...)."""
    try:
        return await client.start_workflow(
            run,
            inp,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=(
                WorkflowIDConflictPolicy.USE_EXISTING
                if join_existing
                else WorkflowIDConflictPolicy.FAIL
            ),
            **options,
        )
    except WorkflowAlreadyStartedError:
        raise ProcessAlreadyStarted(workflow_id) from None
