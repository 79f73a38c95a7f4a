"""Driving a run to its end for the demo steps (baton/demo.py and each process's demo step in its
CLI module): approve every request the run asks for as the demo's approver, bounded in time. Its
own module so the CLI modules and the demo import it without importing each other.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from baton.settings import Settings
from workflows.client import BatonClient
from workflows.errors import BatonError

__all__ = [
    "DEMO_STEP_TIMEOUT",
    "PEOPLE_DECIDE",
    "DemoStepFailed",
    "approve_request",
    "finish_run",
]

#: seconds each process after the close may take before the demo gives up on it (the close:
#: at least 300 s); `baton demo --step-timeout` sets it (`make demo LLM=local`: real models on a
#: CPU take minutes per process)
DEMO_STEP_TIMEOUT = 120.0


class DemoStepFailed(BatonError):
    """A demo step did not end as it should; the message says what and where to look."""


async def approve_request(
    client: BatonClient,
    settings: Settings,
    workflow_id: str,
    request: Any,
    preferred: str,
    rationale: str,
) -> tuple[str, Any]:
    """Approve ``request`` as ``preferred`` if eligible, else as the first eligible approver who
    has not voted yet (with a dev-issuer token when approvals are signed); returns (who, ack)."""
    voted = {v.approver for v in request.approvals}
    who = next(
        (
            p
            for p in [preferred, *request.eligible_approvers]
            if p in request.eligible_approvers and p not in voted
        ),
        None,
    )
    if who is None:
        raise DemoStepFailed(
            f"nobody left to approve {request.request_id} on {workflow_id} "
            f"(roles {', '.join(request.approver_roles)})"
        )
    if client.approval_trust is not None:  # signed approvals: the dev issuer
        from baton.identity import issue_token

        client.approval_token = issue_token(
            settings.issuer_dir,
            user=who,
            roles=request.approver_roles,
            workflow_id=workflow_id,
            request_id=request.request_id,
            action_digest=request.action_digest,
        )
    ack = await client.approve(
        workflow_id,
        approver=who,
        request_id=request.request_id,
        action_digest=request.action_digest,
        rationale=rationale,
    )
    return who, ack


#: set by `baton demo --interactive`: the inbox URL; every step then waits for a person to decide
#: (in the approver inbox or with the CLI) instead of approving itself
PEOPLE_DECIDE: ContextVar[str | None] = ContextVar("people_decide", default=None)


async def finish_run(
    client: BatonClient,
    settings: Settings,
    workflow_id: str,
    *,
    approver: str,
    rationale: str,
    timeout: float | None = None,
) -> list[str]:
    """Wait (at most ``timeout`` seconds) until the run ``workflow_id`` is no longer running,
    approving every request it asks for on the way as ``approver`` (or another eligible one).

    Returns who approved what ("maya approved apr-..."). Raises DemoStepFailed when the run does
    not end in time; the caller reads the result (a failed run raises there)."""
    timeout = DEMO_STEP_TIMEOUT if timeout is None else timeout
    decided: set[str] = set()
    approvals: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = await client.execution_status(workflow_id)
        except RPCError as err:  # a queued case has no run yet
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            status = WorkflowExecutionStatus.RUNNING
        if status != WorkflowExecutionStatus.RUNNING:
            return approvals
        try:  # a query waits for a worker: bounded too
            pending = await asyncio.wait_for(client.pending_approvals(workflow_id), 5)
        except (RPCError, WorkflowQueryFailedError, TimeoutError):  # no run / no worker yet
            pending = []
        for request in pending:
            if request.request_id in decided:
                continue
            decided.add(request.request_id)
            if (inbox := PEOPLE_DECIDE.get()) is not None:
                from baton.inbox.app import request_path

                print(
                    f"   waiting for {', '.join(request.eligible_approvers)} to decide "
                    f"{request.request_id}: {inbox}{request_path(workflow_id, request.request_id)}",
                    flush=True,
                )
                deadline = max(deadline, time.monotonic() + 3600)  # people take their time
                approvals.append(f"{request.request_id} decided by a person")
                continue
            who, _ = await approve_request(
                client, settings, workflow_id, request, approver, rationale
            )
            approvals.append(f"{who} ({', '.join(request.approver_roles)}) approved")
        if time.monotonic() > deadline:
            raise DemoStepFailed(
                f"{workflow_id} did not finish within {timeout:.0f}s; "
                f"see {settings.workflow_url(workflow_id)}"
            )
        await asyncio.sleep(0.2)
