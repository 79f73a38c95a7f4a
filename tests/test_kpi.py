"""`baton kpi` on real runs: four finance closes on the dev server (approved, rejected with
compensations, denied by policy, approved again) and every KPI checked against what visibility
and the audit ledger say about those runs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from activities import audit_facts
from activities.seed import seed_period
from baton import kpi
from tests.conftest import Harness, _years
from tests.support.failures import expect_failure
from tests.support.scripted_model import Fault
from tests.test_operations import run_cli

# Denied, and too large to close the period with as an exception (policy/finance/
# close_exceptions.rego: above max_total the close fails safe), so the run fails as before.
BAD_PROPOSAL = {
    "entries": [
        {
            "entry_id": "ADJ-X1",
            "account": "9999-crypto-wallet",
            "amount": "-2000000.00",
            "source_ids": ["B0001"],
            "rationale": "move cash to a wallet",
        }
    ]
}


async def approve_all(h: Harness, workflow_id: str) -> None:
    status = await h.wait_for_pending(workflow_id)
    request = status.pending[0]
    await h.client.approve(
        workflow_id, approver="carol", rationale="ok", action_digest=request.action_digest
    )


async def closed_runs(h: Harness, count: int) -> list[kpi.Run]:
    """The test's runs once visibility lists all of them closed."""
    query = kpi.runs_query(
        datetime.now(UTC) - timedelta(hours=1), "finance_close", h.client.task_queue
    )
    async with asyncio.timeout(20):
        while True:
            runs = await kpi.gather(h.temporal, h.db, query)
            if len(runs) == count and all(
                r.status != WorkflowExecutionStatus.RUNNING for r in runs
            ):
                return runs
            await asyncio.sleep(0.2)


def another_period(h: Harness) -> str:
    """A period of its own (the session's year counter: business keys stay unique), seeded."""
    period = f"{next(_years):04d}-10"
    seed_period(h.db, h.tenant, period)
    return period


def a_denied_period(h: Harness) -> str:
    """``another_period`` whose reconciler proposes ``BAD_PROPOSAL``: policy denies the posting
    and it is too large to close the period with as an exception, so the close fails safe."""
    period = another_period(h)
    h.model.script(Fault.reconciled(BAD_PROPOSAL), match=period)
    return period


async def test_kpis_of_real_runs_match_visibility_and_the_ledger(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    rejected_period = another_period(h)
    denied_period = a_denied_period(h)
    last_period = another_period(h)
    async with h.worker():
        first = await h.client.start_finance_close(h.start_input())
        await approve_all(h, first.id)
        await first.result()

        rejected = await h.client.start_finance_close(h.start_input(period=rejected_period))
        await h.wait_for_pending(rejected.id)
        await h.client.reject(rejected.id, approver="carol", rationale="not yet")
        await expect_failure(rejected)

        denied = await h.client.start_finance_close(h.start_input(period=denied_period))
        await expect_failure(denied)

        last = await h.client.start_finance_close(h.start_input(period=last_period))
        await approve_all(h, last.id)
        await last.result()

    runs = await closed_runs(h, 4)
    by_id = {r.workflow_id: r for r in runs}
    [row] = kpi.compute(runs)
    assert (row.process, row.version, row.runs, row.completed, row.failed) == (
        "finance_close", "stable", 4, 2, 2,
    )  # fmt: skip
    assert row.completion_rate == 0.5 and row.error_rate == 0.5
    assert row.running == 0 and row.cancelled == 0

    # cycle time: the two completed runs, as visibility timed them
    cycles = sorted(by_id[w.id].cycle_seconds or 0 for w in (first, last))
    assert row.cycle_time_p50_s == pytest.approx(sum(cycles) / 2, abs=1e-3)
    assert row.cycle_time_p95_s == pytest.approx(
        cycles[0] + 0.95 * (cycles[1] - cycles[0]), abs=1e-3
    )

    # the ledger's view of each run
    trails = {w: h.runtime.ledger.trail(w) for w in by_id}
    asked = [w for w, t in trails.items() if any(r.action == "approval.requested" for r in t)]
    assert sorted(asked) == sorted([first.id, rejected.id, last.id])  # the deny never asked
    assert row.human_escalation_rate == 0.75
    assert row.sla_escalations == 0
    compensated = [w for w, t in trails.items() if any(r.action == "ledger.reversed" for r in t)]
    assert compensated == [rejected.id]
    assert row.compensation_rate == 0.25

    usages = [
        u
        for t in trails.values()
        for r in t
        if (u := audit_facts.agent_usage(r.actor, r.action, r.model, r.tokens, r.cost_usd))
    ]
    assert row.tokens_per_txn == pytest.approx(sum(u.tokens for u in usages) / 4, abs=0.01)
    assert row.cost_usd_per_txn == pytest.approx(sum(u.cost_usd for u in usages) / 4, abs=1e-8)
    assert row.cost_usd_per_txn > 0

    waits = sorted(w for r in runs for w in r.approval_waits)
    assert len(waits) == 3 and all(w > 0 for w in waits)
    assert row.approval_wait_p50_s == pytest.approx(waits[1], abs=1e-3)

    # MTTD: how long each failed run ran; MTTR: until the next completed close of the tenant
    failed = [by_id[rejected.id], by_id[denied.id]]
    assert row.mttd_s == pytest.approx(sum(r.cycle_seconds or 0 for r in failed) / 2, abs=1e-3)
    recovered_at = by_id[last.id].closed
    assert recovered_at is not None
    mttr = sum((recovered_at - r.closed).total_seconds() for r in failed if r.closed) / 2
    assert row.mttr_s == pytest.approx(mttr, abs=1e-3) and row.unrecovered == 0

    table = kpi.render([row], "table")
    assert "finance_close" in table and "50.0" in table and "MTTR" in table.splitlines()[0]
    csv_text = kpi.render([row], "csv")
    assert csv_text.splitlines()[0].startswith("process,version,runs,")

    # the CLI prints the same report and writes the charts
    charts = tmp_path / "charts"
    done = await run_cli(
        h, "kpi", "--since", "1h", "--process", "finance_close",
        "--task-queue", h.client.task_queue, "--format", "json", "--plot", str(charts),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [printed] = json.loads(done.stdout)
    assert printed["runs"] == 4 and printed["mttr_s"] == row.mttr_s
    assert printed["cost_usd_per_txn"] == row.cost_usd_per_txn
    pngs = sorted(p.name for p in charts.iterdir())
    assert pngs == sorted(name for name, _, _ in kpi.CHARTS)
    assert all((charts / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


async def test_kpi_refuses_bad_input_naming_the_option(harness: Harness) -> None:
    bad = await run_cli(harness, "kpi", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    bad = await run_cli(harness, "kpi", "--format", "xml")
    assert bad.returncode == 2 and "--format: expected one of table, json, csv" in bad.stderr
    bad = await run_cli(harness, "kpi", "--process", "x' OR 1=1")
    assert bad.returncode == 2 and "--process" in bad.stderr


def test_percentile_and_since() -> None:
    assert kpi.percentile([], 50) is None
    assert kpi.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert kpi.percentile([10.0], 95) == 10.0
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert kpi.parse_since("24h", now) == now - timedelta(hours=24)
    assert kpi.parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
