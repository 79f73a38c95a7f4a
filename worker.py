"""Composition root: settings -> clients -> activity objects -> Worker. Graceful stop.

    python worker.py            # one worker for every Baton process, on BATON_TASK_QUEUE

Connects with Temporal's envconfig (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
TEMPORAL_PROFILE + TOML file, TLS). SIGINT/SIGTERM stop polling, let running activities finish
(up to the graceful timeout) and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import opentelemetry.trace
from openai import AsyncOpenAI
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.agent_turn import AgentTurnActivities
from activities.agents import AgentActivities
from activities.auction import AuctionActivities
from activities.audit import AuditActivities, AuditLedger, RefusedUpdateWriter
from activities.audit_checkpoint import CheckpointWriter, load_checkpoint_key, open_log
from activities.canary import Canary, CanaryActivities
from activities.claims import ClaimActivities
from activities.close_data import CloseDataActivities
from activities.customer import CustomerActivities
from activities.customer_agents import CustomerAgentActivities
from activities.customer_tools import CustomerToolActivities, customer_tools
from activities.database import Database
from activities.decision_log import DecisionLogger
from activities.extensions import ExtensionActivities
from activities.finance import FinanceActivities
from activities.hr import HrActivities
from activities.kill_switch import KillSwitch, KillSwitchActivities
from activities.knowledge import Embedder, KnowledgeActivities, KnowledgeBase
from activities.mcp_tools import McpToolbox, McpToolset, load_mcp_config
from activities.metrics import StateGauges, observe_audit
from activities.notify import Notifier, NotifyActivities, build_notifier
from activities.orphans import IntegrityActivities
from activities.payload_store import PayloadStore
from activities.policy import EmbeddedOpaEngine, PolicyEngine, build_engine
from activities.policy_gate import PolicyGateActivities
from activities.router import Router, load_catalogue, tenant_caps
from activities.schema import upgrade as upgrade_schema
from activities.supervisor import SupervisorActivities
from activities.support import SupportActivities, VectorKnowledgeSource
from activities.throttle import Throttle
from activities.tools import ToolActivities, ToolRegistry, builtin_tools
from baton import extensions
from baton.settings import Settings
from baton.telemetry import (
    prometheus_runtime,
    tracer_provider,
    traces_endpoint,
    tracing_interceptor,
)
from workflows.canary_monitor import AutoUpgradeCanaryMonitorWorkflow
from workflows.client import connect_client
from workflows.contracts.security import ApprovalTrust
from workflows.finance_close import FinanceCloseWorkflow
from workflows.registry import workflow_classes
from workflows.signed_approval import RequireSignedApprovals
from workflows.update_audit import AuditRefusedUpdates

#: Every process of the registry (workflows/registry.py) and the workflows that serve them.
WORKFLOWS: Sequence[type] = workflow_classes()
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
    #: BATON_APPROVAL_TRUST: every run on the worker requires signed approvals
    approval_trust: ApprovalTrust | None = None
    #: BATON_APPROVAL_SEAL_KEY: opens approval tokens that clients sealed to the workers
    approval_seal_key: Any = None
    router: Router | None = None
    #: the tools agents may call (activities/tools.py); add toolsets before the worker starts
    tools: ToolActivities | None = None
    switch: KillSwitch | None = None
    #: the knowledge layer's embeddings client (BATON_EMBEDDINGS_BASE_URL); None: ``openai``
    embeddings: AsyncOpenAI | None = None
    #: writes the approval Updates a validator refused (set by the first build_worker)
    refused_updates: RefusedUpdateWriter | None = None
    #: the MCP servers of BATON_MCP_CONFIG (their credentials stay here, on the worker)
    mcp: McpToolbox | None = None

    @property
    def embeddings_client(self) -> AsyncOpenAI:
        return self.embeddings or self.openai

    async def close(self) -> None:
        await self.openai.close()
        if self.embeddings is not None:
            await self.embeddings.close()
        if self.router is not None:
            await self.router.aclose()
        # the OPA REST client holds a session; the webhook notifier may own an httpx client
        for part in (self.policy, self.notifier):
            aclose = getattr(part, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.refused_updates is not None:  # writes to the ledger: before the database goes
            await self.refused_updates.drain()
        decision_log = getattr(self.policy, "decision_log", None)
        if decision_log is not None:  # flushes to the ledger: before the database goes
            await decision_log.aclose()
        self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    # installed extensions (entry points "baton.extensions") and explicitly registered ones:
    # their actions and agents become activities here, their processes workflows
    added = extensions.load()
    db = Database(settings.database_url)
    # the schema's migrations (activities/schema.py): a new database is built, an older one
    # upgraded, one an older Baton made with create_all adopted with every row kept
    migrated = upgrade_schema(db)
    if migrated.changed:
        logging.getLogger("baton.worker").info(
            "database schema %s -> %s (applied %s%s)",
            migrated.before or "not migrated",
            migrated.after,
            ", ".join(migrated.applied),
            "; adopted a pre-migration database" if migrated.adopted else "",
        )
    ledger = AuditLedger(db)
    ledger.observer = observe_audit  # agent calls, tokens, cost, policy decisions as metrics
    # max_retries=0: Temporal owns retries, so every attempt is visible in the workflow history.
    llm = AsyncOpenAI(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key, max_retries=0
    )
    policy = build_engine(
        settings.opa_url,
        settings.policy_dir,
        when_unavailable=settings.policy_unavailable,
        max_wait_seconds=settings.policy_max_wait_seconds,
        extra_dirs=added.policy_dirs,
    )
    # Every decision, in OPA's decision-log format, to the ledger's chain (and to
    # BATON_DECISION_LOG_URL when set): activities/decision_log.py.
    policy.decision_log = DecisionLogger(ledger, settings.decision_log_config())  # type: ignore[attr-defined]
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
        policy_dir=settings.policy_dir,
    )
    catalogue = load_catalogue(settings.model_catalogue, settings.openai_base_url)
    router = Router(
        agents,
        catalogue,
        caps=tenant_caps(settings.policy_dir),
        api_key=settings.openai_api_key,
        # models with their own key name the variable holding it (Router refuses a missing one)
        api_keys={
            m.api_key_env: os.environ[m.api_key_env]
            for m in catalogue.models
            if m.api_key_env and os.environ.get(m.api_key_env)
        },
        timeout_seconds=settings.llm_timeout_seconds,
    )
    agents.router = router  # agents the catalogue lists under "agents" are routed too
    for agent in added.agents.values():  # an extension's agent is routed by its task class
        if agent.task_class is None:
            continue
        if agent.task_class not in catalogue.task_classes:
            log.warning(
                "agent %s: the model catalogue %s has no task class %r (it has %s): the agent "
                "is not routed and asks the worker's model (BATON_MODEL)",
                agent.name,
                settings.model_catalogue,
                agent.task_class,
                ", ".join(sorted(catalogue.task_classes)),
            )
            continue
        catalogue.agents[agent.role] = agent.task_class
    audit = AuditActivities(ledger)
    notifier = build_notifier(settings, db, ledger)
    notify = NotifyActivities(notifier, inbox_url=settings.inbox_url)
    canary = Canary(db, ledger)
    embeddings = llm
    if settings.embeddings_base_url and settings.embeddings_base_url != settings.openai_base_url:
        embeddings = AsyncOpenAI(
            base_url=settings.embeddings_base_url, api_key=settings.openai_api_key, max_retries=0
        )
    knowledge_base = KnowledgeBase(db, ledger, Embedder(embeddings, settings.embedding_model))
    knowledge = KnowledgeActivities(knowledge_base)
    support = SupportActivities(
        router, VectorKnowledgeSource(knowledge_base), db, ledger, policy, switch=switch
    )
    customer = CustomerActivities(db, ledger, policy, switch)
    policy_gate = PolicyGateActivities(ledger, policy)  # every process's preflight
    customer_agents = CustomerAgentActivities.sharing(agents)
    supervisor = SupervisorActivities(ledger, policy, switch)
    payloads = PayloadStore(db)
    tools = ToolActivities(
        ToolRegistry([*builtin_tools(), *customer_tools()]),
        db,
        ledger,
        policy,
        payloads,
        switch,
        knowledge_base,
    )
    # MCP tools as governed tools (activities/mcp_tools.py): credentials are resolved here, from
    # the worker's environment, and never leave it; agents call them through call_tool
    mcp = McpToolbox(
        load_mcp_config(settings.mcp_config, os.environ) if settings.mcp_config else []
    )
    McpToolset(mcp, ledger).register(tools.registry)
    customer_tools_ = CustomerToolActivities(db, payloads)
    agent_turns = AgentTurnActivities(router, payloads, tools.registry)
    close_data = CloseDataActivities(finance, payloads)  # the close's data by reference
    activities = [
        finance.collect_period_data,
        finance.reconcile_transactions,
        close_data.collect_period_data_by_reference,
        close_data.reconcile_stored_period_data,
        policy_gate.evaluate_policies,
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
        knowledge.knowledge_ingest,
        knowledge.knowledge_search,
        knowledge.knowledge_relations,
        customer.check_customer_plan,
        customer.commit_customer_action,
        customer.revert_customer_action,
        customer_tools_.record_customer_plan,
        customer_tools_.customer_plan_outcome,
        customer_agents.plan_customer_onboarding,
        customer_agents.write_intro_email,
        customer_agents.assess_discount,
        customer_agents.plan_onboarding_sequence,
        audit.record_audit,
        notify.notify,
        KillSwitchActivities(switch).kill_switch_status,
        CanaryActivities(canary).evaluate_canary,
        support.triage_ticket,
        support.research_case,
        support.summarize_case,
        support.draft_ticket_update,
        support.apply_ticket_update,
        supervisor.supervisor_check,
        supervisor.supervisor_act,
        tools.call_tool,
        tools.undo_tool,
        agent_turns.agent_turn,
    ]
    auction = AuctionActivities(agents, db, ledger, policy)
    activities += [auction.bid_on_task, auction.check_award, auction.review_document]
    activities += [auction.publish_review, auction.retract_review]
    # orphans found and repaired (activities/orphans.py, workflows/repair.py)
    integrity = IntegrityActivities(db, ledger)
    activities += [integrity.find_run_effects, integrity.find_orphans]
    # what extensions declared (baton/extensions.py), governed like Baton's own
    activities += ExtensionActivities(db, ledger, policy, switch, agents).activities(
        list(added.actions.values()), list(added.agents.values())
    )
    # business-key claims: the check at a run's start, the claim's end (activities/claims.py)
    claims = ClaimActivities(db)
    activities += [
        claims.check_business_key,
        claims.settle_business_key,
        claims.release_business_keys,
    ]
    return Runtime(
        db=db,
        ledger=ledger,
        openai=llm,
        embeddings=None if embeddings is llm else embeddings,
        policy=policy,
        notifier=notifier,
        activities=activities,
        canary=canary,
        approval_trust=settings.approval_trust(),
        approval_seal_key=settings.approval_seal_key(),
        router=router,
        tools=tools,
        switch=switch,
        mcp=mcp,
    )


def checkpoint_writer(settings: Settings, runtime: Runtime) -> CheckpointWriter | None:
    """The audit checkpoint writer (BATON_AUDIT_CHECKPOINT_KEY), or None when not configured."""
    if settings.audit_checkpoint_key_file is None:
        return None
    writer = CheckpointWriter(
        runtime.ledger,
        load_checkpoint_key(settings.audit_checkpoint_key_file),
        open_log(settings.audit_checkpoint_log),
    )
    log.info(
        "audit checkpoints every %ss to %s (key %s)",
        settings.audit_checkpoint_seconds,
        settings.audit_checkpoint_log,
        writer.key_id,
    )
    return writer


def security_warnings(settings: Settings) -> list[str]:
    """What a worker start should warn about: signed approvals while payloads are stored in
    clear (approver names, rationales and the verified claims are readable by anyone who can
    read histories; without a seal key, the approval tokens themselves would be too)."""
    if settings.approval_trust_file is None or settings.encryption_keys:
        return []
    warnings = [
        "signed approvals are on (BATON_APPROVAL_TRUST) but payload encryption is off "
        "(BATON_ENCRYPTION_KEYS unset): approvers, rationales and token claims are readable in "
        "workflow history by anyone who can read histories"
    ]
    if settings.approval_seal_key_file is None:
        warnings.append(
            "approval tokens are not sealed (no seal_key in BATON_APPROVAL_TRUST, no "
            "BATON_APPROVAL_SEAL_KEY): a plain token sent in a decision is written to workflow "
            "history; `baton token init --seal` makes a seal key (see docs/security.md)"
        )
    return warnings


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
    workflows: Sequence[type] = workflow_classes()  # with the extensions' processes
    versioned = options.get("deployment_config")
    if versioned is not None and versioned.use_worker_versioning:
        workflows = [FinanceCloseWorkflow, AutoUpgradeCanaryMonitorWorkflow]
    if runtime.refused_updates is None:
        runtime.refused_updates = RefusedUpdateWriter(runtime.ledger, asyncio.get_running_loop())
    options["interceptors"] = [
        *options.get("interceptors", []),
        AuditRefusedUpdates(runtime.refused_updates.submit),
    ]
    if runtime.approval_trust is not None:
        options["interceptors"] = [
            *options.get("interceptors", []),
            RequireSignedApprovals(runtime.approval_trust, runtime.approval_seal_key),
        ]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=runtime.activities,
        graceful_shutdown_timeout=options.pop("graceful_shutdown_timeout", timedelta(seconds=10)),
        **options,
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    temporal_runtime = prometheus_runtime(settings.metrics_bind) if settings.metrics_bind else None
    tracing = traces_endpoint(settings) is not None
    if tracing:
        opentelemetry.trace.set_tracer_provider(tracer_provider(settings))
        log.info("tracing to %s", traces_endpoint(settings))
    client = await connect_client(
        None if settings.temporal_profile else settings.temporal_address,
        namespace=settings.temporal_namespace,
        profile=settings.temporal_profile,
        payload_codec=settings.payload_codec(),
        runtime=temporal_runtime,
        interceptors=[tracing_interceptor()] if tracing else [],
    )
    runtime = build_runtime(settings)
    if isinstance(runtime.policy, EmbeddedOpaEngine):  # compiled before the first decision
        took = await asyncio.to_thread(runtime.policy.warm)
        log.info("policy bundle compiled in %.1f s", took)
    if runtime.mcp is not None and runtime.mcp.servers:  # listed before the worker polls
        tools = await runtime.mcp.start()
        log.info("MCP: %d tools from %d servers", len(tools), len(runtime.mcp.servers))
    for warning in security_warnings(settings):
        log.warning(warning)
    gauges = None
    if temporal_runtime is not None and runtime.switch is not None:
        gauges = StateGauges(
            temporal_runtime.metric_meter,
            client,
            runtime.db,
            runtime.switch,
            task_queue=settings.task_queue,
        )
        log.info("Prometheus metrics on http://%s/metrics", settings.metrics_bind)
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
    checkpoints = checkpoint_writer(settings, runtime)
    try:
        async with worker:
            gauges_task = asyncio.create_task(gauges.run(stop)) if gauges else None
            checkpoint_task = (
                asyncio.create_task(checkpoints.run(stop, settings.audit_checkpoint_seconds))
                if checkpoints is not None
                else None
            )
            await stop.wait()
            log.info("stop requested: finishing running activities, then exiting")
            if gauges_task is not None:
                await gauges_task
            if checkpoint_task is not None:
                await checkpoint_task
    finally:
        await runtime.close()
        if tracing:  # flush the spans still batched
            shutdown = getattr(opentelemetry.trace.get_tracer_provider(), "shutdown", None)
            if shutdown is not None:
                shutdown()


async def serve(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM, on the caller's event loop.

    Both entry points await this: ``python worker.py`` (through ``main``) and ``baton worker``,
    whose CLI already runs an event loop (a second ``asyncio.run`` there raised "cannot be
    called from a running event loop").
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("worker stopped")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def main() -> None:
    configure_logging()
    asyncio.run(serve(Settings.from_env()))


if __name__ == "__main__":
    main()
