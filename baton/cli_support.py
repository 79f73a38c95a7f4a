"""`baton support ...`: the customer-support queue and its cases (workflows/support.py)."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import click

from baton.cli_common import (
    JSON_ANYWAY,
    CliError,
    _client,
    _print_json,
    json_option,
    run,
    wait_option,
    waiting,
)
from baton.settings import Settings


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts.support import SupportCoordinatorInput
    from workflows.support_client import SupportClient

    inp = SupportCoordinatorInput.model_validate(
        {
            "tenant": args.tenant,
            "name": args.queue,
            "max_parallel": args.max_parallel,
            "budget": {"run_usd": args.run_budget} if args.run_budget is not None else {},
        }
    )
    handle = await SupportClient(await _client(settings)).start_queue(inp)
    print(f"queue {handle.id} is running")
    print(f"web UI: {settings.workflow_url(handle.id)}")
    return 0


async def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts.support import SupportCase
    from workflows.support_client import CaseRefused, SupportClient

    case = SupportCase.model_validate(
        {
            "case_id": args.case_id or f"C-{uuid.uuid4().hex[:8]}",
            "tenant": args.tenant,
            "customer": args.customer,
            "customer_value_usd": args.value,
            "subject": args.subject,
            "body": args.body,
            "priority": args.priority,
        }
    )
    try:
        ack = await SupportClient(await _client(settings)).enqueue(case, queue=args.queue)
    except CaseRefused as err:
        raise CliError(f"refused: {err}") from None
    print(f"enqueued {ack.case_id} at position {ack.position}; case workflow {ack.workflow_id}")
    return 0


async def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.support_client import SupportClient

    support = SupportClient(await _client(settings))
    _print_json(await support.queue_status(args.tenant, args.queue))
    return 0


async def cmd_case(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.support_client import SupportClient

    support = SupportClient(await _client(settings))
    if args.wait:
        _print_json(await waiting(args.workflow_id, support.case_result(args.workflow_id)))
    else:
        _print_json(await support.case_status(args.workflow_id))
    return 0


async def cmd_articles(args: argparse.Namespace, settings: Settings) -> int:
    from activities.support import support_articles
    from baton.cli_knowledge import _Knowledge

    kb = _Knowledge(settings)
    try:
        result = await kb.base.ingest(support_articles(settings.support_articles, args.tenant))
    finally:
        await kb.close()
    print(
        f"ingested {len(result.ingested)} support articles for {args.tenant} into the "
        f"knowledge layer ({len(result.unchanged)} unchanged)"
    )
    return 0


support = click.Group("support", help="customer-support escalation: queue, cases")


@support.command("articles", help="ingest the support articles into the knowledge layer")
@click.option("--tenant", required=True)
def support_articles_command(**params: Any) -> int:
    return run(cmd_articles, params)


@support.command("start", help="start (or attach to) the tenant's support queue")
@click.option("--tenant", required=True)
@click.option("--max-parallel", type=int, default=2)
@click.option("--run-budget", type=float, help="USD per case for model calls")
@click.option("--queue", default="main", help="queue name (several per tenant)")
def support_start(**params: Any) -> int:
    return run(cmd_start, params)


@support.command("enqueue", help="put a case on the queue")
@click.option("--tenant", required=True)
@click.option("--case-id")
@click.option("--customer", required=True)
@click.option("--value", type=float, default=0.0, help="customer value in USD")
@click.option("--subject", required=True)
@click.option("--body", required=True)
@click.option("--priority", type=click.Choice(["P1", "P2", "P3", "P4"]), default="P3")
@click.option("--queue", default="main")
def support_enqueue(**params: Any) -> int:
    return run(cmd_enqueue, params)


@support.command("queue", help="queued, running and finished cases")
@click.option("--tenant", required=True)
@click.option("--queue", default="main")
@json_option(JSON_ANYWAY)
def support_queue(**params: Any) -> int:
    return run(cmd_queue, params)


@support.command("case", help="a case's stage, model tiers, tokens and cost")
@click.argument("workflow_id")
@wait_option("wait for and print the result")
@json_option(JSON_ANYWAY)
def support_case(**params: Any) -> int:
    return run(cmd_case, params)


DEMO_QUEUE = "demo"


async def demo_support(client: Any, settings: Settings, runtime: Any, tenant: str) -> list[str]:
    """`baton demo`'s support step: a P1 refund case of a high-value customer through the
    tenant's `demo` queue; it escalates, and a support lead approves the reply (a worker must
    run)."""
    import time

    from activities.knowledge import Embedder, KnowledgeBase
    from activities.support import support_articles
    from baton.demo_runs import DemoStepFailed, finish_run
    from workflows.contracts.support import SupportCase, SupportCoordinatorInput
    from workflows.support_client import SupportClient

    kb = KnowledgeBase(
        runtime.db, runtime.ledger, Embedder(runtime.embeddings_client, settings.embedding_model)
    )
    await kb.ingest(support_articles(settings.support_articles, tenant))  # unchanged: no-op
    support = SupportClient(client)
    queue = await support.start_queue(SupportCoordinatorInput(tenant=tenant, name=DEMO_QUEUE))
    case = SupportCase(
        case_id=f"C-demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}",
        tenant=tenant,
        customer="Initech",
        customer_value_usd=50000,
        subject="Refund",
        body="Please refund invoice 4411, I was charged twice this month",
        priority="P1",
    )
    ack = await support.enqueue(case, queue=DEMO_QUEUE)
    if not ack.accepted:
        raise DemoStepFailed(f"the queue {queue.id} refused {case.case_id}: {ack.reason}")
    approved = await finish_run(
        client, settings, ack.workflow_id, approver="sam", rationale="Reply checked."
    )
    result = await support.case_result(ack.workflow_id)
    tiers = ", ".join(f"{step} {tier}" for step, tier in result.model_tiers.items())
    return [
        f"10. support case {case.case_id} ({case.priority}, {case.customer}) via queue "
        f"{queue.id} ({ack.workflow_id}): {result.category}, "
        f"{'escalated' if result.escalated else 'not escalated'}; "
        f"{'; '.join(approved) or 'no human needed'}",
        f"   ticket {result.status} v{result.ticket_version}; models: {tiers}; "
        f"{result.tokens} tokens, ${result.cost_usd:.4f}",
        f"   -> baton support case {ack.workflow_id} --wait",
        f"   web UI: {settings.workflow_url(ack.workflow_id)}",
    ]
