"""Prometheus metrics of a real worker: scraped from its endpoint while and after it runs
finance closes on the dev server (SDK runtime metrics and Baton's own), and checked against
what the audit ledger says happened."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.runtime import Runtime

from activities import audit_facts
from activities.audit import AuditRecord
from activities.metrics import StateGauges, StateSnapshot
from baton.devstack import local
from baton.settings import Settings
from baton.telemetry import prometheus_runtime
from tests.conftest import Harness, _harness
from tests.support import prometheus
from tests.support.failures import expect_failure
from tests.test_kpi import a_denied_period
from workflows.plugin import BatonPlugin


@dataclass
class Metered:
    h: Harness
    runtime: Runtime
    url: str
    _gauges: StateGauges | None = None

    def gauges(self) -> StateGauges:
        """The worker's one long-lived collector (it remembers scopes it saw engaged)."""
        assert self.h.runtime.switch is not None
        if self._gauges is None:
            self._gauges = StateGauges(
                self.runtime.metric_meter,
                self.h.temporal,
                self.h.db,
                self.h.runtime.switch,
                task_queue=self.h.client.task_queue,
            )
        return self._gauges

    async def scrape(self) -> list[prometheus.Sample]:
        return await asyncio.to_thread(prometheus.scrape, self.url)


@pytest.fixture
async def metered(
    temporal_client: Client, model_server: Any, database_url: str
) -> AsyncIterator[Metered]:
    """A harness whose worker's Temporal runtime serves Prometheus metrics on a free port."""
    bind = f"127.0.0.1:{local.free_port()}"
    runtime = prometheus_runtime(bind)
    client = await Client.connect(
        temporal_client.service_client.config.target_host,
        namespace=temporal_client.namespace,
        plugins=[BatonPlugin()],
        runtime=runtime,
    )
    async with _harness(client, model_server, database_url) as h:
        yield Metered(h, runtime, f"http://{bind}/metrics")


async def collect_until(m: Metered, ok: Any, timeout: float = 15.0) -> StateSnapshot:
    """Visibility lags the run by a moment: refresh the gauges until ``ok(snapshot)``."""
    async with asyncio.timeout(timeout):
        while True:
            snap = await m.gauges().collect()
            if ok(snap):
                return snap
            await asyncio.sleep(0.2)


def ledger_rows(h: Harness) -> list[AuditRecord]:
    from sqlmodel import select

    with h.db.read_session() as s:
        return list(s.exec(select(AuditRecord)).all())


async def test_worker_metrics_are_scraped_and_agree_with_the_ledger(metered: Metered) -> None:
    m, h = metered, metered.h
    denied_period = a_denied_period(h)  # a second period, whose close fails safe
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        h.runtime.switch.engage("tenant:metrics-other", reason="drill", by="ops")

        snap = await collect_until(m, lambda s: s.pending.get("finance_close") == 1)
        assert snap.oldest_seconds["finance_close"] > 0
        assert snap.kill_switch == {"global": 0, "tenant:metrics-other": 1}
        waiting = await m.scrape()
        assert prometheus.total(waiting, "baton_approvals_pending", process="finance_close") == 1
        assert prometheus.total(waiting, "baton_approvals_pending", process="hr_onboarding") == 0
        assert prometheus.total(waiting, "baton_approval_oldest_pending_seconds") > 0
        assert prometheus.total(waiting, "baton_kill_switch_engaged", scope="tenant:metrics-other")
        assert prometheus.total(waiting, "baton_approvals_requested_total") == 1

        await h.client.reject(handle.id, approver="carol", rationale="not today")
        await expect_failure(handle)
        denied = await h.client.start_finance_close(h.start_input(period=denied_period))
        await expect_failure(denied)
        h.runtime.switch.clear("tenant:metrics-other", reason="drill over", by="ops")
        await collect_until(
            m,
            lambda s: (
                s.pending.get("finance_close") == 0
                and s.kill_switch.get("tenant:metrics-other") == 0
            ),
        )
        samples = await m.scrape()

    # the SDK's own runtime metrics are on the same endpoint
    sdk = {n for n in prometheus.names(samples) if n.startswith("temporal_")}
    assert {"temporal_workflow_completed_total", "temporal_activity_execution_latency_count"} & sdk
    assert "temporal_workflow_failed_total" in sdk

    rows = ledger_rows(h)
    usages = [
        u
        for r in rows
        if (u := audit_facts.agent_usage(r.actor, r.action, r.model, r.tokens, r.cost_usd))
    ]
    assert usages, "the runs called agents"
    calls = prometheus.total(samples, "baton_agent_calls_total")
    assert calls == len(usages)
    assert prometheus.total(samples, "baton_agent_calls_total", agent="reconciler") == 2
    assert prometheus.total(samples, "baton_agent_tokens_total") == sum(u.tokens for u in usages)
    assert prometheus.total(samples, "baton_agent_cost_usd_sum") == pytest.approx(
        sum(u.cost_usd for u in usages), rel=1e-6
    )
    assert sum(u.cost_usd for u in usages) > 0

    verdicts = [v for r in rows if (v := audit_facts.policy_verdict(r.actor, r.action))]
    assert prometheus.total(samples, "baton_policy_decisions_total") == len(verdicts)
    denies = sum(v.verdict == "deny" for v in verdicts)
    assert denies >= 1
    assert prometheus.total(samples, "baton_policy_denies_total") == denies
    assert prometheus.total(
        samples, "baton_policy_decisions_total", verdict="require_approval"
    ) == sum(v.verdict == "require_approval" for v in verdicts)

    assert prometheus.total(samples, "baton_approvals_requested_total") == 1
    assert prometheus.total(samples, "baton_approvals_closed_total", outcome="rejected") == 1
    assert prometheus.total(samples, "baton_approval_wait_seconds_count") == 1
    assert prometheus.total(samples, "baton_approval_wait_seconds_sum") > 0

    failed = [r for r in rows if r.workflow_id == handle.id and r.action == "close.failed"]
    compensated = json.loads(failed[0].detail_json)["compensated"]
    assert compensated, "the rejected close had postings to reverse"
    assert prometheus.total(samples, "baton_compensations_total", result="ok") == len(compensated)
    assert prometheus.total(samples, "baton_compensations_total", result="failed") == 0

    assert prometheus.total(samples, "baton_approvals_pending", process="finance_close") == 0
    assert prometheus.total(samples, "baton_kill_switch_engaged", scope="tenant:metrics-other") == 0


def test_metrics_bind_is_checked_at_startup() -> None:
    with pytest.raises(ValueError, match="BATON_METRICS_BIND must be host:port"):
        Settings.from_env({"BATON_METRICS_BIND": "9464"})
    assert Settings.from_env({"BATON_METRICS_BIND": "0.0.0.0:9464"}).metrics_bind == "0.0.0.0:9464"


async def test_worker_main_serves_metrics_when_bind_is_set(
    temporal_client: Client, model_server: Any, database_url: str
) -> None:
    """worker.run (the composition root) opens the endpoint and refreshes the state gauges."""
    import uuid

    import worker
    from tests.conftest import make_settings

    bind = f"127.0.0.1:{local.free_port()}"
    settings = make_settings(
        database_url,
        model_server,
        temporal_address=temporal_client.service_client.config.target_host,
        task_queue=f"tq-{uuid.uuid4().hex[:12]}",
        metrics_bind=bind,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(settings, stop))
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    samples = await asyncio.to_thread(prometheus.scrape, f"http://{bind}/metrics")
                except OSError:
                    samples = []
                if prometheus.total(samples, "baton_kill_switch_engaged", scope="global") == 0 and (
                    "baton_approvals_pending" in prometheus.names(samples)
                ):
                    break
                await asyncio.sleep(0.2)
        assert any(n.startswith("temporal_") for n in prometheus.names(samples))
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_escalations_expiry_and_wait_are_counted_on_the_time_skipping_server(
    time_skipping_env: Any, model_server: Any, database_url: str
) -> None:
    """An approval nobody decides: 1 h + 4 h + 1 d of SLAs are skipped; the workflow meter
    counts both escalations, the expiry, the wait in workflow time and the reversal."""
    from tests.test_approvals import FEE, script_entries

    env = time_skipping_env
    bind = f"127.0.0.1:{local.free_port()}"
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        plugins=[BatonPlugin()],
        runtime=prometheus_runtime(bind),
    )
    async with _harness(client, model_server, database_url) as h:
        script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
        async with h.worker():
            handle = await h.client.start_finance_close(
                h.start_input(approval_timeout_seconds=3600)
            )
            await h.wait_for_pending(handle.id)
            # skip the SLAs explicitly: tier 0 (1 h), tier 1 (4 h), tier 2 (1 d)
            for sla in (timedelta(hours=1), timedelta(hours=4), timedelta(days=1)):
                await env.sleep(sla + timedelta(minutes=1))
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), 60)
            samples = await asyncio.to_thread(prometheus.scrape, f"http://{bind}/metrics")

    assert prometheus.total(samples, "baton_approval_escalations_total", level="1") == 1
    assert prometheus.total(samples, "baton_approval_escalations_total", level="2") == 1
    assert prometheus.total(samples, "baton_approvals_closed_total", outcome="expired") == 1
    waited = prometheus.total(samples, "baton_approval_wait_seconds_sum")
    assert waited == pytest.approx(3600 + 4 * 3600 + 86400, abs=600)  # in workflow time
    assert prometheus.total(samples, "baton_compensations_total", result="ok") >= 1
