"""Faults a production Baton survives, each followed by the invariant check (bench/invariants.py):
every run ends completed or compensated, no side effect applied twice, the audit chain verifies,
nothing stuck.

Covered here: a worker SIGKILLed mid-LLM-call, mid-posting and mid-compensation, then restarted;
the policy server unreachable (wait mode holds and recovers, deny mode fails closed); the database
unreachable for a while (PostgreSQL behind a cut proxy); the model endpoint misbehaving for a
sustained period; duplicate and out-of-order decisions; cancellation at each wait point.
The Temporal server killed and restarted on its persistent database mid-run is
tests/test_approvals.py::test_a_pending_approval_and_its_votes_survive_a_server_kill.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from baton.devstack.opa_server import OpaCompatibleServer
from baton.settings import REPO_ROOT
from bench import invariants
from tests.conftest import Harness, _harness
from tests.support.pg_lock import TableWriteLock
from tests.support.scripted_model import Fault, ScriptedModelServer
from tests.support.tcp_proxy import TcpProxy
from tests.test_approvals import current_details
from tests.test_operations import start_worker_process

pytestmark = pytest.mark.timeout(240)


def failure_type(err: WorkflowFailureError) -> str | None:
    return getattr(err.cause, "type", None)


async def assert_invariants(h: Harness, *workflow_ids: str) -> invariants.InvariantReport:
    report = await invariants.check(h.temporal, h.db, workflow_ids, timeout=60)
    assert report.ok, report.summary()
    return report


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (value := await _maybe_await(predicate())):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not seen within {timeout:g} s: {what}") from None
    return value


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def started_activity(handle: WorkflowHandle[Any, Any], activity_type: str) -> bool:
    """True while an attempt of ``activity_type`` runs on a worker."""
    desc = await handle.describe()
    return any(
        pa.activity_type.name == activity_type
        and pa.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pa in desc.raw_description.pending_activities
    )


#: the ledger table: postings and reversals wait while a TableWriteLock holds it
LEDGER = "journal_posting"


def actions(h: Harness, workflow_id: str) -> list[str]:
    return [r.action for r in h.runtime.ledger.trail(workflow_id)]


@pytest.fixture
async def pg_harness(
    temporal_client: Client, model_server: ScriptedModelServer, pg_database: str
) -> AsyncIterator[Harness]:
    async with _harness(temporal_client, model_server, pg_database) as h:
        yield h


def kill(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)


async def kill_inside_transaction(
    h: Harness,
    worker: subprocess.Popen[bytes],
    handle: WorkflowHandle[Any, Any],
    *,
    activity: str,
    table: str,
    act: Callable[[], Awaitable[Any]],
) -> subprocess.Popen[bytes]:
    """With ``table`` write-locked, ``act()`` (the decision that lets the run's ``activity``
    run), wait until the activity has started (it then waits for the lock inside its
    transaction), SIGKILL ``worker`` and release the lock: a new worker process, returned. The
    killed attempt times out (connector start-to-close, 30 s) and runs again on it."""
    with TableWriteLock(h.settings.database_url, table) as lock:
        await act()
        await wait_until(lambda: started_activity(handle, activity), 30, f"{activity} started")
        await asyncio.sleep(0.5)  # inside its transaction, waiting for the lock
        kill(worker)
        lock.release()
    return start_worker_process(h)


# -- workers SIGKILLed mid-step --------------------------------------------------------------


async def test_worker_killed_mid_llm_call_retries_the_call_on_restart(harness: Harness) -> None:
    h = harness
    # the first model call of this run (the reconciler) hangs: the worker dies while it waits
    h.model.script(Fault.delay(60), match=h.period)
    worker = start_worker_process(h)
    try:
        handle = await h.client.start_finance_close(h.start_input())
        await wait_until(lambda: h.model.attempts(match=h.period), 30, "the model call started")
        kill(worker)
        worker = start_worker_process(h)
        # the dead attempt stops heartbeating; Temporal retries it on the new worker (~20 s)
        status = await h.wait_for_pending(handle.id, timeout=90)
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        kill(worker)
    assert h.model.attempts("reconciler", match=h.period) == 2
    assert len(result.posted) == len(status.posted) + len(status.pending[0].entries)
    report = await assert_invariants(h, handle.id)
    assert report.completed == 1 and report.postings == len(result.posted)


async def test_worker_killed_mid_posting_posts_exactly_once(pg_harness: Harness) -> None:
    h = pg_harness
    worker = start_worker_process(h)
    try:
        handle, status = await h.start_close_until_pending(timeout=60)
        worker = await kill_inside_transaction(
            h,
            worker,
            handle,
            activity="post_journal_entry",
            table=LEDGER,
            act=lambda: h.client.approve(handle.id, approver="carol", rationale="ok"),
        )
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        kill(worker)
    assert len(result.posted) == len(status.posted) + len(status.pending[0].entries)
    report = await assert_invariants(h, handle.id)
    assert report.postings == len(result.posted) and report.reversals == 0


async def test_worker_killed_mid_compensation_reverses_exactly_once(
    pg_harness: Harness,
) -> None:
    h = pg_harness
    worker = start_worker_process(h)
    try:
        handle, status = await h.start_close_until_pending(timeout=60)
        assert status.posted
        worker = await kill_inside_transaction(
            h,
            worker,
            handle,
            activity="reverse_journal_entry",
            table=LEDGER,
            act=lambda: h.client.reject(handle.id, approver="carol", rationale="not this month"),
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 90)
    finally:
        kill(worker)
    assert failure_type(failed.value) == "ApprovalRejected"
    report = await assert_invariants(h, handle.id)
    assert report.compensated == 1
    assert report.reversals == report.postings == len(status.posted)


# -- dependencies unreachable ----------------------------------------------------------------


@dataclass
class PolicyOutage:
    server: OpaCompatibleServer
    proxy: TcpProxy


@pytest.fixture
async def policy_outage() -> AsyncIterator[PolicyOutage]:
    """A real OPA-REST-compatible server behind a proxy the test can cut."""
    server = OpaCompatibleServer(REPO_ROOT / "policy")
    port = server.start("127.0.0.1", 0)
    proxy = TcpProxy("127.0.0.1", port)
    proxy.start()
    try:
        yield PolicyOutage(server, proxy)
    finally:
        proxy.close()
        server.stop()


@pytest.fixture
async def waiting_harness(
    temporal_client: Client,
    model_server: ScriptedModelServer,
    database_url: str,
    policy_outage: PolicyOutage,
) -> AsyncIterator[Harness]:
    async with _harness(
        temporal_client,
        model_server,
        database_url,
        opa_url=f"http://127.0.0.1:{policy_outage.proxy.port}",
        policy_unavailable="wait",
    ) as h:
        yield h


async def test_policy_server_down_mid_run_holds_the_posting_then_recovers(
    waiting_harness: Harness, policy_outage: PolicyOutage
) -> None:
    h = waiting_harness
    async with h.worker():
        handle, status = await h.start_close_until_pending(timeout=60)
        policy_outage.proxy.cut()
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        # fail closed: the approved entry is not posted while no policy decision can be had
        await wait_until(lambda: "policy.waiting" in actions(h, handle.id), 30, "run waits")
        assert "Waiting for the policy engine" in await current_details(h, handle.id)
        posted_during_outage = invariants_postings(h, handle.id)
        await asyncio.sleep(2)
        assert invariants_postings(h, handle.id) == posted_during_outage == len(status.posted)
        policy_outage.proxy.restore()
        result = await asyncio.wait_for(handle.result(), 60)
    trail = actions(h, handle.id)
    assert "policy.unavailable" in trail and "policy.available" in trail
    assert trail.index("policy.waiting") < trail.index("policy.available")
    report = await assert_invariants(h, handle.id)
    assert report.completed == 1 and report.postings == len(result.posted)


def invariants_postings(h: Harness, workflow_id: str) -> int:
    from sqlmodel import select

    from activities.database import JournalPosting

    with h.db.read_session() as s:
        rows = s.exec(select(JournalPosting).where(JournalPosting.workflow_id == workflow_id))
        return len(rows.all())


async def test_policy_server_down_in_deny_mode_fails_closed_and_posts_nothing(
    temporal_client: Client,
    model_server: ScriptedModelServer,
    database_url: str,
    policy_outage: PolicyOutage,
) -> None:
    policy_outage.proxy.cut()
    async with _harness(
        temporal_client,
        model_server,
        database_url,
        opa_url=f"http://127.0.0.1:{policy_outage.proxy.port}",
    ) as h:
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(handle.result(), 60)
        assert "no model call without a policy decision" in str(failed.value.cause.cause)
        assert h.model.attempts(match=h.period) == 0  # nothing reached the model
        denies = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "policy.deny"]
        assert len(denies) == 3 and all(
            "policy engine unavailable" in r.detail_json for r in denies
        )
        report = await assert_invariants(h, handle.id)
        assert report.compensated == 1 and report.postings == 0


async def test_database_unreachable_for_a_while_loses_and_duplicates_nothing(
    temporal_client: Client, model_server: ScriptedModelServer, pg_database: str
) -> None:
    """PostgreSQL behind a proxy that is cut for 5 s while an approved posting and its audit
    rows are being written: activities fail, Temporal retries them, the run completes."""
    host_port, _, name = pg_database.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    proxy.start()
    url = pg_database.replace(host_port, f"127.0.0.1:{proxy.port}")
    try:
        async with _harness(temporal_client, model_server, url) as h:
            async with h.worker():
                handle, status = await h.start_close_until_pending(timeout=60)
                proxy.cut()
                await h.client.approve(handle.id, approver="carol", rationale="ok")
                await asyncio.sleep(5)
                proxy.restore()
                result = await asyncio.wait_for(handle.result(), 90)
            assert len(result.posted) == len(status.posted) + len(status.pending[0].entries)
            report = await assert_invariants(h, handle.id)
            assert report.postings == len(result.posted)
            assert actions(h, handle.id).count("approval.approved") == 1
    finally:
        proxy.close()


# -- the model endpoint misbehaving ----------------------------------------------------------


async def test_model_endpoint_flaky_for_a_while_then_fine_completes(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str
) -> None:
    # each agent's first two attempts fail differently; the third (its last) is answered
    async with _harness(temporal_client, model_server, database_url, llm_timeout_seconds=3.0) as h:
        h.model.script(
            Fault.status(429, retry_after=0.1), Fault.delay(8), match="agent: reconciler"
        )
        h.model.script(Fault.status(500), Fault.malformed(), match="agent: compliance_checker")
        h.model.script(Fault.status(503), Fault.disconnect(), match="agent: close_memo_writer")
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            await h.wait_for_pending(handle.id, timeout=90)
            await h.client.approve(handle.id, approver="carol", rationale="ok")
            await asyncio.wait_for(handle.result(), 60)
        assert h.model.pending_faults == []
        for agent in ("reconciler", "compliance_checker", "close_memo_writer"):
            assert h.model.attempts(agent, match=h.period) == 3, agent
        report = await assert_invariants(h, handle.id)
        assert report.completed == 1


async def test_model_endpoint_down_for_longer_than_the_retries_fails_cleanly(
    harness: Harness,
) -> None:
    h = harness
    # each of the 3 attempts tries the cheap model, its backup endpoint and the strong model
    # (the strong model's us endpoint is outside the tenant's residency): 9 requests, all 503
    h.model.script(*(Fault.status(503) for _ in range(9)), match=h.period)
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    assert "503" in str(failed.value.cause.cause)  # the provider error, not the residency deny
    assert h.model.attempts("reconciler", match=h.period) == 9
    report = await assert_invariants(h, handle.id)
    assert report.compensated == 1 and report.postings == 0


# -- duplicate and out-of-order decisions, cancellation at each wait point --------------------


async def test_duplicate_and_out_of_order_decisions_post_once(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, status = await h.start_close_until_pending()
        pending = status.pending[0]
        decision = {
            "request_id": pending.request_id,
            "approver": "carol",
            "verdict": "approve",
            "rationale": "ok",
            "action_digest": pending.action_digest,
        }
        stale = {**decision, "request_id": "req-from-an-older-round", "approver": "frank"}
        await handle.signal("submit_approval", stale)  # out of order: refused, audited
        await handle.signal("submit_approval", decision)
        await handle.signal("submit_approval", decision)  # duplicate
        ack = await h.client.approve(
            handle.id,
            approver="carol",
            rationale="ok",
            request_id=pending.request_id,
            action_digest=pending.action_digest,
        )
        result = await asyncio.wait_for(handle.result(), 30)
    assert ack.accepted and ack.duplicate
    trail = actions(h, handle.id)
    assert trail.count("approval.approved") == 1
    assert "approval.refused" in trail
    report = await assert_invariants(h, handle.id)
    assert report.postings == len(result.posted) == len(status.posted) + len(pending.entries)


@pytest.mark.parametrize("wait_point", ["model call", "approval", "policy engine"])
async def test_cancel_at_each_wait_point_compensates(
    waiting_harness: Harness, policy_outage: PolicyOutage, wait_point: str
) -> None:
    h = waiting_harness
    if wait_point == "model call":
        h.model.script(Fault.delay(30), match=h.period)
    try:
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            if wait_point == "model call":
                await wait_until(lambda: h.model.attempts(match=h.period), 30, "call started")
            else:
                await h.wait_for_pending(handle.id, timeout=60)
            if wait_point == "policy engine":
                policy_outage.proxy.cut()
                await h.client.approve(handle.id, approver="carol", rationale="ok")
                await wait_until(lambda: "policy.waiting" in actions(h, handle.id), 30, "waits")
            await h.client.cancel(handle.id)
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), 60)
    finally:
        h.model.reset()
    report = await assert_invariants(h, handle.id)
    assert report.compensated == 1 and report.reversals == report.postings
    assert actions(h, handle.id)[-1] == "close.cancelled"
