"""Exceptions instead of aborts: an adjusting entry policy denies is held as an exception (never
posted; in the result, the memo, the Web UI's current details and `baton close exceptions`) and
the rest of the close goes on. Whether the period then closes is policy's call
(policy/finance/close_exceptions.rego): a small total closes, a larger one needs a
finance-controller's sign-off (rejected: the close fails safe and compensates), above the
maximum the close fails safe."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from temporalio.client import WorkflowFailureError

from activities.database import from_cents
from tests.conftest import Harness
from tests.support import golden
from tests.test_approvals import FEE, current_details, decision, script_entries
from tests.test_finance_close import actions, failure_type, net_by_entry, period_status, postings
from tests.test_operations import run_cli
from workflows.finance_close import FinanceCloseWorkflow

FORBIDDEN = "9999-crypto-wallet"


async def test_a_small_exception_is_listed_and_the_period_closes(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-X1", FORBIDDEN, "-250.00"))
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        result = await handle.result()
        details = await current_details(h, handle.id)
        listed = await run_cli(h, "close", "exceptions", handle.id)
        as_json = await run_cli(h, "close", "exceptions", handle.id, "--json")
        clean = await run_cli(h, "close", "exceptions", "no-such-close")

    [held] = result.exceptions
    assert (held.entry_id, held.account, held.amount) == ("ADJ-X1", FORBIDDEN, Decimal("-250.00"))
    assert any(f"account '{FORBIDDEN}' on entry ADJ-X1" in r for r in held.reasons)
    assert held.decision_id
    # the rest of the close went on: the fee posted, the period closed, no sign-off was asked
    assert [p.entry_id for p in result.posted] == ["ADJ-FEE"]
    assert {p.entry_id for p in postings(h)} == {"ADJ-FEE"}
    assert period_status(h) == "closed"
    assert result.approvals == []
    assert "Exceptions held" in result.memo and "ADJ-X1" in result.memo
    assert "1 open exceptions" in details and "ADJ-X1" in details and FORBIDDEN in details
    trail = actions(h, handle.id)
    assert "close.exceptions_held" in trail and trail[-1] == "close.completed"

    assert listed.returncode == 0, listed.stderr
    assert "1 exceptions (not posted), total 250.00" in listed.stdout
    assert "ADJ-X1  -250.00  9999-crypto-wallet" in listed.stdout
    assert as_json.returncode == 0, as_json.stderr
    [row] = json.loads(as_json.stdout)
    assert row["entry_id"] == "ADJ-X1" and row["decision_id"] == held.decision_id
    assert (
        clean.returncode != 0 and "no workflow or run with the id 'no-such-close'" in clean.stderr
    )


async def test_a_large_exception_needs_a_controller_sign_off(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-X2", FORBIDDEN, "-5000.00"))
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        status = await h.wait_for_pending(handle.id)
        [request] = status.pending
        assert request.action == "close_with_exceptions"
        assert request.total_amount == Decimal("5000.00")
        assert "finance-controller" in request.approver_roles
        assert "alice" not in request.eligible_approvers  # the requester does not sign off
        assert [e.entry_id for e in status.exceptions] == ["ADJ-X2"]
        assert [p.entry_id for p in status.posted] == ["ADJ-FEE"]
        assert period_status(h) == "open"
        # while it waits, a run id finds it too
        run_id = (await handle.describe()).run_id
        assert run_id is not None
        listed = await run_cli(h, "close", "exceptions", run_id)
        assert listed.returncode == 0, listed.stderr
        assert "(RUNNING): 1 exceptions (not posted), total 5000.00" in listed.stdout

        await h.client.approve(handle.id, approver="carol", rationale="wallet entry is bogus")
        result = await handle.result()
    assert [e.entry_id for e in result.exceptions] == ["ADJ-X2"]
    assert [(a.request.action, a.approvers) for a in result.approvals] == [
        ("close_with_exceptions", ["carol"])
    ]
    assert period_status(h) == "closed"
    assert {p.entry_id for p in postings(h)} == {"ADJ-FEE"}
    decided = [a for a in actions(h, handle.id) if a.startswith("approval.")]
    assert "approval.requested" in decided and "approval.approved" in decided


async def test_a_rejected_sign_off_fails_safe_and_compensates(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-X3", FORBIDDEN, "-5000.00"))
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await h.client.reject(handle.id, approver="carol", rationale="explain the wallet first")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        listed = await run_cli(h, "close", "exceptions", handle.id, "--json")
    assert failure_type(failed.value) == "ApprovalRejected"
    rows = postings(h)
    assert rows and all(net == 0 for net in net_by_entry(rows).values())  # the fee was reversed
    assert "ADJ-X3" not in {r.entry_id for r in rows}
    assert period_status(h) == "open"
    assert actions(h, handle.id)[-1] == "close.failed"
    # a failed close still says what it held
    assert listed.returncode == 0, listed.stderr
    assert [e["entry_id"] for e in json.loads(listed.stdout)] == ["ADJ-X3"]


async def test_exceptions_above_the_maximum_fail_the_close_safe(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-X4", "6900-suspense", "-5000000.00"))  # over the hard cap
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "PolicyDenied"
    assert "policy refuses to close" in str(failed.value.cause)
    assert "above the most a period may close with" in str(failed.value.cause)
    rows = postings(h)
    assert all(net == 0 for net in net_by_entry(rows).values())
    assert all(from_cents(r.amount_cents) != Decimal("-5000000.00") for r in rows)
    assert period_status(h) == "open"


GOLDEN = golden.GOLDEN / "finance_close_exceptions_signed_off.json"


async def test_a_recorded_close_with_exceptions_and_refused_signals_replays(
    harness: Harness,
) -> None:
    """A close recorded on this code: one entry held as an exception, a controller's sign-off,
    a refused and a malformed Signal written while it waited (the patches
    denied-entries-held-as-exceptions and decision-attempts-audited-while-waiting). A change
    that would break such runs in flight fails this replay. Regenerate with
    BATON_REGENERATE_GOLDEN=1."""
    h = harness
    if golden.regenerating():
        script_entries(h, FEE, ("ADJ-X5", FORBIDDEN, "-5000.00"))
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            [request] = (await h.wait_for_pending(handle.id)).pending
            raw = h.temporal.get_workflow_handle(handle.id)
            await raw.signal("submit_approval", {"request_id": request.request_id})
            await raw.signal(
                "submit_approval",
                decision(request, "erin"),  # no approver role
            )
            await asyncio.sleep(1.0)  # both written while it waits
            await h.client.approve(handle.id, approver="carol", rationale="golden")
            await handle.result()
        await golden.record(GOLDEN, handle)
    history = await golden.load_and_replay(GOLDEN, "golden-exceptions", FinanceCloseWorkflow)
    # both patches' markers are in it
    patches = {
        json.loads(p.data)["id"]
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        for p in e.marker_recorded_event_attributes.details["patch-data"].payloads
    }
    assert {"denied-entries-held-as-exceptions", "decision-attempts-audited-while-waiting"} <= (
        patches
    )
