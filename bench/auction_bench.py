"""Auction benchmark: the award rule's cost, and document-review batches end to end.

    .venv/bin/python bench/auction_bench.py [--batches 5]

Prints a markdown table (not a timed test). Part 1 times the pure ``award()`` for 3, 10 and 100
bidders. Part 2 starts a Temporal dev server (the venv's `temporal`, free port, tuned like the
local stack), the local rule-based model server and a worker on a fresh SQLite file, runs the
built-in sample batch (4 tasks, 3 tiers) ``--batches`` times one after the other, and reports
the wall time per batch and per task (bids in parallel + award + award policy + review +
publish + audit), and how well the winning bids predicted the work: expected vs actual tokens
and cost at the tier's price.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script: the project's packages are at the root


from baton.cli_auction import SAMPLE_TASKS  # noqa: E402
from baton.devstack import local  # noqa: E402
from baton.devstack.model_server import ModelServer  # noqa: E402
from baton.settings import Settings  # noqa: E402
from workflows.auction import award  # noqa: E402
from workflows.client import BatonClient  # noqa: E402
from workflows.contracts.auction import (  # noqa: E402
    DEFAULT_TIERS,
    AuctionTask,
    AwardRule,
    Bid,
    DocumentReviewInput,
)


def award_timing(n: int, repeats: int = 2000) -> float:
    """Median microseconds of one award() over n bidders."""
    task = AuctionTask.model_validate(SAMPLE_TASKS[2])
    bids = [
        Bid(
            bidder=f"tier-{i:03d}",
            task_id=task.task_id,
            round=1,
            capabilities=["review:contract"] if i % 3 else ["review:nda"],
            expected_tokens=1000 + i,
            expected_cost_usd=0.001 * ((i * 7919) % 97),
            expected_latency_ms=100.0 * ((i * 104729) % 89),
        )
        for i in range(n)
    ]
    rule = AwardRule()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        award(task, bids, rule)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


async def end_to_end(batches: int) -> list[str]:
    from worker import build_runtime, build_worker

    tmp = Path(tempfile.mkdtemp(prefix="baton-auction-bench-"))
    model = ModelServer()
    model.start("127.0.0.1", 0)
    settings = dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{tmp / 'baton.db'}",
        policy_dir=REPO_ROOT / "policy",
        openai_base_url=model.url,
    )
    env = await local.start_dev_server()
    runtime = build_runtime(settings)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    client = BatonClient(env.client, task_queue=queue)
    walls: list[float] = []
    token_err: list[float] = []
    cost_err: list[float] = []
    winners: dict[str, int] = {}
    try:
        async with build_worker(env.client, runtime, task_queue=queue):
            for i in range(batches):
                inp = DocumentReviewInput.model_validate(
                    {
                        "tenant": "acme",
                        "batch_id": f"bench-{i}-{uuid.uuid4().hex[:6]}",
                        "requested_by": "bench",
                        "tiers": [t.model_dump() for t in DEFAULT_TIERS],
                        "tasks": SAMPLE_TASKS,
                    }
                )
                t0 = time.perf_counter()
                result = await (await client.start_document_review(inp)).result()
                walls.append(time.perf_counter() - t0)
                for a in result.allocations:
                    assert a.review is not None and a.winner is not None, a
                    winners[a.winner] = winners.get(a.winner, 0) + 1
                    bids = {b.bidder: b for b in a.awards[-1].ranked}
                    expected_cost = bids[a.winner].expected_cost_usd
                    actual_cost = a.review.cost_at_tier_price_usd
                    cost_err.append(abs(expected_cost - actual_cost) / actual_cost * 100)
                # expected tokens are in the auction.bid audit rows of the winners
                for row in runtime.ledger.trail(inp.workflow_id()):
                    if row.action != "auction.bid":
                        continue
                    detail = json.loads(row.detail_json)
                    for a in result.allocations:
                        if a.task_id == detail["task_id"] and a.winner == detail["bidder"]:
                            assert a.review is not None
                            actual = a.review.usage.total_tokens
                            token_err.append(abs(detail["expected_tokens"] - actual) / actual * 100)
    finally:
        await runtime.close()
        await env.shutdown()
        model.stop()
    tasks = len(SAMPLE_TASKS)
    return [
        f"| batch of {tasks} reviews, 3 tiers, wall (median of {batches}) "
        f"| {statistics.median(walls) * 1000:.0f} ms |",
        f"| per task: 3 bids in parallel + award + policy + review + publish "
        f"| {statistics.median(walls) / tasks * 1000:.0f} ms |",
        f"| winning bid's expected tokens vs actual, mean abs error "
        f"| {statistics.mean(token_err):.1f}% (n={len(token_err)}) |",
        f"| winning bid's expected cost vs actual at tier price, mean abs error "
        f"| {statistics.mean(cost_err):.1f}% (n={len(cost_err)}) |",
        f"| wins by tier | {', '.join(f'{k} {v}' for k, v in sorted(winners.items()))} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = ["| measure | value |", "|---|---:|"]
    for n in (3, 10, 100):
        rows.append(f"| award() over {n} bidders, median | {award_timing(n):.1f} µs |")
    rows += asyncio.run(end_to_end(args.batches))
    print(
        f"`.venv/bin/python bench/auction_bench.py --batches {args.batches}`, "
        f"{os.cpu_count()} cores, load average at start {load:.2f}\n"
    )
    print("\n".join(rows))
    sys.stdout.flush()
    os._exit(0)  # temporalio 1.35 can crash at exit (docs/architecture.md, "Process exit")


if __name__ == "__main__":
    main()
