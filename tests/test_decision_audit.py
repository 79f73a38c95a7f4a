"""Every decision attempt is in the audit ledger while the run still waits: a forged token, an
unauthorised approver, a payload that is not a decision at all (sent with the raw Temporal
client), each with the workflow's time at receipt and what was wrong. The run still completes
after a valid approval."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from tests.conftest import Harness
from tests.support import approvals
from tests.test_signed_approvals import carol_token, trusted_and_forger
from workflows.contracts import ApprovalDecision

WITHIN_SECONDS = 5.0


async def refusals_in_ledger(h: Harness, workflow_id: str, count: int) -> list[Any]:
    """The run's approval.refused rows once there are ``count`` of them (fails after 5 s)."""
    deadline = time.monotonic() + WITHIN_SECONDS
    while True:
        rows = [r for r in h.runtime.ledger.trail(workflow_id) if r.action == "approval.refused"]
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, (
            f"{len(rows)} of {count} refused attempts in the ledger after {WITHIN_SECONDS} s"
        )
        await asyncio.sleep(0.1)


def received_at(row: Any) -> datetime:
    return datetime.fromisoformat(json.loads(row.detail_json)["received_at"])


async def test_refused_and_malformed_signals_are_audited_while_the_run_waits(
    harness: Harness,
) -> None:
    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        raw = h.temporal.get_workflow_handle(handle.id)  # the plain Temporal client

        sent = datetime.now().astimezone()
        await raw.signal(
            "submit_approval",
            # erin is an accountant: no approver role
            approvals.decision(request, "erin", rationale="looks fine to me"),
        )
        await raw.signal("submit_approval", "approve it, please")  # JSON, but not a decision
        await raw.signal(
            "submit_approval",
            {"request_id": 42, "approver": "carol", "verdict": "yes", "action_digest": "x"},
        )
        rows = await refusals_in_ledger(h, handle.id, 3)
        # still waiting: nothing else wrote them
        status = await h.client.status(handle.id)
        assert status.approval_state == "pending"
        assert [r.action for r in h.runtime.ledger.trail(handle.id)][-1] == "approval.refused"

        erin, words, typed = rows
        assert (erin.rationale or "").startswith("claimed by erin (unverified): ")
        assert "erin may not decide" in (erin.rationale or "")
        assert "malformed approval signal" in (words.rationale or "")
        assert "payload: Input should be a valid dictionary" in (words.rationale or "")
        detail = json.loads(typed.detail_json)
        assert detail["malformed"] is True and detail["claimed_by"] == "carol"
        assert "request_id: Input should be a valid string" in (typed.rationale or "")
        assert "verdict: Input should be 'approve'" in (typed.rationale or "")
        assert "rationale: Field required" in (typed.rationale or "")
        for row in rows:
            # the workflow's time when the signal arrived (not when the row was written)
            at = received_at(row)
            assert sent - timedelta(seconds=2) <= at <= datetime.now().astimezone()
            assert at <= row.recorded_at.replace(tzinfo=at.tzinfo) + timedelta(seconds=1)
            assert row.actor == "baton:workflow"

        await h.client.approve(handle.id, approver="carol", rationale="checked vs bank")
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.approvals[0].approvers == ["carol"]
    trail = h.runtime.ledger.trail(handle.id)
    assert trail[-1].action == "close.completed"
    assert sum(r.action == "approval.refused" for r in trail) == 3  # written once each
    assert h.runtime.ledger.verify().ok


async def test_a_forged_token_is_audited_while_the_run_waits(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    dev, forger = trusted_and_forger(h, tmp_path)
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()

        def decision(directory: Path) -> ApprovalDecision:
            token = carol_token(directory, handle.id, request)
            return approvals.decision(request, "carol", rationale="ok", assertion=token)

        await h.temporal.get_workflow_handle(handle.id).signal(
            "submit_approval", decision(forger.directory)
        )
        [forged] = await refusals_in_ledger(h, handle.id, 1)
        assert "signed approval refused" in (forged.rationale or "")
        assert "unknown key id" in (forged.rationale or "")
        assert received_at(forged)
        assert (await h.client.status(handle.id)).approval_state == "pending"

        ack = await h.client.decide(handle.id, decision(dev.directory))
        assert ack.accepted
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.approvals[0].approvers == ["carol"]


async def test_a_vote_that_still_needs_others_is_audited_while_the_run_waits(
    harness: Harness,
) -> None:
    """An N-of-M request: the first vote is accepted but decides nothing yet; it is in the
    ledger before the second approver acts."""
    from tests.test_approvals import script_entries

    h = harness
    script_entries(h, ("ADJ-CFO", "6900-suspense", "-60000.00"))  # a controller and a cfo
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await h.client.approve(handle.id, approver="carol", rationale="first of two")
        deadline = time.monotonic() + WITHIN_SECONDS
        while not any(r.action == "approval.vote" for r in h.runtime.ledger.trail(handle.id)):
            assert time.monotonic() < deadline, "the first vote is not in the ledger"
            await asyncio.sleep(0.1)
        await h.client.approve(handle.id, approver="dave", rationale="second of two")
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert sorted(result.approvals[0].approvers) == ["carol", "dave"]
    votes = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "approval.vote"]
    assert [v.actor for v in votes] == ["carol", "dave"]


async def settled_history(handle: Any) -> list[Any]:
    """The run's history once it is idle: no workflow task scheduled or running, and the same
    length twice in a row (a pending request is visible before the task that asked for it has
    completed and started its timers)."""
    busy = {
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    }
    last: list[Any] = []
    for _ in range(100):
        events = list((await handle.fetch_history()).events)
        if events and events[-1].event_type not in busy and len(events) == len(last):
            return events
        last = events
        await asyncio.sleep(0.2)
    raise AssertionError(f"the run's history did not settle: {len(last)} events")


async def test_a_refused_update_is_audited_though_it_never_enters_history(
    harness: Harness,
) -> None:
    """The caller hears the refusal at once and the run's history does not grow (decision 5);
    the worker writes the refusal to the ledger, with the workflow's time at receipt."""
    import pytest

    from workflows.client import ApprovalRefused

    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        events_before = len(await settled_history(handle))
        bad = approvals.decision(request, "alice", rationale="my own close is fine")  # requester
        with pytest.raises(ApprovalRefused, match="segregation of duties"):
            await h.client.decide(handle.id, bad)
        [row] = await refusals_in_ledger(h, handle.id, 1)
        detail = json.loads(row.detail_json)
        assert detail["via"] == "update" and detail["claimed_by"] == "alice"
        assert (row.rationale or "").startswith("claimed by alice (unverified): ")
        assert "segregation of duties" in (row.rationale or "")
        assert received_at(row) <= datetime.now().astimezone()
        after = await settled_history(handle)
        assert len(after) == events_before
        assert not [e for e in after if "UPDATE" in EventType.Name(e.event_type)]

        await h.client.approve(handle.id, approver="carol", rationale="checked vs bank")
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.approvals[0].approvers == ["carol"]
    assert h.runtime.ledger.verify().ok


async def test_a_flood_of_refused_updates_is_summarised(harness: Harness) -> None:
    from activities.audit import REFUSED_UPDATE_AUDIT_LIMIT, RefusedUpdateWriter
    from workflows.contracts import AuditEvent

    h = harness
    writer = RefusedUpdateWriter(h.runtime.ledger, asyncio.get_running_loop())
    wid = f"flood-{h.period}"

    def refused(i: int) -> AuditEvent:
        return AuditEvent(
            workflow_id=wid,
            run_id="r1",
            seq=f"update/u{i}/refused",
            actor="baton:workflow",
            action="approval.refused",
            detail={"via": "update", "received_at": f"2026-12-07T10:00:{i:02d}+00:00"},
            rationale="claimed by mallory (unverified): mallory may not decide",
        )

    for i in range(REFUSED_UPDATE_AUDIT_LIMIT + 30):
        await asyncio.to_thread(writer.submit, refused(i))  # from another thread, as a workflow
    await asyncio.sleep(0.2)
    await writer.drain()
    trail = h.runtime.ledger.trail(wid)
    one_by_one = [r for r in trail if r.action == "approval.refused"]
    assert len(one_by_one) == REFUSED_UPDATE_AUDIT_LIMIT
    assert "rate limit" in json.loads(one_by_one[-1].detail_json)["further_refusals"]
    [summary] = [json.loads(r.detail_json) for r in trail if r.action != "approval.refused"]
    assert summary["count"] == 30 and summary["refused_so_far"] == REFUSED_UPDATE_AUDIT_LIMIT + 30
    assert summary["top_reasons"][0]["count"] == 30
    assert h.runtime.ledger.verify().ok
