"""Canaries: a candidate version of the finance close (a reworded reconciler prompt, or a model
route) gets a configured share of new runs, sticky per business key and recorded in the run's
input, search attribute and memo; the monitor compares its KPIs with the baseline's and rolls it
back when it is worse beyond the margins.

The local rule-based model server ignores prompt wording, so both versions behave alike unless a
test makes the candidate worse: the scripted model server answers every request carrying a
phrase only the v2 prompt has with malformed output, so candidate runs fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.agents import COMPLIANCE_PROMPT, RECONCILER_PROMPT, RECONCILER_PROMPT_V2, route
from activities.audit import AuditLedger
from activities.canary import (
    DEPLOYMENT_VERSION,
    Canary,
    CanaryError,
    _marked_runs,
    bucket,
    judge,
    routing,
)
from activities.database import Database
from activities.seed import seed_period
from baton.settings import Settings
from tests import conftest
from tests.conftest import Harness, fresh_pg_database
from tests.support.scripted_model import Fault, searchable_text
from tests.test_approvals import FEE, script_entries
from tests.test_operations import run_cli
from worker import build_runtime, build_worker, deployment_config
from workflows import visibility
from workflows.client import BatonClient
from workflows.contracts import (
    PROCESS_VERSIONS,
    VERSION_MEMO,
    ArmKpis,
    AuditEvent,
    CanaryConfig,
    CanaryStatus,
    FinanceCloseInput,
    ProcessVersion,
)

CANDIDATE = "reconciler-prompt-v2"
#: words only the candidate's reconciler prompt has: the scripted server matches on them
V2_PHRASE = "Prefer no entry over a guess."
PROCESS = "finance_close"


@pytest.fixture(params=["sqlite", "postgres"])
def canary(database_url: str, request: pytest.FixtureRequest) -> Iterator[Canary]:
    """The canary store on SQLite and, when one is reachable, on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        db = Database(database_url)
        db.create_tables()
        yield Canary(db, AuditLedger(db))
        db.dispose()
        return
    with contextlib.contextmanager(fresh_pg_database)("baton_canary") as url:
        db = Database(url)
        db.create_tables()
        try:
            yield Canary(db, AuditLedger(db))
        finally:
            db.dispose()


def config(**overrides: Any) -> CanaryConfig:
    return CanaryConfig.model_validate(
        {"process": PROCESS, "candidate": CANDIDATE, "share": 0.5, **overrides}
    )


def key(n: int) -> str:
    return f"finance-close/acme/k{n:05d}"


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"share": 1.5}, "share", "less than or equal to 1"),
        ({"share": -0.1}, "share", "greater than or equal to 0"),
        ({"candidate": "prompt-v9"}, "", "candidate: unknown version 'prompt-v9' of finance_close"),
        ({"candidate": "stable"}, "", "candidate: must differ from the baseline"),
        ({"baseline": "nope"}, "", "baseline: unknown version 'nope'"),
        ({"process": "payroll"}, "process", "unknown process 'payroll'"),
        ({"min_runs": 0}, "min_runs", "greater than or equal to 1"),
        ({"max_error_rate_increase": 2}, "max_error_rate_increase", "less than or equal to 1"),
        ({"max_cost_increase": -1}, "max_cost_increase", "greater than or equal to 0"),
        ({"shares": 0.5}, "shares", "Extra inputs are not permitted"),
        ({"deployment": "baton"}, "", "deployment: only a code canary"),
        ({"kind": "code", "candidate": "build-2"}, "", "deployment: a code canary names its"),
        ({"kind": "binary"}, "kind", "Input should be 'data' or 'code'"),
    ],
)
def test_bad_canary_configuration_names_the_field(
    overrides: dict[str, Any], field: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as err:
        config(**overrides)
    errors = err.value.errors()
    assert [".".join(str(p) for p in e["loc"]) for e in errors] == [field]
    assert expected in str(err.value)


def test_a_run_version_must_be_a_known_one() -> None:
    with pytest.raises(ValidationError, match="version\n.*unknown version 'v9' of finance_close"):
        FinanceCloseInput(tenant="acme", period="2026-10", requested_by="alice", version="v9")
    assert FinanceCloseInput(tenant="acme", period="2026-10", requested_by="a").version == "stable"


async def test_cli_refuses_a_bad_canary_with_the_field_and_starts_nothing(
    harness: Harness,
) -> None:
    h = harness
    bad = await run_cli(h, "canary", "start", "--candidate", CANDIDATE, "--share", "2")
    assert bad.returncode == 2
    assert "share" in bad.stderr and "less than or equal to 1" in bad.stderr
    unknown = await run_cli(h, "canary", "start", "--candidate", "v9", "--share", "0.1")
    assert unknown.returncode == 2 and "candidate: unknown version 'v9'" in unknown.stderr
    pinned = await run_cli(
        h, "close", "start", "--tenant", h.tenant, "--period", h.period,
        "--requested-by", "alice", "--version", "v9",
    )  # fmt: skip
    assert pinned.returncode == 2 and "version: unknown version 'v9'" in pinned.stderr
    assert h.runtime.canary.current(PROCESS) is None
    versions = await run_cli(h, "canary", "versions")
    assert versions.returncode == 0 and CANDIDATE in versions.stdout
    code = await run_cli(
        h, "canary", "start", "--kind", "code", "--deployment", "never-polled",
        "--candidate", "build-2", "--share", "0.1",
    )  # fmt: skip
    assert code.returncode == 1
    assert "deployment 'never-polled' has no current version" in code.stderr
    assert "temporal worker deployment set-current-version" in code.stderr
    assert h.runtime.canary.current(PROCESS) is None


def test_worker_versioning_settings_go_together() -> None:
    with pytest.raises(ValueError, match="BATON_DEPLOYMENT_NAME and BATON_BUILD_ID go together"):
        Settings.from_env({"BATON_DEPLOYMENT_NAME": "baton"})
    settings = Settings.from_env({"BATON_DEPLOYMENT_NAME": "baton", "BATON_BUILD_ID": "b-42"})
    assert (settings.deployment_name, settings.build_id) == ("baton", "b-42")


# -- assignment -----------------------------------------------------------------------------


def test_assignment_is_sticky_and_follows_the_share(canary: Canary) -> None:
    keys = [key(n) for n in range(4000)]
    assert {canary.assign(PROCESS, k) for k in keys[:50]} == {"stable"}  # no canary yet

    status, what = canary.start(config(share=0.0), by="ops", reason="dark launch")
    assert what == "started" and status.state == "active" and status.baseline == "stable"
    assert {canary.assign(PROCESS, k) for k in keys[:500]} == {"stable"}

    canary.start(config(share=0.3), by="ops", reason="ramp to 30%")
    at_30 = {k for k in keys if canary.assign(PROCESS, k) == CANDIDATE}
    assert abs(len(at_30) / len(keys) - 0.3) < 0.03
    # sticky: the same key gets the same version every time
    assert all(canary.assign(PROCESS, k) == CANDIDATE for k in sorted(at_30)[:100])
    assert {canary.assign(PROCESS, k) for k in keys if k not in at_30} == {"stable"}

    canary.start(config(share=0.6), by="ops", reason="ramp to 60%")
    at_60 = {k for k in keys if canary.assign(PROCESS, k) == CANDIDATE}
    assert at_30 < at_60  # raising the share only adds keys
    assert abs(len(at_60) / len(keys) - 0.6) < 0.03

    canary.start(config(share=1.0), by="ops", reason="everyone")
    assert {canary.assign(PROCESS, k) for k in keys[:500]} == {CANDIDATE}
    # the bucket is a pure function of process, candidate and key
    assert bucket(PROCESS, CANDIDATE, keys[0]) == bucket(PROCESS, CANDIDATE, keys[0])
    assert bucket(PROCESS, CANDIDATE, keys[0]) != bucket(PROCESS, "other", keys[0])


def test_start_is_idempotent_changes_are_audited_and_a_second_candidate_is_refused(
    canary: Canary,
) -> None:
    first, what = canary.start(config(share=0.1), by="ops", reason="try v2")
    assert what == "started"
    again, what = canary.start(config(share=0.1), by="ops", reason="again")
    assert what == "unchanged" and again == first
    ramped, what = canary.start(config(share=0.2, min_runs=5), by="ops", reason="ramp")
    assert what == "updated" and ramped.revision == 2 and ramped.id == first.id
    assert ramped.started_at == first.started_at  # the KPI window does not move

    # another candidate while one is active: refused, naming what to do
    PROCESS_VERSIONS[PROCESS]["other-v3"] = ProcessVersion(name="other-v3", description="t")
    try:
        with pytest.raises(CanaryError, match="already has an active data canary.*roll it back"):
            canary.start(config(candidate="other-v3"), by="ops", reason="x")
    finally:
        del PROCESS_VERSIONS[PROCESS]["other-v3"]

    with pytest.raises(CanaryError, match="reason"):
        canary.rollback(PROCESS, reason=" ", by="ops")
    rolled = canary.rollback(PROCESS, reason="manual", by="ops")
    assert rolled is not None and rolled.state == "rolled_back" and rolled.share == 0
    assert canary.rollback(PROCESS, reason="twice", by="ops") is None
    assert {canary.assign(PROCESS, key(n)) for n in range(300)} == {"stable"}

    # a fresh canary of the same candidate, then promoted: every new run gets the candidate
    fresh, what = canary.start(config(share=0.1), by="ops", reason="retry")
    assert what == "started" and fresh.id != first.id and fresh.revision == 1
    promoted = canary.promote(PROCESS, reason="KPIs fine", by="ops")
    assert promoted is not None and promoted.state == "promoted"
    assert {canary.assign(PROCESS, key(n)) for n in range(300)} == {CANDIDATE}
    assert [s.state for s in canary.history(PROCESS)] == ["rolled_back", "promoted"]

    trail = canary.ledger.trail("baton:canary")
    assert [(r.action, r.rationale) for r in trail] == [
        ("canary.started", "try v2"),
        ("canary.updated", "ramp"),
        ("canary.rolled_back", "manual"),
        ("canary.started", "retry"),
        ("canary.promoted", "KPIs fine"),
    ]
    assert json.loads(trail[1].detail_json)["share"] == {"from": 0.1, "to": 0.2}
    assert canary.ledger.verify().ok


# -- judging ----------------------------------------------------------------------------------


def arm(
    version: str, runs: int, failed: int = 0, escalations: int = 0, cost: float = 0.01
) -> ArmKpis:
    return ArmKpis(
        version=version,
        runs=runs,
        completed=runs - failed,
        failed=failed,
        running=0,
        error_rate=failed / runs if runs else 0.0,
        escalations=escalations,
        escalation_rate=escalations / runs if runs else 0.0,
        approvals=0,
        approval_rate=0.0,
        cost_usd=cost * runs,
        cost_per_run=cost,
    )


def status(**overrides: Any) -> CanaryStatus:
    from datetime import UTC, datetime

    return CanaryStatus.model_validate(
        {
            **config(min_runs=10).model_dump(),
            "id": 1,
            "state": "active",
            "revision": 1,
            "started_at": datetime.now(UTC),
            "started_by": "ops",
            **overrides,
        }
    )


def test_judge_compares_each_kpi_with_its_margin() -> None:
    s = status()
    verdict, reasons = judge(s, arm("stable", 20), arm(CANDIDATE, 9, failed=9))
    assert verdict == "insufficient_data" and reasons == [f"{CANDIDATE} has 9 of 10 finished runs"]

    verdict, reasons = judge(s, arm("stable", 20, failed=1), arm(CANDIDATE, 20, failed=2))
    assert verdict == "healthy"  # +5.0 points: at the margin, not beyond it
    verdict, reasons = judge(s, arm("stable", 20, failed=1), arm(CANDIDATE, 20, failed=3))
    assert verdict == "worse"
    assert reasons == ["error rate 15.0% vs 5.0% (+10.0%, margin +5.0%)"]

    verdict, reasons = judge(s, arm("stable", 10), arm(CANDIDATE, 10, escalations=3))
    assert verdict == "worse" and reasons[0].startswith("escalation rate 30.0% vs 0.0%")

    verdict, reasons = judge(s, arm("stable", 10, cost=0.010), arm(CANDIDATE, 10, cost=0.013))
    assert verdict == "worse"
    assert reasons == ["cost per run $0.013000 vs $0.010000 (+30.0%, margin +20.0%)"]
    verdict, _ = judge(s, arm("stable", 10, cost=0.010), arm(CANDIDATE, 10, cost=0.0115))
    assert verdict == "healthy"
    verdict, _ = judge(s, arm("stable", 10, cost=0.0), arm(CANDIDATE, 10, cost=0.001))
    assert verdict == "worse"  # any cost against a free baseline is an increase beyond a margin
    verdict, reasons = judge(s, arm("stable", 10, cost=0.0), arm(CANDIDATE, 10, cost=0.0))
    assert verdict == "healthy" and "cost per run $0 on both" in reasons


def test_escalations_and_approvals_come_from_the_audit_ledger(canary: Canary) -> None:
    def event(workflow_id: str, run_id: str, action: str) -> AuditEvent:
        return AuditEvent(
            workflow_id=workflow_id, run_id=run_id, seq=action, actor="t", action=action
        )

    canary.ledger.append(
        [
            event("w1", "r1", "approval.requested"),
            event("w1", "r1", "approval.escalated"),
            event("w1", "r0", "approval.escalated"),  # an earlier run of the same key
            event("w2", "r2", "approval.requested"),
            event("w3", "r3", "close.completed"),
        ]
    )
    marked = _marked_runs(canary.ledger, [("w1", "r1"), ("w2", "r2"), ("w3", "r3")])
    assert marked == {
        "approval.escalated": {("w1", "r1")},
        "approval.requested": {("w1", "r1"), ("w2", "r2")},
    }


def test_versions_route_prompts_and_models_per_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    stable = route(PROCESS, "stable", "reconciler", "model-a")
    assert (stable.prompt, stable.model) == (RECONCILER_PROMPT, "model-a")
    v2 = route(PROCESS, CANDIDATE, "reconciler", "model-a")
    assert (v2.prompt, v2.variant, v2.model) == (RECONCILER_PROMPT_V2, "v2", "model-a")
    assert route(PROCESS, CANDIDATE, "compliance_checker", "m").prompt == COMPLIANCE_PROMPT
    # the agent line is the same, the instructions differ; the phrase is the candidate's own
    assert RECONCILER_PROMPT_V2.splitlines()[0] == RECONCILER_PROMPT.splitlines()[0]
    assert V2_PHRASE in RECONCILER_PROMPT_V2 and V2_PHRASE not in RECONCILER_PROMPT

    monkeypatch.setitem(
        PROCESS_VERSIONS[PROCESS],
        "route-b",
        ProcessVersion(name="route-b", description="t", models={"reconciler": "model-b"}),
    )
    assert route(PROCESS, "route-b", "reconciler", "model-a").model == "model-b"
    assert route(PROCESS, "route-b", "close_memo_writer", "model-a").model == "model-a"
    with pytest.raises(ApplicationError) as err:
        route(PROCESS, "v9", "reconciler", "model-a")
    assert err.value.type == "UnknownProcessVersion" and not err.value.non_retryable


# -- through the real workflow ---------------------------------------------------------------


async def started_input(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The run's input as recorded in its first history event."""
    history = await handle.fetch_history()
    payload = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    return dict(json.loads(payload.data))


def reconciler_requests(h: Harness, period: str) -> list[dict[str, Any]]:
    return [
        r
        for r in h.model.requests
        if r["agent"] == "reconciler"
        and f'"period":"{period}"' in searchable_text(r["raw"].encode())
    ]


def system_prompt(request: dict[str, Any]) -> str:
    return str(request["body"]["messages"][0]["content"])


async def test_a_runs_version_is_recorded_and_its_prompt_and_model_reach_the_model(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    h.runtime.canary.start(config(share=1.0), by="ops", reason="all new runs on v2")
    pinned_period = f"{h.period[:4]}-09"
    routed_period = f"{h.period[:4]}-08"
    for period in (pinned_period, routed_period):
        seed_period(h.db, h.tenant, period)
    for period in (h.period, pinned_period, routed_period):
        script_entries(h, FEE, period=period)  # small: posts without an approval
    monkeypatch.setitem(
        PROCESS_VERSIONS[PROCESS],
        "reconciler-model-b",
        ProcessVersion(
            name="reconciler-model-b", description="t", models={"reconciler": "baton-rules-large"}
        ),
    )
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())  # the canary assigns
        pinned = await h.client.start_finance_close(
            h.start_input(period=pinned_period, version="stable")
        )
        routed = await h.client.start_finance_close(
            h.start_input(period=routed_period, version="reconciler-model-b")
        )
        for run in (handle, pinned, routed):
            await run.result()

    for run, version in ((handle, CANDIDATE), (pinned, "stable"), (routed, "reconciler-model-b")):
        described = await run.describe()
        assert described.typed_search_attributes.get(visibility.VERSION) == version
        assert (await described.memo())[VERSION_MEMO] == version
        assert (await started_input(run))["version"] == version
        started = [r for r in h.runtime.ledger.trail(run.id) if r.action == "close.started"]
        assert json.loads(started[0].detail_json)["version"] == version

    (v2_call,) = reconciler_requests(h, h.period)
    assert system_prompt(v2_call) == RECONCILER_PROMPT_V2
    assert '"version"' not in v2_call["body"]["messages"][1]["content"]  # never sent
    (stable_call,) = reconciler_requests(h, pinned_period)
    assert system_prompt(stable_call) == RECONCILER_PROMPT
    # the catalogue (config/models.json) routes the reconciler: stable gets the cheapest model
    assert stable_call["body"]["model"] == "baton-rules-small"
    (routed_call,) = reconciler_requests(h, routed_period)
    assert routed_call["body"]["model"] == "baton-rules-large"  # the version pins this one
    assert system_prompt(routed_call) == RECONCILER_PROMPT
    # the other agents of a v2 run keep their stable prompts
    compliance = [
        r for r in h.model.requests if r["agent"] == "compliance_checker" and h.period in r["raw"]
    ]
    assert system_prompt(compliance[0]) == COMPLIANCE_PROMPT

    def proposed(run: WorkflowHandle[Any, Any]) -> Any:
        trail = h.runtime.ledger.trail(run.id)
        return next(r for r in trail if r.action == "agent.proposed_adjustments")

    assert json.loads(proposed(handle).detail_json)["version"] == CANDIDATE
    assert json.loads(proposed(handle).detail_json)["prompt_variant"] == "v2"
    assert proposed(routed).model == "baton-rules-large"


def pick_keys(h: Harness, canary: Canary, per_arm: int) -> dict[str, list[str]]:
    """Periods whose business keys the canary puts in each arm, more than ``per_arm`` each: of
    this test's year, or, when its 12 months split too unevenly, of a fresh year no other test
    uses (the assignment is a hash of the key, so which year works depends on the year)."""
    year = h.period[:4]
    for _ in range(20):
        arms: dict[str, list[str]] = {"stable": [], CANDIDATE: []}
        for month in range(1, 13):
            period = f"{year}-{month:02d}"
            version = canary.assign(PROCESS, f"finance-close/{h.tenant}/{period}")
            arms[version].append(period)
        if all(len(periods) > per_arm for periods in arms.values()):
            return arms
        year = f"{next(conftest._years):04d}"
    raise AssertionError(f"no year splits {per_arm + 1} keys into each arm")


async def terminate_quietly(client: BatonClient, workflow_id: str) -> None:
    handle = client.client.get_workflow_handle(workflow_id)
    try:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test over")
    except Exception:
        pass


async def test_a_worse_canary_is_rolled_back_by_the_monitor_and_new_runs_get_stable(
    harness: Harness,
) -> None:
    h = harness
    canary = h.runtime.canary
    started = await run_cli(
        h, "canary", "start", "--candidate", CANDIDATE, "--share", "0.5", "--min-runs", "3",
        "--interval", "1", "--reason", "try the reworded prompt", "--by", "ops",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "canary started: reconciler-prompt-v2 on 50% of new finance_close runs" in started.stdout
    monitor_id = h.client.canary_monitor_id(PROCESS)
    assert monitor_id in started.stdout
    arms = pick_keys(h, canary, per_arm=3)
    stable_periods, candidate_periods = arms["stable"][:3], arms[CANDIDATE][:3]
    later = arms[CANDIDATE][3]  # a candidate key started only after the rollback
    for period in [*stable_periods, *candidate_periods, later]:
        if period != h.period:
            seed_period(h.db, h.tenant, period)
    faults_before = len(h.model.pending_faults)
    for period in [*stable_periods, later]:
        script_entries(h, FEE, period=period)
    # the candidate's reconciler answers garbage: the cheap model, its repair turn, the strong
    # one (the router escalates invalid output) and its repair turn, then the run fails (a
    # refused answer is not retried)
    h.model.script(*[Fault.malformed()] * (4 * len(candidate_periods)), match=V2_PHRASE)

    try:
        async with h.worker():
            handles = {
                period: await h.client.start_finance_close(h.start_input(period=period))
                for period in [*stable_periods, *candidate_periods]
            }
            evaluation = await asyncio.wait_for(h.client.canary_monitor(PROCESS).result(), 90)
            assert evaluation.action == "rolled_back" and evaluation.verdict == "worse"

            after = await h.client.start_finance_close(h.start_input(period=later))
            await after.result()
            late_version = (await after.describe()).typed_search_attributes.get(visibility.VERSION)
    finally:
        await terminate_quietly(h.client, monitor_id)

    assert late_version == "stable"  # its key hashed to the candidate; the canary is over
    for period, handle in handles.items():
        described = await handle.describe()
        version = described.typed_search_attributes.get(visibility.VERSION)
        assert version == (CANDIDATE if period in candidate_periods else "stable")
        expected = (
            WorkflowExecutionStatus.FAILED
            if period in candidate_periods
            else WorkflowExecutionStatus.COMPLETED
        )
        assert described.status == expected
    assert len(h.model.pending_faults) == faults_before  # every scripted fault was used

    current = canary.current(PROCESS)
    assert current is not None and current.state == "rolled_back" and current.share == 0
    assert current.ended_by == "baton:canary-monitor"
    (row,) = [r for r in canary.ledger.trail("baton:canary") if r.action == "canary.rolled_back"]
    detail = json.loads(row.detail_json)
    assert detail["verdict"] == "worse" and detail["share_was"] == 0.5
    assert detail["kpis"][CANDIDATE]["error_rate"] == 1.0
    assert detail["kpis"][CANDIDATE]["failed"] == 3
    assert detail["kpis"]["stable"]["error_rate"] == 0.0
    assert detail["kpis"]["stable"]["completed"] == 3
    assert detail["kpis"]["stable"]["cost_per_run"] > 0
    assert detail["reasons"][0].startswith("error rate 100.0% vs 0.0% (+100.0%, margin +5.0%)")
    assert "automatic rollback" in row.rationale

    shown = await run_cli(h, "canary", "status")
    assert shown.returncode == 0, shown.stderr
    assert "rolled back" in shown.stdout and "automatic rollback" in shown.stdout
    assert f"{monitor_id} completed" in shown.stdout


async def test_a_canary_that_is_not_worse_is_not_rolled_back(harness: Harness) -> None:
    h = harness
    canary = h.runtime.canary
    canary.start(config(share=0.5, min_runs=2), by="ops", reason="try v2")
    arms = pick_keys(h, canary, per_arm=2)
    periods = arms["stable"][:2] + arms[CANDIDATE][:2]
    for period in periods:
        if period != h.period:
            seed_period(h.db, h.tenant, period)
        script_entries(h, FEE, period=period)
    monitor_id = h.client.canary_monitor_id(PROCESS)
    try:
        async with h.worker():
            # a short interval and a continue-as-new every 2 evaluations
            monitor = await h.client.start_canary_monitor(
                PROCESS, interval_seconds=0.5, iterations_per_run=2
            )
            for period in periods:
                await (await h.client.start_finance_close(h.start_input(period=period))).result()
            await asyncio.sleep(2.5)  # several evaluations with every run finished

            evaluated = await run_cli(h, "canary", "evaluate", "--json")
            assert evaluated.returncode == 0, evaluated.stderr
            evaluation = json.loads(evaluated.stdout)
            assert evaluation["verdict"] == "healthy" and evaluation["action"] == "none"
            assert evaluation["candidate"]["runs"] == 2 and evaluation["baseline"]["runs"] == 2
            assert evaluation["monitor"] == "running"
            current = canary.current(PROCESS)
            assert current is not None and current.state == "active"
            last = canary.last_evaluation(PROCESS)
            assert last is not None and last.verdict == "healthy"
            described = await h.client.client.get_workflow_handle(monitor_id).describe()
            assert described.run_id != monitor.first_execution_run_id  # continued as new

            promoted = await run_cli(h, "canary", "promote", "--reason", "KPIs fine", "--by", "ops")
            assert promoted.returncode == 0, promoted.stderr
            final = await asyncio.wait_for(h.client.canary_monitor(PROCESS).result(), 30)
            assert final.verdict == "inactive" and final.canary is not None
            assert final.canary.state == "promoted"
    finally:
        await terminate_quietly(h.client, monitor_id)
    assert canary.assign(PROCESS, f"finance-close/{h.tenant}/{arms['stable'][0]}") == CANDIDATE
    assert not [r for r in canary.ledger.trail("baton:canary") if r.action == "canary.rolled_back"]


async def test_monitor_start_is_idempotent_and_the_monitor_ends_with_the_canary(
    harness: Harness,
) -> None:
    h = harness
    async with h.worker():
        alone = await h.client.start_canary_monitor(PROCESS, interval_seconds=60)
        assert (await asyncio.wait_for(alone.result(), timeout=30)).verdict == "no_canary"

        h.runtime.canary.start(config(share=0.0), by="ops", reason="dark launch")
        first = await h.client.start_canary_monitor(PROCESS, interval_seconds=60)
        second = await h.client.start_canary_monitor(PROCESS, interval_seconds=60)
        assert (
            first.first_execution_run_id
            == second.first_execution_run_id
            != (alone.first_execution_run_id)
        )
        rolled = await run_cli(h, "canary", "rollback", "--reason", "not now", "--by", "ops")
        assert rolled.returncode == 0, rolled.stderr
        assert "new finance_close runs get stable" in rolled.stdout
        assert "told; it ends" in rolled.stdout
        # the signal wakes it: it ends long before its 60 s interval
        result = await asyncio.wait_for(first.result(), timeout=15)
    assert result.verdict == "inactive" and result.canary is not None
    assert result.canary.state == "rolled_back"
    again = await run_cli(h, "canary", "rollback", "--reason", "twice", "--by", "ops")
    assert again.returncode == 1 and "no active canary" in again.stderr


# -- code canaries: Temporal's Worker Deployment Versioning ----------------------------------


async def wait_for_versions(h: Harness, deployment: str, *builds: str) -> None:
    """Until Temporal has seen pollers of every build of ``deployment``."""
    async with asyncio.timeout(30):
        while True:
            try:
                described = await h.temporal.workflow_service.describe_worker_deployment(
                    DescribeWorkerDeploymentRequest(namespace="default", deployment_name=deployment)
                )
            except RPCError:
                described = None
            if described is not None:
                seen = {
                    v.deployment_version.build_id
                    for v in described.worker_deployment_info.version_summaries
                }
                if set(builds) <= seen:
                    return
            await asyncio.sleep(0.2)


async def test_a_worse_code_canary_is_ramped_back_to_zero_by_temporal(
    harness: Harness, tmp_path: Path
) -> None:
    """Two builds of one Worker Deployment: build-b's runs fail (its model catalogue names
    models the scripted server answers with garbage). Temporal ramps 50% of new (pinned) closes
    to it; the monitor groups KPIs by TemporalWorkerDeploymentVersion and, when build-b is
    worse, sets its ramp to 0%: new runs, even of a business key build-b had, go to build-a."""
    h = harness
    deployment = f"baton-{h.client.task_queue}"
    broken_model = f"broken-{h.client.task_queue}"
    catalogue = json.loads(h.settings.model_catalogue.read_text())
    for m in catalogue["models"]:
        m["name"] = m["name"].replace("baton-rules", broken_model)
    (tmp_path / "models.json").write_text(json.dumps(catalogue))
    broken = build_runtime(replace(h.settings, model_catalogue=tmp_path / "models.json"))
    year = h.period[:4]
    periods = [f"{year}-{m:02d}" for m in range(1, 13)]
    for period in periods:
        if period != h.period:
            seed_period(h.db, h.tenant, period)
    # a run asks the cheap model, its repair turn, the strong one and its repair turn: 4
    # garbage answers, then the run fails (a refused answer is not retried)
    h.model.script(*[Fault.malformed()] * (4 * len(periods)), match=broken_model)
    for period in periods:
        script_entries(h, FEE, period=period)
    worker_a = h.worker(deployment_config=deployment_config(deployment, "build-a"))
    worker_b = build_worker(
        h.temporal,
        broken,
        task_queue=h.client.task_queue,
        deployment_config=deployment_config(deployment, "build-b"),
    )
    monitor_id = h.client.canary_monitor_id(PROCESS)
    try:
        async with worker_a, worker_b:
            await wait_for_versions(h, deployment, "build-a", "build-b")
            await h.temporal.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace="default", deployment_name=deployment, build_id="build-a"
                )
            )  # the operator's stable build
            started = await run_cli(
                h, "canary", "start", "--kind", "code", "--deployment", deployment,
                "--candidate", "build-b", "--share", "0.5", "--min-runs", "2", "--interval", "1",
                "--reason", "new agent wiring", "--by", "ops",
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            assert "vs build-a" in started.stdout  # the current build, looked up
            assert f"Temporal: {deployment}:build-b ramps at 50%" in started.stdout

            handles = [
                await h.client.start_finance_close(h.start_input(period=period))
                for period in periods
            ]
            evaluation = await asyncio.wait_for(h.client.canary_monitor(PROCESS).result(), 120)
            assert evaluation.action == "rolled_back"
            _, ramping, percentage = await routing(h.temporal, deployment)
            assert (ramping, percentage) == ("build-b", 0.0)

            builds: dict[str, str] = {}
            for handle in handles:
                try:
                    await handle.result()
                except WorkflowFailureError:
                    pass
                described = await handle.describe()
                version = described.typed_search_attributes.get(DEPLOYMENT_VERSION) or ""
                builds[handle.id] = version.rpartition(":")[2]
                expected = (
                    WorkflowExecutionStatus.FAILED
                    if builds[handle.id] == "build-b"
                    else WorkflowExecutionStatus.COMPLETED
                )
                assert described.status == expected
                assert described.typed_search_attributes.get(visibility.VERSION) == "stable"
            on_b = [workflow_id for workflow_id, build in builds.items() if build == "build-b"]
            assert on_b and len(on_b) < len(handles)  # both builds got runs

            # a business key build-b failed, started again: Temporal now routes it to build-a
            again = await h.client.start_finance_close(
                h.start_input(period=on_b[0].rpartition("/")[2])
            )
            await again.result()
            described = await again.describe()
            assert described.typed_search_attributes.get(DEPLOYMENT_VERSION) == (
                f"{deployment}:build-a"
            )
    finally:
        await terminate_quietly(h.client, monitor_id)
        await broken.close()

    current = h.runtime.canary.current(PROCESS)
    assert current is not None and current.state == "rolled_back" and current.kind == "code"
    (row,) = [
        r for r in h.runtime.canary.ledger.trail("baton:canary") if r.action == "canary.rolled_back"
    ]
    detail = json.loads(row.detail_json)
    assert detail["deployment"] == deployment
    assert detail["kpis"]["build-b"]["error_rate"] == 1.0
    assert detail["kpis"]["build-a"]["error_rate"] == 0.0
