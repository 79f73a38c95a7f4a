"""Where the worker's CPU goes per finance close, vs the bare no-op workflow (needs py-spy).

    .venv/bin/pip install py-spy   # or anywhere on PATH; it is not a Baton dependency
    .venv/bin/python bench/profile_close.py [--py-spy PATH] [--runs 100] [--concurrency 50]

Runs (b) of finance_close_bench.py once per workflow on a tuned dev server while py-spy samples
this process (``--gil``: only the thread holding the GIL, i.e. the Python CPU the GIL-bound worker
spends), then prints milliseconds of GIL time per run by category.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == REPO_ROOT / "bench":
    sys.path[0] = str(REPO_ROOT)

from temporalio.worker import Worker  # noqa: E402

import bench.finance_close_bench as fcb  # noqa: E402
from activities.audit import AuditActivities  # noqa: E402
from activities.finance import FinanceActivities  # noqa: E402
from bench.loops import BareCloseWorkflow  # noqa: E402
from bench.scale import bare_close_runner, close_runner  # noqa: E402
from bench.stand_ins import noop, stand_in_settings  # noqa: E402
from worker import build_runtime, build_worker  # noqa: E402
from workflows.client import BatonClient  # noqa: E402

RATE = 200  # samples per second

# First match wins: Baton's own activity code (with whatever it calls) before SDK layers.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "Baton activities: post_journal_entry (with its audit rows)",
        ("post_journal_entry", "_post (activities/finance", "_record_posting", "_lookup ("),
    ),
    ("Baton activities: collect_period_data", ("collect_period_data", "_collect (activities")),
    ("Baton activities: other audit ledger writes", ("activities/audit.py",)),
    ("Baton activities: other", ("activities/", "bench/stand_ins.py")),
    ("SDK workflow sandbox (per-run instance, per-payload context)", ("workflow_sandbox",)),
    ("payload conversion (pydantic converter)", ("pydantic", "temporalio/converter")),
    ("SDK workflow worker + workflow code", ("temporalio/worker/_workflow", "workflows/", "loops")),
    ("SDK activity worker", ("temporalio/worker/_activity",)),
    ("client (start + result)", ("temporalio/client", "workflows/client")),
]


def categorize(stack: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in stack for n in needles):
            return name
    return "event loop / bridge / other"


async def main(py_spy: str, runs: int, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="baton-profile-"))
    runtime = build_runtime(stand_in_settings(tmp))
    periods = fcb.period_names(runs + 10, first_year=3000)
    fcb.seed_periods(runtime.db, periods)
    bench = fcb.Bench(
        size=fcb.QUICK,
        runtime=runtime,
        finance=fcb.find_activity_owner(runtime, FinanceActivities),
        audit=fcb.find_activity_owner(runtime, AuditActivities),
        recorder=fcb.Recorder(),
        periods=periods[1:],
        loop_period=periods[0],
    )
    setting = next(s for s in fcb.SERVER_SETTINGS if s.throughput)
    env, _, server_pid = await fcb.start_server(setting, tmp)
    client = env.client
    per_run: dict[str, collections.Counter[str]] = {}
    try:
        for kind in ("finance close", "bare activities"):
            queue = f"profile-{uuid.uuid4().hex[:8]}"
            if kind == "finance close":
                baton = BatonClient(client, task_queue=queue)
                worker = build_worker(
                    client,
                    bench.close_runtime(approval=False),
                    task_queue=queue,
                    **fcb.WORKER_OPTIONS,
                )

                one_run = close_runner(baton, bench.next_period)
            else:
                worker = Worker(
                    client,
                    task_queue=queue,
                    workflows=[BareCloseWorkflow],
                    activities=[noop],
                    **fcb.WORKER_OPTIONS,
                )
                one_run = bare_close_runner(client, queue, "profile-bare")

            out = tmp / f"{kind.split()[0]}.txt"
            async with worker:
                await one_run()
                spy = await asyncio.create_subprocess_exec(
                    *[py_spy, "record", "-p", str(os.getpid()), "-r", str(RATE), "--gil"],
                    *["--nonblocking", "--format", "raw", "-o", str(out)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)  # py-spy attaches
                result = await fcb.run_lanes(
                    one_run,
                    fcb.Level(concurrency, runs=runs),
                    kind=kind,
                    server_pid=server_pid,
                )
                spy.send_signal(signal.SIGINT)
                await spy.wait()
            counts: collections.Counter[str] = collections.Counter()
            for line in out.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                counts[categorize(stack)] += int(n)
            per_run[kind] = collections.Counter(
                {k: round(1000 * v / RATE / result.runs, 1) for k, v in counts.items()}
            )
            print(
                f"{kind}: {result.per_second:.1f} runs/s at x{concurrency}; CPU per run: server"
                f" {1000 * result.server_cpu / result.per_second:.0f} ms, this process"
                f" {1000 * result.bench_cpu / result.per_second:.0f} ms",
                flush=True,
            )
    finally:
        await env.shutdown()
        await runtime.close()
        shutil.rmtree(tmp, ignore_errors=True)
    close, bare = per_run["finance close"], per_run["bare activities"]
    print("\n| GIL-held ms per run | finance close | bare | difference |\n|---|---:|---:|---:|")
    for name in sorted(set(close) | set(bare), key=lambda k: -(close[k] - bare[k])):
        print(
            f"| {name} | {close[name]:.1f} | {bare[name]:.1f} | {close[name] - bare[name]:+.1f} |"
        )
    total_c, total_b = sum(close.values()), sum(bare.values())
    print(f"| total | {total_c:.1f} | {total_b:.1f} | {total_c - total_b:+.1f} |")
    sys.stdout.flush()
    os._exit(0)  # docs/architecture.md, "Process exit"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.py_spy, args.runs, args.concurrency))
