"""`baton customer ...`: the customer-onboarding blueprint from the command line.

    baton customer event --customer cust-globex [--event-id ID] [--hosting-region eu]
                         [--not-screened] [--dpa-signed]    put a CRM event in the event table
    baton customer trigger                                  start a run per unhandled event
    baton customer status WORKFLOW_ID                       stage, pending approval, commits
    baton customer result WORKFLOW_ID                       wait for the result

Approvals use the shared commands (`baton approvals list`, `baton approve|reject`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import click

from baton.cli_common import (
    database,
    print_query,
    run,
    runner,
    wait_for_result,
    workflow_reader,
)
from baton.settings import Settings

EXIT_OK, EXIT_FAILED = 0, 1


async def cmd_event(args: argparse.Namespace, settings: Settings) -> int:
    from activities.customer import record_crm_event
    from workflows.contracts.customer import CrmEvent

    event = CrmEvent(
        event_id=args.event_id or f"crm-{uuid.uuid4().hex[:12]}",
        tenant=args.tenant,
        customer_id=args.customer,
        hosting_region=args.hosting_region,
        sanctions_screened=not args.not_screened,
        dpa_signed=args.dpa_signed,
        requested_by=args.requested_by,
        occurred_at=datetime.now(UTC),
    )
    db = database(settings)
    try:
        new = record_crm_event(db, event)
    finally:
        db.dispose()
    print(f"{'recorded' if new else 're-delivered (already recorded)'} CRM event {event.event_id}")
    return EXIT_OK


async def cmd_trigger(args: argparse.Namespace, settings: Settings) -> int:
    from baton.cli_common import _client
    from baton.crm_trigger import dispatch_new_customers

    client = await _client(settings)
    db = database(settings)
    try:
        outcomes = await dispatch_new_customers(client, db)
    finally:
        db.dispose()
    if not outcomes:
        print("no new CRM events")
    for o in outcomes:
        print(f"{o.event_id}: {o.workflow_id}: {o.detail}")
    return EXIT_OK


cmd_status = print_query(lambda client, workflow_id: client.customer_onboarding_status(workflow_id))


async def cmd_result(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.client import WorkflowFailureError

    from baton.cli_common import _client

    client = await _client(settings)
    try:
        result = await wait_for_result(client.customer_onboarding(args.workflow_id))
    except WorkflowFailureError as err:
        cause = err.cause
        print(f"{args.workflow_id} failed: {getattr(cause, 'message', cause)}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return EXIT_OK
    print(f"{result.customer_id}: plan {[s.kind for s in result.plan.steps]}")
    print(f"  rationale: {result.plan.rationale}")
    for c in result.committed:
        approved = f" (approved by {', '.join(c.approved_by)})" if c.approved_by else ""
        print(f"  committed {c.commit_id} {c.kind}: {c.summary}{approved}")
    print(f"  sources: {', '.join(result.sources)}")
    return EXIT_OK


customer = click.Group("customer", help="customer onboarding (the brief's blueprint)")


@customer.command("event", help='put a "new high-value customer" event in the CRM')
@click.option("--tenant", default="acme")
@click.option("--customer", required=True, help="customer entity id, e.g. cust-globex")
@click.option("--event-id", help="the CRM's event id (default: a new one)")
@click.option("--hosting-region", default="eu")
@click.option("--not-screened", is_flag=True, help="sanctions screening not done")
@click.option("--dpa-signed", is_flag=True)
@click.option("--requested-by", default="crm:trigger")
def customer_event(**params: Any) -> int:
    return run(cmd_event, params)


customer.command("trigger", help="start a run for every new CRM event (idempotent)")(
    runner(cmd_trigger)
)


workflow_reader(customer, "status", "stage, pending approval, commits", cmd_status)
workflow_reader(
    customer, "result", "wait for a run's result", cmd_result, "print the result as JSON"
)


async def copy_seed_customer(kb: Any, tenant: str, template: str, suffix: str) -> str:
    """Seed the knowledge layer, then copy seed customer ``template`` (its entity tree and CRM
    notes) under ids ending in ``-<suffix>``: a new customer, so a new business key."""
    from activities.knowledge_seed import SEED_DOCUMENTS, seed_knowledge
    from workflows.contracts.knowledge import Entity

    await seed_knowledge(kb)
    tree = kb.store.related(tenant, template)
    renamed = {e.entity_id: f"{e.entity_id}-{suffix}" for e in [tree.root, *tree.descendants]}
    kb.store.upsert_entities(
        [
            Entity.model_validate(
                {
                    **e.model_dump(),
                    "entity_id": renamed[e.entity_id],
                    "parent_id": renamed.get(e.parent_id) if e.parent_id else None,
                }
            )
            for e in [tree.root, *tree.descendants]
        ]
    )
    notes = [
        d.model_copy(update={"doc_id": f"{d.doc_id}-{suffix}", "entity_id": renamed[template]})
        for d in SEED_DOCUMENTS
        if d.entity_id == template
    ]
    await kb.ingest(notes)
    return renamed[template]


async def demo_customer(client: Any, settings: Settings, runtime: Any, tenant: str) -> list[str]:
    """`baton demo`'s customer step: a "new high-value customer" CRM event for a new copy of the
    seed customer cust-globex, the CRM trigger starts the onboarding, a sales manager approves
    the discount exception (a worker must run)."""
    import time

    from activities.customer import record_crm_event
    from activities.knowledge import Embedder, KnowledgeBase
    from baton.crm_trigger import dispatch_new_customers
    from baton.demo_runs import DemoStepFailed, finish_run
    from workflows.contracts.customer import CrmEvent

    kb = KnowledgeBase(
        runtime.db, runtime.ledger, Embedder(runtime.embeddings_client, settings.embedding_model)
    )
    suffix = f"demo{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"
    customer = await copy_seed_customer(kb, tenant, "cust-globex", suffix)
    event = CrmEvent(
        event_id=f"crm-{suffix}",
        tenant=tenant,
        customer_id=customer,
        hosting_region="eu",
        sanctions_screened=True,
        requested_by="crm:trigger",
        occurred_at=datetime.now(UTC),
    )
    await asyncio.to_thread(record_crm_event, runtime.db, event)
    outcomes = await dispatch_new_customers(client, runtime.db)
    mine = next((o for o in outcomes if o.event_id == event.event_id), None)
    if mine is None or not mine.started:
        raise DemoStepFailed(f"the CRM trigger did not start a run for {event.event_id}: {mine}")
    approved = await finish_run(
        client, settings, mine.workflow_id, approver="oscar", rationale="3-year deal."
    )
    result = await client.customer_onboarding(mine.workflow_id).result()
    kinds: dict[str, int] = {}
    for c in result.committed:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    discount = next((c.summary for c in result.committed if c.kind == "discount"), "no discount")
    return [
        f"9. customer onboarding of {customer} from CRM event {event.event_id} via the CRM "
        f"trigger ({mine.workflow_id}): {'; '.join(approved) or 'no plan exception'}",
        f"   committed {len(result.committed)} actions "
        f"({', '.join(f'{n} x {k}' for k, n in kinds.items())}): {discount}; "
        f"{len(result.sources)} sources, {result.tokens} tokens, ${result.cost_usd:.4f}",
        f"   -> baton customer result {mine.workflow_id}",
        f"   web UI: {settings.workflow_url(mine.workflow_id)}",
        *await asyncio.to_thread(tool_call_lines, runtime.db, mine.workflow_id),
    ]


def tool_call_lines(db: Any, workflow_id: str) -> list[str]:
    """The demo's account of an agent that acts: each governed tool call of the run (the
    onboarding executor carrying out the plan), its policy verdict and its outcome. In the web
    UI each is a ``call_tool`` activity whose summary names the tool."""
    from activities.tools import tool_calls_of
    from workflows.contracts.tools import ToolCallOutcome

    calls = sorted(tool_calls_of(db, workflow_id), key=lambda c: c.created_at)
    if not calls:
        return []
    lines = [
        f"   agent that acts: onboarding_executor carried out the plan in {len(calls)} governed "
        "tool calls (each a call_tool activity named by its tool in the web UI):"
    ]
    for call in calls:
        outcome = ToolCallOutcome.model_validate_json(call.outcome_json)
        data = outcome.data or {}
        if not outcome.ran:
            did = "not run: " + "; ".join(outcome.decision.reasons)
        elif outcome.is_error:
            did = "refused by the tool"
        else:
            did = f"{data.get('action_key', '?')} committed as {data.get('commit_id', '?')}"
        lines.append(f"   - tool {call.tool}: policy {call.verdict} -> {did}")
    return lines
