"""What the process tests do as approvers: build a decision on a pending request, and wait for
a run's first pending request (or the first of a later round)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from workflows.contracts import ApprovalDecision, ApprovalRequest


def decision(request: ApprovalRequest, approver: str, **overrides: Any) -> ApprovalDecision:
    """``approver`` approves ``request`` ("<approver> checked it"); ``overrides``: any other
    field (verdict, rationale, amendments, ...)."""
    return ApprovalDecision.model_validate(
        {
            "request_id": request.request_id,
            "approver": approver,
            "verdict": "approve",
            "rationale": f"{approver} checked it",
            "action_digest": request.action_digest,
            **overrides,
        }
    )


async def first_pending(status: Callable[[], Awaitable[Any]], timeout: float) -> ApprovalRequest:
    """The first pending request of the status ``status()`` answers, once there is one."""
    async with asyncio.timeout(timeout):
        while True:
            found = await status()
            if found.pending:
                return found.pending[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)


async def pending_approvals(
    h: Any, workflow_id: str, count: int = 1, timeout: float = 30
) -> list[ApprovalRequest]:
    """The requests pending in ``workflow_id`` (through the harness's client), once there are
    ``count`` of them."""
    async with asyncio.timeout(timeout):
        while True:
            found: list[ApprovalRequest] = await h.client.pending_approvals(workflow_id)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)


async def request_of_round(client: Any, workflow_id: str, round_: int) -> ApprovalRequest:
    """The close's first pending request (through ``client``, a BatonClient), once it is of
    round ``round_`` (a new round follows an amendment or requested changes)."""
    async with asyncio.timeout(30):
        while True:
            pending: list[ApprovalRequest] = (await client.status(workflow_id)).pending
            if pending and pending[0].round == round_:
                return pending[0]
            await asyncio.sleep(0.1)
