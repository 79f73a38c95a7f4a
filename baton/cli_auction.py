"""`baton auction ...`: allocate a batch of document reviews among agent tiers by auction.

    baton auction review --tenant T --batch-id B (--docs FILE.json | --sample) [--tiers FILE.json]
                         [--cost-weight W --latency-weight W --bid-deadline SEC --max-rounds N]
                         [--wait]
    baton auction status WORKFLOW_ID     stage, task being auctioned, allocations so far
    baton auction result WORKFLOW_ID     one line per task: winner, rounds, score, verdict
    baton auction tiers                  the default tiers (a starting point for --tiers)

--docs: a JSON list of tasks ``{"task_id", "requires": [capabilities], "document": {"doc_id",
"title", "text"}}``. --tiers: a JSON list of tiers (see ``baton auction tiers``).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import click

from baton.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    JSON_ANYWAY,
    CliError,
    _client,
    _print_json,
    json_option,
    print_query,
    run,
    start_run,
    wait_for_result,
    wait_option,
    workflow_reader,
)
from baton.settings import Settings

#: The batch `--sample` reviews: each needs a different tier's capability or size.
SAMPLE_TASKS: list[dict[str, Any]] = [
    {
        "task_id": "nda-northwind",
        "requires": ["review:nda"],
        "document": {
            "doc_id": "NDA-2026-117",
            "title": "Mutual NDA with Northwind",
            "text": "Each party keeps the other's confidential information secret for two "
            "years and returns it on request.",
        },
    },
    {
        "task_id": "invoice-4411",
        "requires": ["review:invoice"],
        "document": {
            "doc_id": "INV-2026-4411",
            "title": "Invoice 4411 from Contoso",
            "text": "Consulting services, October: 42 hours at EUR 120. Payment due in 30 "
            "days; a late-payment penalty of 2% per month applies.",
        },
    },
    {
        "task_id": "msa-fabrikam",
        "requires": ["review:contract"],
        "document": {
            "doc_id": "MSA-2026-031",
            "title": "Master services agreement with Fabrikam",
            "text": "The supplier accepts unlimited liability for data loss. The agreement will "
            "automatically renew each year unless cancelled 90 days before the end of term.",
        },
    },
    {
        "task_id": "opinion-export",
        "requires": ["review:legal-opinion"],
        "document": {
            "doc_id": "LEG-2026-009",
            "title": "Opinion on export controls",
            "text": "Counsel's opinion on shipping encryption products to the listed countries; "
            "the customer shall indemnify us against fines.",
        },
    },
]


def _read_list(path: str, what: str) -> list[Any]:
    try:
        value = json.loads(Path(path).read_text())
    except OSError as err:
        raise CliError(f"--{what}: cannot read {path}: {err}", EXIT_USAGE) from None
    except json.JSONDecodeError as err:
        raise CliError(f"--{what}: {path} is not valid JSON ({err})", EXIT_USAGE) from None
    if not isinstance(value, list):
        raise CliError(f"--{what}: {path} must hold a JSON list", EXIT_USAGE)
    return value


def catalogue_tiers(settings: Settings) -> list[Any]:
    """The default tiers on the configured model catalogue's models (BATON_MODEL_CATALOGUE)."""
    from activities.auction import catalogue_tiers as on_catalogue
    from activities.router import CatalogueError, load_catalogue

    try:
        catalogue = load_catalogue(settings.model_catalogue, settings.openai_base_url)
    except CatalogueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    return on_catalogue(catalogue)


def build_input(args: argparse.Namespace, default_tiers: list[Any] | None = None) -> Any:
    from workflows.contracts.auction import DEFAULT_TIERS, DocumentReviewInput

    if bool(args.docs) == bool(args.sample):
        raise CliError("give exactly one of --docs FILE.json and --sample", EXIT_USAGE)
    tasks = SAMPLE_TASKS if args.sample else _read_list(args.docs, "docs")
    tiers = (
        _read_list(args.tiers, "tiers")
        if args.tiers
        else [t.model_dump(mode="json") for t in (default_tiers or DEFAULT_TIERS)]
    )
    rule = {
        k: v
        for k, v in (("cost_weight", args.cost_weight), ("latency_weight", args.latency_weight))
        if v is not None
    }
    return DocumentReviewInput.model_validate(
        {
            "tenant": args.tenant,
            "batch_id": args.batch_id,
            "requested_by": args.requested_by,
            "tiers": tiers,
            "tasks": tasks,
            "rule": rule,
            "bid_deadline_seconds": args.bid_deadline,
            "max_rounds": args.max_rounds,
        }
    )


def print_result(result: Any) -> None:
    print(f"{'TASK':<20} {'STATUS':<10} {'WINNER':<8} {'ROUNDS':>6} {'SCORE':>10}  OUTCOME")
    for a in result.allocations:
        last = a.awards[-1] if a.awards else None
        score = f"{last.score:.6f}" if last is not None and last.score is not None else "-"
        if a.review is not None:
            outcome = f"{a.review.verdict}: {a.review.summary}"
        else:
            outcome = f"ESCALATED ({a.escalation_type}): {a.reason}"
        print(
            f"{a.task_id:<20} {a.status:<10} {a.winner or '-':<8} {len(a.awards):>6} "
            f"{score:>10}  {outcome}"
        )
    print(f"cost: ${result.cost_usd:.6f} ({result.tokens} tokens, bids and reviews)")


async def demo_auction(client: Any, tenant: str, tiers: list[Any] | None = None) -> list[str]:
    """`baton demo`'s auction step: the sample batch, one line per task (a worker must run).
    ``tiers``: the demo passes the catalogue's (``catalogue_tiers``)."""
    from workflows.contracts.auction import DEFAULT_TIERS, AuctionTask, DocumentReviewInput

    inp = DocumentReviewInput(
        tenant=tenant,
        batch_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}",
        requested_by="demo",
        tiers=tiers or DEFAULT_TIERS,
        tasks=[AuctionTask.model_validate(t) for t in SAMPLE_TASKS],
    )
    handle = await client.start_document_review(inp)
    result = await handle.result()
    won = ", ".join(f"{a.task_id} -> {a.winner or 'escalated'}" for a in result.allocations)
    return [
        f"7. document reviews by auction ({handle.id}): {won}",
        f"   {len(result.allocations)} tasks, {result.tokens} tokens, ${result.cost_usd:.4f}"
        f"  -> baton auction result {handle.id}",
    ]


async def cmd_auction_review(args: argparse.Namespace, settings: Settings) -> int:
    inp = build_input(args, None if args.tiers else catalogue_tiers(settings))
    client = await _client(settings)
    start = client.start_document_review(inp, join_existing=args.join)
    return await start_run(start, settings, wait=args.wait, show=print_result)


cmd_auction_status = print_query(
    lambda client, workflow_id: client.document_review_status(workflow_id)
)


async def cmd_auction_result(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    result = await wait_for_result(client.document_review(args.workflow_id))
    if args.json:
        _print_json(result)
    else:
        print_result(result)
    return EXIT_OK


async def cmd_auction_tiers(args: argparse.Namespace, settings: Settings) -> int:
    _print_json(catalogue_tiers(settings))
    return EXIT_OK


auction = click.Group("auction", help="allocate document reviews among agent tiers")


@auction.command("review", help="auction a batch of document reviews")
@click.option("--tenant", required=True)
@click.option("--batch-id", required=True)
@click.option("--requested-by", default="cli")
@click.option("--docs", help="JSON list of tasks")
@click.option("--sample", is_flag=True, help="the built-in batch of four documents")
@click.option("--tiers", help="JSON list of tiers (default: `baton auction tiers`)")
@click.option("--cost-weight", type=float, help="score weight per USD (default 1.0)")
@click.option("--latency-weight", type=float, help="score weight per second (default 0.01)")
@click.option("--bid-deadline", type=float, default=30.0, help="seconds (default 30)")
@click.option("--max-rounds", type=int, default=3, help="auctions per task (default 3)")
@click.option("--join", is_flag=True, help="attach to a running batch instead")
@wait_option("wait and print the allocations")
def auction_review(**params: Any) -> int:
    return run(cmd_auction_review, params)


workflow_reader(auction, "status", "stage, current auction, allocations so far", cmd_auction_status)
workflow_reader(
    auction,
    "result",
    "wait for and print the allocations",
    cmd_auction_result,
    "print the result as JSON",
)


@auction.command("tiers", help="the default agent tiers, as JSON")
@json_option(JSON_ANYWAY)
def auction_tiers(**params: Any) -> int:
    return run(cmd_auction_tiers, params)
