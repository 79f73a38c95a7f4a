"""Policy decision benchmark: median and p99 per decision and per engine.

    .venv/bin/python bench/policy_bench.py [--decisions 2000]

Decisions (realistic inputs, the shape the activities send):

* posting     - data.baton.finance.posting.decision, a small adjusting entry (policy/finance)
* grant       - data.baton.finance.approval.decision, a controller approving an entry
* agent-call  - data.baton.base.agent_call.decision, a model call with redaction
* tool-call   - data.baton.base.tool_call.decision, a refund below the approval threshold
* posting (approval) - a 75,000 entry: require_approval with its obligations (not in the goal)

Engines: ``embedded`` (OPA's evaluator in-process, EmbeddedOpaEngine.evaluate_sync: what a
worker runs), ``regorus`` (the cross-check engine) and ``rest`` (OpaRestEngine through
opa-python-client against the local OPA-compatible server in this process, over HTTP).

Two floor rows say what no policy can go below on this machine: ``floor: binding, no input``
(a constant rule, no input: the ctypes call and OPA's prepared-query eval) and ``floor: binding,
posting input`` (the same constant rule, given the posting input: the binding hands the input
to Go as JSON text, and decoding it costs per key).

Ends with ``embedded_max_median_us=N``: the slowest median of posting, grant, agent-call and
tool-call on the embedded engine, in whole microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POLICY_DIR = REPO / "policy"

POSTING = {
    "action": "post_journal_entry",
    "tenant": "acme",
    "period": {"id": "2026-10", "status": "open"},
    "entry": {
        "entry_id": "ADJ-B0042",
        "account": "6100-bank-fees",
        "amount": -12.5,
        "source_ids": ["B0042"],
    },
    "preparer": "agent:reconciler",
    "requested_by": "alice",
    "compliance_flagged": False,
    "amended_by": None,
    "approval": None,
}

DECISIONS: list[tuple[str, str, dict[str, Any], bool]] = [
    # (label, path, input, counts towards embedded_max_median_us)
    ("posting", "baton/finance/posting/decision", POSTING, True),
    (
        "grant",
        "baton/finance/approval/decision",
        {
            "approver": "carol",
            "requested_by": "alice",
            "preparer": "agent:reconciler",
            "amended_by": None,
            "approver_roles": ["finance-controller"],
        },
        True,
    ),
    (
        "agent-call",
        "baton/base/agent_call/decision",
        {
            "action": "llm_call",
            "role": "reconciler",
            "tenant": "acme",
            "model": {
                "endpoint": "http://127.0.0.1:8765/v1",
                "name": "baton-rules-not-an-llm",
                "region": "eu",
            },
            "spent_today_usd": 1.25,
            "estimated_cost_usd": 0.4,
            "now": "2026-10-30T09:15:00Z",
        },
        True,
    ),
    (
        "tool-call",
        "baton/base/tool_call/decision",
        {
            "tool": "issue_refund",
            "arguments": {"order_id": "O-7", "amount_usd": 60},
            "principal": {"role": "l2_researcher", "tenant": "acme", "requested_by": "alice"},
            "history": {"calls": {"lookup_order": 3}, "total_calls": 4},
            "approval": None,
        },
        True,
    ),
    (
        "posting (approval)",
        "baton/finance/posting/decision",
        {**POSTING, "entry": {**POSTING["entry"], "amount": 75000}},
        False,
    ),
]

FLOOR_PATH = "bench/floor/decision"
FLOOR_POLICY = 'package bench.floor\n\nimport rego.v1\n\ndecision := {"allow": true}\n'


def timed(call: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm up: the first call compiles the query
        call()
    samples = []
    gc.disable()
    try:
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


async def timed_async(call: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(50, n)):
        await call()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run(n: int) -> tuple[list[tuple[str, str, float, float]], int]:
    from activities.policy import EmbeddedOpaEngine, OpaRestEngine, RegorusEngine
    from baton.devstack.opa_server import OpaCompatibleServer

    embedded = EmbeddedOpaEngine(POLICY_DIR)
    regorus = RegorusEngine(POLICY_DIR)
    server = OpaCompatibleServer(POLICY_DIR)
    port = server.start("127.0.0.1", 0)
    rest = OpaRestEngine(f"http://127.0.0.1:{port}")
    rows: list[tuple[str, str, float, float]] = []
    goal: list[float] = []
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            floor_dir = Path(tmp)
            (floor_dir / "floor.rego").write_text(FLOOR_POLICY)
            floor = EmbeddedOpaEngine(floor_dir)
            floors = (
                ("floor: binding, no input", None),
                ("floor: binding, posting input", POSTING),
            )
            for label, document in floors:
                samples = timed(lambda d=document: floor.evaluate_sync(FLOOR_PATH, d), n)
                rows.append((label, "embedded", statistics.median(samples), p99(samples)))
            floor.close()
        for label, path, document, counts in DECISIONS:
            value, _ = embedded.evaluate_sync(path, document)
            if not isinstance(value, dict) or value.get("allow") is not True:
                raise SystemExit(f"{label}: expected an allowed decision, got {value!r}")
            samples = timed(lambda p=path, d=document: embedded.evaluate_sync(p, d), n)
            median = statistics.median(samples)
            rows.append((label, "embedded", median, p99(samples)))
            if counts:
                goal.append(median)
            samples = timed(lambda p=path, d=document: regorus.evaluate_sync(p, d), n)
            rows.append((label, "regorus", statistics.median(samples), p99(samples)))
            samples = loop.run_until_complete(
                timed_async(lambda p=path, d=document: rest.evaluate(p, d), max(200, n // 4))
            )
            rows.append((label, "rest", statistics.median(samples), p99(samples)))
    finally:
        loop.run_until_complete(rest.aclose())
        loop.close()
        server.stop()
        embedded.close()
    return rows, round(max(goal))


def compare(baseline_dir: Path, rounds: int = 10, per_round: int = 150) -> str:
    """Embedded medians of the baseline policies (e.g. an older checkout's policy/) against
    these, interleaved in rounds so both see the same machine load, with OPA trace events (the
    evaluation steps, independent of load). Decisions the baseline lacks are skipped."""
    from opa_bindings import OpaError

    from activities.policy import EmbeddedOpaEngine, PolicyError

    engines = {"before": EmbeddedOpaEngine(baseline_dir), "after": EmbeddedOpaEngine(POLICY_DIR)}
    lines = [
        "| decision | trace events before | after | median µs before | after |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, path, document, _ in DECISIONS:
        events: dict[str, int] = {}
        try:
            for name, engine in engines.items():
                native, _ = engine._engine()
                native.eval_document(path.replace("/", "."), document, trace=True)
                events[name] = len(native.last_trace or [])
                engine.evaluate_sync(path, document)
        except (PolicyError, OpaError):  # not in the baseline
            continue
        samples: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for name, engine in engines.items():
                samples[name] += timed(
                    lambda e=engine, p=path, d=document: e.evaluate_sync(p, d), per_round
                )
        before, after = (statistics.median(samples[k]) for k in ("before", "after"))
        lines.append(
            f"| {label} | {events['before']} | {events['after']} | {before:.0f} | {after:.0f} |"
        )
    for engine in engines.values():
        engine.close()
    return "\n".join(lines)


def table(rows: list[tuple[str, str, float, float]]) -> str:
    lines = ["| decision | engine | median µs | p99 µs |", "|---|---|---:|---:|"]
    for label, engine, median, tail in rows:
        lines.append(f"| {label} | {engine} | {median:.0f} | {tail:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions per row")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="POLICY_DIR",
        help="also compare with these policies (e.g. `git archive <rev> policy | tar -x -C /tmp`)",
    )
    args = parser.parse_args(argv)
    if args.decisions < 1:
        parser.error("--decisions must be >= 1")
    if args.baseline is not None and not args.baseline.is_dir():
        parser.error(f"--baseline {args.baseline} is not a directory")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"policy_bench {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
        f"{os.cpu_count()} cores, load average {load:.2f} at start, "
        f"{args.decisions} decisions per row (REST: {max(200, args.decisions // 4)})\n"
    )
    if args.baseline is not None:
        print(compare(args.baseline) + "\n")
    rows, worst = run(args.decisions)
    print(table(rows))
    print(f"embedded_max_median_us={worst}")


if __name__ == "__main__":
    main()
