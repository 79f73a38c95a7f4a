"""Composition root: settings -> clients -> activity objects -> Worker. Graceful stop.

    python worker.py            # one worker for every Baton process, on BATON_TASK_QUEUE

Connects with Temporal's envconfig (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
TEMPORAL_PROFILE + TOML file, TLS). SIGINT/SIGTERM stop polling, let running activities finish
(up to the graceful timeout) and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.agents import AgentActivities
from activities.audit import AuditActivities, AuditLedger
from activities.canary import Canary, CanaryActivities
from activities.database import Database
from activities.finance import FinanceActivities
from activities.hr import HrActivities
from activities.kill_switch import KillSwitch, KillSwitchActivities
from activities.notify import Notifier, NotifyActivities, build_notifier
from activities.policy import PolicyEngine, build_engine
from activities.throttle import Throttle
from baton.settings import Settings
from workflows.canary_monitor import AutoUpgradeCanaryMonitorWorkflow, CanaryMonitorWorkflow
from workflows.client import connect_client
from workflows.finance_close import FinanceCloseWorkflow
from workflows.hr_onboarding import HrOnboardingWorkflow

WORKFLOWS: Sequence[type] = [FinanceCloseWorkflow, CanaryMonitorWorkflow, HrOnboardingWorkflow]
log = logging.getLogger("baton.worker")


@dataclass
class Runtime:
    """Everything a worker holds: built once, closed once."""

    db: Database
    ledger: AuditLedger
    openai: AsyncOpenAI
    policy: PolicyEngine
    notifier: Notifier
    activities: list[Any]
    canary: Canary | None = None

    async def close(self) -> None:
        await self.openai.close()
        # the OPA REST client holds a session; the webhook notifier may own an httpx client
        for part in (self.policy, self.notifier):
            aclose = getattr(part, "aclose", None)
            if aclose is not None:
                await aclose()
        self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    db = Database(settings.database_url)
    db.create_tables()
    ledger = AuditLedger(db)
    # max_retries=0: Temporal owns retries, so every attempt is visible in the workflow history.
    llm = AsyncOpenAI(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key, max_retries=0
    )
    policy = build_engine(settings.opa_url, settings.policy_dir)
    switch = KillSwitch(db, ledger)
    finance = FinanceActivities(db, ledger, policy, switch)
    hr = HrActivities(db, ledger, policy, switch)
    agents = AgentActivities(
        llm,
        ledger,
        model=settings.model,
        price_per_1k_prompt=settings.price_per_1k_prompt,
        price_per_1k_completion=settings.price_per_1k_completion,
        timeout_seconds=settings.llm_timeout_seconds,
        switch=switch,
        throttle=Throttle(db, settings.throttles_file),
        policy=policy,
        model_region=settings.model_region,
    )
    audit = AuditActivities(ledger)
    notifier = build_notifier(settings, db, ledger)
    notify = NotifyActivities(notifier)
    canary = Canary(db, ledger)
    activities = [
        finance.collect_period_data,
        finance.reconcile_transactions,
        finance.evaluate_policies,
        finance.post_journal_entry,
        finance.reverse_journal_entry,
        finance.close_period,
        agents.propose_adjustments,
        agents.revise_adjustments,
        agents.review_compliance,
        agents.write_close_memo,
        agents.verify_identity,
        agents.educate_policies,
        agents.prompt_entitlements,
        hr.load_new_hire,
        hr.persist_blackboard,
        hr.grant_entitlement,
        hr.revoke_entitlement,
        audit.record_audit,
        notify.notify,
        KillSwitchActivities(switch).kill_switch_status,
        CanaryActivities(canary).evaluate_canary,
    ]
    return Runtime(
        db=db,
        ledger=ledger,
        openai=llm,
        policy=policy,
        notifier=notifier,
        activities=activities,
        canary=canary,
    )


def deployment_config(deployment_name: str, build_id: str) -> WorkerDeploymentConfig:
    """Worker Deployment Versioning: this worker is one build of a deployment; new workflows are
    pinned to the version Temporal routes them to (current, or the ramping one for a share), so a
    code canary's runs stay on its build. The CanaryMonitor auto-upgrades instead."""
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=deployment_name, build_id=build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def build_worker(client: Client, runtime: Runtime, *, task_queue: str, **options: Any) -> Worker:
    workflows = WORKFLOWS
    versioned = options.get("deployment_config")
    if versioned is not None and versioned.use_worker_versioning:
        workflows = [FinanceCloseWorkflow, AutoUpgradeCanaryMonitorWorkflow]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=runtime.activities,
        graceful_shutdown_timeout=options.pop("graceful_shutdown_timeout", timedelta(seconds=10)),
        **options,
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect_client(
        None if settings.temporal_profile else settings.temporal_address,
        namespace=settings.temporal_namespace,
        profile=settings.temporal_profile,
    )
    runtime = build_runtime(settings)
    options: dict[str, Any] = {}
    if settings.deployment_name and settings.build_id:
        options["deployment_config"] = deployment_config(
            settings.deployment_name, settings.build_id
        )
    worker = build_worker(client, runtime, task_queue=settings.task_queue, **options)
    log.info(
        "worker polling %s on %s (namespace %s)%s",
        settings.task_queue,
        settings.temporal_address,
        settings.temporal_namespace,
        f" as build {settings.build_id} of deployment {settings.deployment_name}"
        if settings.build_id
        else "",
    )
    try:
        async with worker:
            await stop.wait()
            log.info("stop requested: finishing running activities, then exiting")
    finally:
        await runtime.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(_main())
    log.info("worker stopped")


if __name__ == "__main__":
    main()
