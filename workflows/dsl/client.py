"""Start and signal process-definition runs (the typed client side of the interpreter)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle

from workflows.dsl.interpreter import EVENT_SIGNAL, ProcessWorkflow
from workflows.dsl.model import (
    ProcessDefinition,
    ProcessEvent,
    ProcessRunInput,
    ProcessRunResult,
    bind_inputs,
)


async def start_process(
    client: Client,
    definition: ProcessDefinition,
    values: dict[str, Any],
    *,
    task_queue: str,
    workflow_id: str | None = None,
    source: str = "",
    requested_by: str | None = None,
) -> WorkflowHandle[ProcessWorkflow, ProcessRunResult]:
    """Start ``definition`` with ``values``; bad input raises ValueError before anything starts.
    The definition is stored in the run's input: the run keeps it whatever happens to the file."""
    bind_inputs(definition.input, values)  # fail fast, naming the field
    who = requested_by or str(values.get("requested_by") or "baton")
    return await client.start_workflow(
        ProcessWorkflow.run,
        ProcessRunInput(definition=definition, input=values, source=source, requested_by=who),
        id=workflow_id or f"{definition.name}-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        static_summary=f"{definition.name} v{definition.version}",
        memo={"definition": definition.name, "revision": definition.version, "source": source},
    )


async def send_event(client: Client, workflow_id: str, name: str, data: Any = None) -> None:
    """Deliver an event to a run's wait_event step (the ``dsl_event`` signal)."""
    await client.get_workflow_handle(workflow_id).signal(
        EVENT_SIGNAL, ProcessEvent(name=name, data=data)
    )


__all__ = [
    "send_event",
    "start_process",
]
