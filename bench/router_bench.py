"""Router benchmark: tier-0 accuracy and coverage, routing vs always-strong, router overhead.

    .venv/bin/python bench/router_bench.py          # prints a table, updates bench/results.md

Runs the real triage activity (activities/support.py -> activities/router.py) in an activity
context (``ActivityEnvironment``), with the real embedded OPA policy decision before every model
request, real SQLite charges and audit rows, and the real ``openai`` SDK over HTTP against the
local rule-based model server (NOT an LLM: the "cheap" model is its small vocabulary, the
"strong" one its large vocabulary; see baton/devstack/model_server.py). Prices are the shipped
catalogue's (config/models.json). Data: bench/data/support_tickets.jsonl, 350 labelled tickets
written for this repo by bench/data/generate_tickets.py.

Modes: *routed* (tier-0 rules, then cheap, then strong below min_confidence) and
*always strong* (min_tier=strong on every ticket). Router overhead = activity time minus the time
spent waiting on model HTTP calls (policy decision, budget look-ups, charges, audit rows).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO / "bench" / "data" / "support_tickets.jsonl"
RESULTS = REPO / "bench" / "results.md"
START, END = "<!-- router-bench:start -->", "<!-- router-bench:end -->"


def pct(n: float, d: float) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def run() -> str:
    from temporalio.testing import ActivityEnvironment

    from activities.tier0 import support_triage_rules
    from baton.devstack.model_server import ModelServer
    from baton.settings import Settings
    from worker import build_runtime
    from workflows.contracts.support import Triage, TriageInput

    tickets = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    server = ModelServer()
    server.start("127.0.0.1", 0)
    tmp = Path(tempfile.mkdtemp(prefix="baton-router-bench-"))
    shipped = json.loads((REPO / "config" / "models.json").read_text())
    for m in shipped["models"]:  # the shipped catalogue, pointed at this server's paths
        path = m["endpoint"].split("8765", 1)[1]
        m["endpoint"] = f"{server.base_url}{path}"
    (tmp / "models.json").write_text(json.dumps(shipped))
    settings = dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{tmp / 'bench.db'}",
        openai_base_url=server.url,
        policy_dir=REPO / "policy",
        model_catalogue=tmp / "models.json",
    )
    runtime = build_runtime(settings)
    triage = next(a for a in runtime.activities if getattr(a, "__name__", "") == "triage_ticket")
    env = ActivityEnvironment()
    results: dict[str, list[tuple[dict[str, Any], Triage, float]]] = defaultdict(list)
    try:
        for mode, min_tier in (("routed", "tier0"), ("always strong", "strong")):
            for i, t in enumerate(tickets):
                env.info = dataclasses.replace(
                    ActivityEnvironment.default_info(),
                    workflow_id=f"bench-{mode}-{i}",
                    workflow_run_id="run",
                    workflow_type="SupportCase",
                )
                inp = TriageInput(
                    tenant="globex",
                    case_id=t["id"],
                    subject=t["subject"],
                    body=t["body"],
                    min_tier=min_tier,  # type: ignore[arg-type]
                )
                began = time.perf_counter()
                out = await env.run(triage, inp)
                results[mode].append((t, out, (time.perf_counter() - began) * 1000))
        rule_times = []
        for t in tickets:
            began = time.perf_counter()
            support_triage_rules({"subject": t["subject"], "body": t["body"]})
            rule_times.append((time.perf_counter() - began) * 1e6)
    finally:
        await runtime.close()
        server.stop()
    return report(tickets, results, rule_times)


def report(
    tickets: list[dict[str, Any]],
    results: dict[str, list[tuple[dict[str, Any], Any, float]]],
    rule_times: list[float],
) -> str:
    routed, strong = results["routed"], results["always strong"]
    lines: list[str] = []
    add = lines.append
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    add(f"Command: `.venv/bin/python bench/router_bench.py`; {len(tickets)} tickets "
        f"({dict(Counter(t['difficulty'] for t in tickets))}); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {load:.2f}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")  # fmt: skip
    add("")
    add("**Tier 0 (rules, no model call)**")
    add("")
    add("| difficulty | tickets | tier-0 coverage | tier-0 accuracy on covered |")
    add("|---|---|---|---|")
    for level in ("easy", "medium", "hard", "all"):
        rows = [r for r in routed if level in ("all", r[0]["difficulty"])]
        covered = [r for r in rows if r[1].usage.tier == "tier0"]
        right = sum(r[1].category == r[0]["category"] for r in covered)
        add(f"| {level} | {len(rows)} | {pct(len(covered), len(rows))} | "
            f"{pct(right, len(covered))} ({right}/{len(covered)}) |")  # fmt: skip
    add("")
    add("**Routing vs always the strong model**")
    add("")
    add("| mode | accuracy | answered by tier0 / cheap / strong | total cost (USD) | "
        "cost per ticket (USD) | tokens |")  # fmt: skip
    add("|---|---|---|---|---|---|")
    for mode, rows in (("routed", routed), ("always strong", strong)):
        right = sum(r[1].category == r[0]["category"] for r in rows)
        tiers = Counter(r[1].usage.tier for r in rows)
        cost = sum(r[1].usage.cost_usd for r in rows)
        tokens = sum(r[1].usage.tokens for r in rows)
        add(f"| {mode} | {pct(right, len(rows))} | {tiers['tier0']} / {tiers['cheap']} / "
            f"{tiers['strong']} | {cost:.6f} | {cost / len(rows):.8f} | {tokens} |")  # fmt: skip
    add("")
    covered_ids = {r[0]["id"] for r in routed if r[1].usage.tier == "tier0"}
    t0 = [r for r in routed if r[0]["id"] in covered_ids]
    st = [r for r in strong if r[0]["id"] in covered_ids]
    t0_right = sum(r[1].category == r[0]["category"] for r in t0)
    st_right = sum(r[1].category == r[0]["category"] for r in st)
    st_cost = sum(r[1].usage.cost_usd for r in st)
    add(f"**On the {len(t0)} tickets tier 0 handles**: tier-0 accuracy {pct(t0_right, len(t0))} "
        f"at 0 USD; the strong model {pct(st_right, len(st))} at {st_cost:.6f} USD "
        f"({st_cost / max(1, len(st)):.8f} per ticket).")  # fmt: skip
    add("")
    add("**Router overhead per call** (activity time not spent waiting on the model: policy "
        "decision, budget look-ups, charges and audit rows in SQLite)")  # fmt: skip
    add("")
    add("| measure | median | p95 |")
    add("|---|---|---|")
    by_rules = [r for r in routed if r[1].usage.tier == "tier0"]
    by_model = [r for r in routed if r[1].usage.tier != "tier0"]
    for name, rows in (
        ("routed, answered by tier 0", by_rules),
        ("routed, answered by a model", by_model),
        ("always strong", strong),
    ):
        over = [r[1].usage.overhead_ms for r in rows]
        wall = [r[2] for r in rows]
        if not rows:
            continue
        add(f"| {name}: router overhead (ms) | {statistics.median(over):.2f} | "
            f"{quantile(over, 0.95):.2f} |")  # fmt: skip
        add(f"| {name}: whole activity (ms) | {statistics.median(wall):.2f} | "
            f"{quantile(wall, 0.95):.2f} |")  # fmt: skip
    add(f"| tier-0 rules alone (µs) | {statistics.median(rule_times):.1f} | "
        f"{quantile(rule_times, 0.95):.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    table = asyncio.run(run())
    print(table)
    section = f"{START}\n## Model router (bench/router_bench.py)\n\n{table}\n{END}"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
