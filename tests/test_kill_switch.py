"""The kill switch: engaged and cleared from the CLI with a reason, effective within seconds, runs
hold at their next gate (or, with --cancel, are cancelled and compensate), compensations never
stop, everything audited."""

from __future__ import annotations

import asyncio
import time

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from activities.audit import AuditLedger
from activities.database import Database
from activities.kill_switch import KillSwitch, KillSwitchError, Subject, parse_scope
from tests.conftest import Harness
from tests.test_approvals import FEE, posted, script_entries
from tests.test_finance_close import actions, failure_type, net_by_entry, postings
from tests.test_operations import run_cli
from workflows import visibility


@pytest.fixture
def switch(database_url: str) -> KillSwitch:
    db = Database(database_url)
    db.create_tables()
    return KillSwitch(db, AuditLedger(db), ttl_seconds=0.2)


def test_scopes_are_parsed_or_refused_with_the_expected_forms() -> None:
    assert parse_scope("global") == ("global", "")
    assert parse_scope("tenant:acme") == ("tenant", "acme")
    assert parse_scope("agent:reconciler") == ("agent", "reconciler")
    for bad in ["", "tenant", "tenant:", "planet:mars", "global:x"]:
        with pytest.raises(KillSwitchError, match="expected 'global', 'process:<name>'"):
            parse_scope(bad)


def test_engage_match_clear_and_audit(switch: KillSwitch) -> None:
    acme = Subject(process="finance_close", agent="reconciler", tenant="acme")
    globex = Subject(process="finance_close", agent="reconciler", tenant="globex")
    with pytest.raises(KillSwitchError, match="reason"):
        switch.engage("tenant:acme", reason=" ", by="ops")
    state = switch.engage("tenant:acme", reason="bank feed corrupted", by="ops")
    assert switch.engage("tenant:acme", reason="again", by="bob") == state  # idempotent
    assert switch.blocking(acme) == state and switch.blocking(globex) is None
    switch.engage("agent:compliance_checker", reason="prompt regression", by="ops")
    assert switch.blocking(Subject(agent="compliance_checker", tenant="globex")) is not None
    assert [s.scope for s in switch.active()] == ["tenant:acme", "agent:compliance_checker"]

    assert switch.clear("tenant:acme", reason="feed fixed", by="ops") is not None
    assert switch.clear("tenant:acme", reason="twice", by="ops") is None
    assert switch.blocking(acme) is None
    trail = switch.ledger.trail("baton:kill-switch")
    assert [(r.action, r.actor, r.rationale) for r in trail] == [
        ("kill_switch.engaged", "ops", "bank feed corrupted"),
        ("kill_switch.engaged", "ops", "prompt regression"),
        ("kill_switch.cleared", "ops", "feed fixed"),
    ]
    assert switch.ledger.verify().ok


def test_another_workers_cache_sees_a_change_within_its_ttl(switch: KillSwitch) -> None:
    other_worker = KillSwitch(switch.db, switch.ledger, ttl_seconds=0.2)
    subject = Subject(process="finance_close", tenant="acme")
    assert other_worker.blocking(subject) is None  # cached: not engaged
    switch.engage("global", reason="incident 42", by="ops")
    deadline = time.monotonic() + 2
    while other_worker.blocking(subject) is None:
        assert time.monotonic() < deadline, "the other worker never saw the switch"
        time.sleep(0.05)


async def wait_until_held(h: Harness, workflow_id: str) -> None:
    async with asyncio.timeout(30):
        while (await h.client.status(workflow_id)).held_by is None:
            await asyncio.sleep(0.1)


# agent:reconciler stops the posting too: the reconciler agent prepared the entries
@pytest.mark.parametrize("scope", ["process:finance_close", "agent:reconciler"])
async def test_running_close_holds_at_the_posting_until_cleared_from_the_cli(
    harness: Harness, scope: str
) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        engaged = await run_cli(
            h, "kill", "set", "--scope", scope, "--reason", "ledger migration", "--by", "ops",
        )  # fmt: skip
        assert engaged.returncode == 0, engaged.stderr
        assert "engaged (hold)" in engaged.stdout
        await h.client.approve(
            handle.id, approver="carol", rationale="ok", action_digest=request.action_digest
        )
        await wait_until_held(h, handle.id)  # the approved posting waits for the switch
        status = await h.client.status(handle.id)
        assert status.held_by is not None and status.held_by.reason == "ledger migration"
        assert "ADJ-MID" not in posted(h)
        attrs = (await handle.describe()).typed_search_attributes
        assert attrs.get(visibility.HELD) is True

        listed = await run_cli(h, "kill", "list")
        assert scope in listed.stdout and "ledger migration" in listed.stdout
        cleared_at = time.monotonic()
        cleared = await run_cli(
            h, "kill", "clear", "--scope", scope, "--reason", "done", "--by", "ops",
        )  # fmt: skip
        assert cleared.returncode == 0, cleared.stderr
        assert "1 held run(s) told to look again" in cleared.stdout
        result = await handle.result()
        # resumed by the signal, not by the 30 s poll
        assert time.monotonic() - cleared_at < 15

    assert "ADJ-MID" in posted(h) and len(result.posted) == 2
    trail = actions(h, handle.id)
    assert trail.index("kill_switch.held") < trail.index("kill_switch.released")
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(visibility.HELD) is False


async def test_agent_scope_holds_the_run_before_that_agent_calls_the_model(
    harness: Harness,
) -> None:
    h = harness
    switch = KillSwitch(h.db, h.runtime.ledger)
    switch.engage("agent:compliance_checker", reason="bad prompt shipped", by="ops")
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await wait_until_held(h, handle.id)
        status = await h.client.status(handle.id)
        assert status.stage == "reviewing" and status.held_by is not None
        assert status.held_by.scope == "agent:compliance_checker"
        assert h.model.attempts(agent="compliance_checker", match=h.period) == 0
        switch.clear("agent:compliance_checker", reason="prompt rolled back", by="ops")
        assert handle.id in await h.client.release_held()
        request = (await h.wait_for_pending(handle.id)).pending[0]
        await h.client.approve(
            handle.id, approver="carol", rationale="ok", action_digest=request.action_digest
        )
        await handle.result()
    assert h.model.attempts(agent="compliance_checker", match=h.period) == 1


async def test_cancel_mode_cancels_running_runs_and_stops_new_ones(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        status = await h.wait_for_pending(handle.id)
        assert status.posted  # small entries were posted before the approval
        engaged = await run_cli(
            h, "kill", "set", "--scope", f"tenant:{h.tenant}", "--reason", "fraud suspected",
            "--by", "ops", "--cancel",
        )  # fmt: skip
        assert engaged.returncode == 0, engaged.stderr
        assert handle.id in engaged.stdout and "engaged (cancel)" in engaged.stdout
        with pytest.raises(WorkflowFailureError) as cancelled:
            await handle.result()
        assert isinstance(cancelled.value.cause, CancelledError)
        # compensations are never stopped by the switch: every posting was reversed
        assert all(net == 0 for net in net_by_entry(postings(h)).values())

        # a run started while the switch is engaged fails at its first gate, having done nothing
        later_period = f"{h.period[:4]}-09"
        from activities.seed import seed_period

        seed_period(h.db, h.tenant, later_period)
        later = await h.client.start_finance_close(h.start_input(period=later_period))
        with pytest.raises(WorkflowFailureError) as stopped:
            await later.result()
    assert failure_type(stopped.value) == "KillSwitchCancelled"
    assert not [p for p in postings(h) if p.period == later_period]
    assert "kill_switch.held" in actions(h, later.id)
