"""Soak: many finance-close runs across two worker processes that keep getting SIGKILLed.

    .venv/bin/python bench/soak.py                 # 1,000 runs, 2 workers, a kill every 4-10 s
    .venv/bin/python bench/soak.py --runs 200      # shorter

What runs: the real ``FinanceCloseWorkflow`` and Baton's real activities (SQLite file in WAL
mode shared by both workers, embedded OPA, audit ledger) with the model calls replaced by the
instant stand-ins of bench/stand_ins.py (``InstantAgents``: no model server, deterministic
answers). The mix: 80% plain closes (five small postings), 10% that need a finance
controller's approval (the driver approves as soon as the request is pending), 10% that fail
after posting (``fail_after_posting``) and must compensate. Meanwhile a killer SIGKILLs one of
the two worker processes at random every 4-10 s and starts a new one at once.

Then the phase for memory: ``--waiting`` runs (default 500) are started that each wait for an
approval, and the workers' resident memory is read with all of them open; (RSS with them -
RSS before) / runs = memory per running workflow held in the workers' caches. Then they are
approved and finish.

At the end every started run is checked by bench/invariants.py: closed (nothing stuck),
completed or compensated, no entry posted or reversed twice, every ledger row audited once, the
audit hash chain intact. Prints a table (and writes it to bench/soak_results.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel  # noqa: E402
from temporalio.client import Client, WorkflowFailureError  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from baton.devstack import local  # noqa: E402
from baton.settings import REPO_ROOT, Settings  # noqa: E402
from bench import invariants  # noqa: E402
from bench.seeding import period_names, seed_periods  # noqa: E402
from bench.stand_ins import AGENT_ACTIVITY_NAMES, InstantAgents  # noqa: E402
from workflows.client import BatonClient  # noqa: E402
from workflows.contracts import FinanceCloseInput  # noqa: E402
from workflows.plugin import BatonPlugin  # noqa: E402

R = TypeVar("R")
APPROVAL_AMOUNT = Decimal("1845.00")
RESULTS = REPO_ROOT / "bench" / "soak_results.md"


# -- the worker process ------------------------------------------------------------------------


class SoakAgents(InstantAgents):
    """Instant agents. ``mode`` "mixed": the reconciler adds an entry that needs approval in
    periods ending -11 or -12 (the soak's approval runs), so one worker serves every kind of
    run; "approval": in every period; "plain": never."""

    def __init__(self, ledger: Any, mode: str = "mixed") -> None:
        super().__init__(ledger)
        self.mode = mode

    async def _ask(self, agent: str, payload: BaseModel, *args: Any, **kwargs: Any) -> Any:
        """InstantAgents' answer, with the approval entry in the periods ``mode`` names."""
        period = str(getattr(payload, "period", ""))
        needs = self.mode == "approval" or (
            self.mode == "mixed" and period.endswith(("-11", "-12"))
        )
        self.approval_amount = APPROVAL_AMOUNT if needs else None
        return await super()._ask(agent, payload, *args, **kwargs)


WORKER_OPTIONS: dict[str, Any] = dict(
    max_concurrent_activities=100, max_concurrent_workflow_tasks=50, max_cached_workflows=2000
)


async def worker_main(address: str, task_queue: str, database_url: str, mode: str) -> None:
    """One worker process (``bench/soak.py worker ADDRESS QUEUE DATABASE_URL MODE``): the real
    finance close with SoakAgents in ``mode``, or, with mode "bare", the no-op close shape."""
    from temporalio.worker import Worker

    from bench.loops import BareCloseWorkflow
    from bench.stand_ins import noop
    from worker import build_runtime, build_worker

    client = await Client.connect(address, plugins=[BatonPlugin()])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if mode == "bare":
        bare = Worker(
            client,
            task_queue=task_queue,
            workflows=[BareCloseWorkflow],
            activities=[noop],
            **WORKER_OPTIONS,
        )
        async with bare:
            print("ready", flush=True)
            await stop.wait()
        return

    settings = dataclasses.replace(
        Settings(),
        temporal_address=address,
        task_queue=task_queue,
        database_url=database_url,
        policy_dir=REPO_ROOT / "policy",
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the agents are stand-ins
    )
    runtime = build_runtime(settings)
    agents = SoakAgents(runtime.ledger, mode)
    kept = [a for a in runtime.activities if a.__name__ not in AGENT_ACTIVITY_NAMES]
    runtime = dataclasses.replace(
        runtime,
        activities=[
            *kept,
            agents.propose_adjustments,
            agents.review_compliance,
            agents.write_close_memo,
        ],
    )
    async with build_worker(client, runtime, task_queue=task_queue, **WORKER_OPTIONS):
        print("ready", flush=True)
        await stop.wait()


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Workers:
    address: str
    task_queue: str
    database_url: str
    mode: str = "mixed"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "worker",
                self.address,
                self.task_queue,
                self.database_url,
                self.mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        return proc

    def start(self, count: int) -> None:
        self.procs = [self.spawn() for _ in range(count)]

    def kill_one(self) -> None:
        i = random.randrange(len(self.procs))
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)
        self.kills += 1
        self.procs[i] = self.spawn()

    def rss_kib(self) -> int:
        total = 0
        for proc in self.procs:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class RunRecord:
    workflow_id: str
    kind: str
    seconds: float = 0.0
    outcome: str = ""


async def killer(workers: Workers, stop: asyncio.Event, interval: tuple[float, float]) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), random.uniform(*interval))
        except TimeoutError:
            await asyncio.to_thread(workers.kill_one)


async def one_run(baton: BatonClient, tenant: str, period: str, kind: str) -> RunRecord:
    started = time.monotonic()
    inp = FinanceCloseInput(
        tenant=tenant, period=period, requested_by="alice", fail_after_posting=kind == "fails"
    )
    handle = await baton.start_finance_close(inp)
    record = RunRecord(handle.id, kind)
    if kind == "approval":
        await approve_when_pending(baton, handle.id)
    try:
        await handle.result()
        record.outcome = "completed"
    except WorkflowFailureError as err:
        record.outcome = f"failed: {getattr(err.cause, 'type', None) or err.cause}"
    record.seconds = time.monotonic() - started
    return record


async def patiently(call: Callable[[], Awaitable[R]]) -> R:
    """A query or Update sent while the run's worker is being SIGKILLed can time out; ask
    again (a repeated approval is acknowledged as a duplicate, not recorded twice)."""
    for _ in range(30):
        try:
            return await call()
        except RPCError:
            await asyncio.sleep(1)
    return await call()


async def approve_when_pending(baton: BatonClient, workflow_id: str) -> None:
    while not (await patiently(lambda: baton.status(workflow_id))).pending:
        await asyncio.sleep(0.2)
    await patiently(
        lambda: baton.approve(workflow_id, approver="carol", rationale="soak: approved")
    )


async def drive(
    baton: BatonClient, periods: list[tuple[str, str]], concurrency: int
) -> list[RunRecord]:
    """Run every period's close, ``concurrency`` at a time."""
    queue = list(periods)
    records: list[RunRecord] = []

    def kind_of(period: str) -> str:
        month = period[-2:]
        return (
            "approval" if month in ("11", "12") else "fails" if month in ("09", "10") else "plain"
        )

    async def lane() -> None:
        while queue:
            tenant, period = queue.pop(0)
            records.append(await one_run(baton, tenant, period, kind_of(period)))
            done = len(records)
            if done % 100 == 0:
                print(f"  {done} runs done", flush=True)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return records


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="baton-soak-"))
    database_url = f"sqlite:///{tmp / 'baton.db'}"
    port = local.free_port()
    env = await local.start_dev_server(port=port, existing_path=local.which_in_venv("temporal"))
    from activities.database import Database

    db = Database(database_url)
    db.create_tables()
    # months 01-08 plain, 09-10 fail after posting, 11-12 need an approval
    periods = period_names(args.runs + args.waiting * 6 + 24, first_year=3000)
    seed_periods(db, periods, transactions=20)
    soak_periods = periods[: args.runs]
    waiting_periods = [p for p in periods[args.runs :] if p[1].endswith(("-11", "-12"))]
    waiting_periods = waiting_periods[: args.waiting]

    task_queue = f"soak-{uuid.uuid4().hex[:8]}"
    workers = Workers(f"127.0.0.1:{port}", task_queue, database_url)
    baton = BatonClient(env.client, task_queue=task_queue)
    workers.start(args.workers)
    stop = asyncio.Event()
    kill_task = asyncio.create_task(killer(workers, stop, (args.kill_min, args.kill_max)))
    print(f"soak: {len(soak_periods)} runs, {args.workers} workers, concurrency {args.concurrency}")
    t0 = time.monotonic()
    try:
        records = await drive(baton, soak_periods, args.concurrency)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        await kill_task
    kills = workers.kills

    # memory per running workflow: runs held open (waiting for approval) in the workers' caches
    print(f"memory: {len(waiting_periods)} runs that wait for an approval")
    await asyncio.sleep(2)
    rss_before = workers.rss_kib()
    handles = [
        await baton.start_finance_close(FinanceCloseInput(tenant=t, period=p, requested_by="alice"))
        for t, p in waiting_periods
    ]
    waiting = f"TaskQueue = '{task_queue}' AND BatonApprovalState = 'pending'"
    while (await env.client.count_workflows(waiting)).count < len(handles):
        await asyncio.sleep(2)
    await asyncio.sleep(2)
    rss_with = workers.rss_kib()
    for handle in handles:
        await patiently(
            lambda h=handle: baton.approve(h.id, approver="carol", rationale="soak: approved")
        )
    for handle in handles:
        await handle.result()

    ids = [r.workflow_id for r in records] + [h.id for h in handles]
    report = await invariants.check(env.client, db, ids, timeout=300)
    workers.stop()
    await env.shutdown()
    return render(args, records, elapsed, kills, rss_before, rss_with, len(handles), report)


def render(
    args: argparse.Namespace,
    records: list[RunRecord],
    elapsed: float,
    kills: int,
    rss_before: int,
    rss_with: int,
    waiting: int,
    report: invariants.InvariantReport,
) -> str:
    seconds = [r.seconds * 1000 for r in records]
    unexpected = [
        r
        for r in records
        if (r.kind == "fails") != r.outcome.startswith("failed: InjectedFailure")
        or (r.kind != "fails" and r.outcome != "completed")
    ]
    per_wf = (rss_with - rss_before) / waiting if waiting else 0.0
    rows = [
        ("command", f"`.venv/bin/python bench/soak.py --runs {args.runs}`"),
        ("date", datetime.now(UTC).isoformat(timespec="seconds")),
        ("machine", f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end"),
        (
            "runs",
            f"{len(records)} (plain / approval / fail-and-compensate: "
            + " / ".join(
                str(sum(r.kind == k for r in records)) for k in ("plain", "approval", "fails")
            )
            + ")",
        ),
        (
            "worker processes / SIGKILLs",
            f"{args.workers} / {kills} (one every "
            f"{args.kill_min:g}-{args.kill_max:g} s, restarted at once)",
        ),
        ("concurrency", str(args.concurrency)),
        ("throughput", f"{len(records) / elapsed:.1f} runs/s ({elapsed:.0f} s)"),
        (
            "run latency p50 / p95 / p99 / max",
            f"{statistics.median(seconds):.0f} / {pct(seconds, 0.95):.0f} / "
            f"{pct(seconds, 0.99):.0f} / {max(seconds):.0f} ms",
        ),
        ("unexpected outcomes", str(len(unexpected))),
        (
            "memory per running workflow (worker RSS)",
            f"{per_wf:.0f} KiB ({waiting} runs waiting for approval: "
            f"{rss_before / 1024:.0f} -> {rss_with / 1024:.0f} MiB in {args.workers} workers)",
        ),
        ("invariants", report.summary().replace("\n", "<br>")),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    if unexpected:
        table += "\n\nUnexpected: " + ", ".join(
            f"{r.workflow_id} ({r.kind}: {r.outcome})" for r in unexpected[:10]
        )
    return table


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(worker_main(*sys.argv[2:6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--waiting", type=int, default=500)
    parser.add_argument("--kill-min", type=float, default=4.0)
    parser.add_argument("--kill-max", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="do not write soak_results.md")
    args = parser.parse_args()
    table = asyncio.run(main(args))
    print(table)
    if not args.no_write:
        RESULTS.write_text(
            "# Baton soak\n\n" + (__doc__ or "").split("\n\n", 2)[2] + "\n" + table + "\n"
        )
    if "VIOLATIONS" in table:
        sys.exit(1)


if __name__ == "__main__":
    cli()
