"""The supervisor agent on the real dev server: injected failures (closes the policy denies, a
close left waiting for approval) make it alert through the notifier, ask policy, engage the
kill switch for the failing process, audit all of it, and not alert twice across
continue-as-new. Its Schedule keeps exactly one supervisor running."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from activities.database import NotificationOutbox
from activities.kill_switch import AUDIT_WORKFLOW_ID
from activities.supervisor import find_anomalies
from baton import kpi
from baton.cli_supervisor import ensure_schedule
from tests.conftest import Harness
from tests.support.scripted_model import Fault
from tests.test_kpi import BAD_PROPOSAL, another_period
from tests.test_operations import run_cli
from workflows.contracts.supervisor import (
    ProcessBaseline,
    SupervisorInput,
    SupervisorThresholds,
)
from workflows.supervisor import SupervisorWorkflow


def outbox(h: Harness) -> list[NotificationOutbox]:
    with h.db.read_session() as s:
        return list(s.exec(select(NotificationOutbox)).all())


async def until(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not (found := await asyncio.to_thread(check)):
            await asyncio.sleep(0.25)
        return found


async def test_injected_failures_alert_and_trip_the_kill_switch(harness: Harness) -> None:
    h = harness
    failing = [another_period(h) for _ in range(3)]
    for period in failing:
        h.model.script(Fault.reconciled(BAD_PROPOSAL), match=period)
    supervisor_id = f"supervisor-{uuid.uuid4().hex[:8]}"
    async with h.worker():
        for period in failing:  # injected failures: the policy denies each close's posting
            handle = await h.client.start_finance_close(h.start_input(period=period))
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        waiting = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(waiting.id)

        sup = await h.temporal.start_workflow(
            SupervisorWorkflow.run,
            SupervisorInput(
                task_queue=h.client.task_queue,
                interval_seconds=0.5,
                checks_per_run=2,
                thresholds=SupervisorThresholds(error_rate_max=0.2, approvals_pending_max=0),
            ),
            id=supervisor_id,
            task_queue=h.client.task_queue,
        )
        first_run = sup.result_run_id

        def engaged() -> list[str]:
            return [
                s.scope for s in h.runtime.switch.active() if s.engaged_by == "agent:supervisor"
            ]

        assert await until(engaged) == ["process:finance_close"]

        def checked_runs() -> set[str]:
            rows = h.runtime.ledger.trail(supervisor_id)
            return {r.run_id for r in rows if r.action == "supervisor.checked"}

        # it continued as new (2 checks per run) and kept checking
        await until(lambda: len(checked_runs()) >= 2)
        assert first_run in checked_runs()
        await until(lambda: len(checked_runs()) >= 3 or None, timeout=30)
        await sup.terminate("test over")
        await h.client.client.get_workflow_handle(waiting.id).terminate("test over")

    trail = h.runtime.ledger.trail(supervisor_id)
    alerted = [json.loads(r.detail_json) for r in trail if r.action == "supervisor.alerted"]
    # one alert per anomaly, not again after continue-as-new
    assert sorted(a["anomaly"]["key"] for a in alerted) == [
        "approval_backlog/finance_close",
        "error_rate/finance_close",
    ]
    by_kind = {a["anomaly"]["kind"]: a for a in alerted}
    assert by_kind["error_rate"]["anomaly"]["value"] == 1.0  # 3 of 3 closed runs failed
    assert by_kind["error_rate"]["acted"]["action"] == "kill_switch.engaged"
    assert by_kind["approval_backlog"]["acted"]["action"] == "none"  # policy: for people
    assert by_kind["approval_backlog"]["acted"]["verdict"] == "deny"

    verdicts = sorted(r.action for r in trail if r.actor == "policy:baton/supervisor/actions")
    assert verdicts == ["policy.allow", "policy.deny"]
    assert any(r.action == "kill_switch.engaged" for r in h.runtime.ledger.trail(AUDIT_WORKFLOW_ID))
    notes = [n for n in outbox(h) if n.kind == "supervisor.alert"]
    assert sorted(n.request_id for n in notes) == sorted(a["anomaly"]["key"] for a in alerted)
    assert all(n.roles == ["operations"] for n in notes)
    assert h.runtime.ledger.verify().ok


def test_anomalies_against_thresholds_and_baselines() -> None:
    from datetime import UTC, datetime

    def row(errors: int, runs: int, cost: float) -> kpi.KpiRow:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        done = WorkflowExecutionStatus.COMPLETED
        failed = WorkflowExecutionStatus.FAILED
        fake_runs = [
            kpi.Run(f"w{i}", "r", "finance_close", "all", "acme", failed if i < errors else done,
                    start, start + timedelta(seconds=10), cost_usd=cost)
            for i in range(runs)
        ]  # fmt: skip
        return kpi.compute(fake_runs)[0]

    t = SupervisorThresholds(error_rate_max=0.5, spike_factor=2.0, min_runs=3)
    calm = row(errors=1, runs=10, cost=0.01)
    found, baselines = find_anomalies([calm], {}, t, {})
    assert found == [] and baselines["finance_close"].error_rate == 0.1
    spiky = row(errors=3, runs=10, cost=0.05)  # 30 %: under the limit, 3x the baseline
    found, kept = find_anomalies([spiky], baselines, t, {})
    assert sorted(a.kind for a in found) == ["cost_spike", "error_rate_spike"]
    assert kept["finance_close"] == baselines["finance_close"]  # a spike is not the new normal
    few = row(errors=2, runs=2, cost=0.01)
    assert find_anomalies([few], {}, t, {})[0] == []  # too few runs to judge a rate
    found, _ = find_anomalies([], {}, t, {"finance_close": (1, 5 * 3600.0)})
    assert [a.kind for a in found] == ["approval_sla"]
    assert ProcessBaseline().error_rate == 0.0


async def test_the_schedule_keeps_one_supervisor_running(harness: Harness) -> None:
    h = harness
    inp = SupervisorInput(task_queue=h.client.task_queue, interval_seconds=60)
    async with h.worker():
        handle = await ensure_schedule(h.temporal, inp, task_queue=h.client.task_queue)
        try:
            query = (
                f"WorkflowType='BatonSupervisor' AND TaskQueue='{h.client.task_queue}' "
                "AND ExecutionStatus='Running'"
            )

            async def running() -> list[str]:
                return [w.id async for w in h.temporal.list_workflows(query)]

            async with asyncio.timeout(30):
                while not (ids := await running()):
                    await asyncio.sleep(0.25)
            await handle.trigger()  # while one runs: skipped
            await asyncio.sleep(1.0)
            assert len(await running()) == 1 and ids == await running()
            # ensure_schedule again updates the same schedule instead of failing
            again = await ensure_schedule(h.temporal, inp, task_queue=h.client.task_queue)
            assert again.id == handle.id
        finally:
            await handle.delete()
            for wid in await running():
                await h.temporal.get_workflow_handle(wid).terminate("test over")


async def test_supervisor_start_refuses_a_bad_config_naming_the_field(
    harness: Harness, tmp_path: Path
) -> None:
    config = tmp_path / "supervisor.json"
    config.write_text(json.dumps({"thresholds": {"error_rate_max": 5}}))
    done = await run_cli(harness, "supervisor", "start", "--config", str(config))
    assert done.returncode == 2
    assert "thresholds.error_rate_max" in done.stderr and "less than or equal to 1" in done.stderr
