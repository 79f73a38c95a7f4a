"""What the process tests do as approvers: build a decision on a pending request, and wait for
a run's first pending request (or the first of a later round); and a sample request for tests
without a run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from workflows.contracts import AdjustingEntry, ApprovalDecision, ApprovalRequest


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


def fee_request(
    entry_id: str, amount: Decimal | str, source_id: str, **overrides: Any
) -> ApprovalRequest:
    """Request "apr-1" of a finance close, asked by alice now, to post one bank-fee entry
    (``entry_id`` of ``amount``, from bank line ``source_id``); ``overrides``: any other field
    (``requirements``, ``approver_roles`` and ``eligible_approvers`` have no default)."""
    now = datetime.now(UTC)
    fee = AdjustingEntry(
        entry_id=entry_id,
        account="6100-bank-fees",
        amount=Decimal(amount),
        source_ids=[source_id],
        rationale="fee",
    )
    fields: dict[str, Any] = {
        "request_id": "apr-1",
        "process": "finance_close",
        "action": "post_journal_entries",
        "action_digest": "d" * 64,
        "summary": "s",
        "entries": [fee],
        "requested_by": "alice",
        "requested_at": now,
        "deadline": now,
    }
    return ApprovalRequest(**{**fields, **overrides})


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
