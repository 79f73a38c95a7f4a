"""Baton on Temporal: what a governed step costs, how many closes per second, approval latency.

    .venv/bin/python bench/finance_close_bench.py [--quick]

Starts its own Temporal dev servers (the `temporal` CLI from the venv, free ports), one after
the other, and a worker in this process; SQLite in a fresh temp dir. Prints a markdown table and
writes it to bench/results.md (--quick: bench/results-quick.md). bench/README.md says what each
number means.

(a) per-step cost, sequential, inside ONE workflow run that loops: a no-op activity, a local one,
    the governed step (the real post_journal_entry) and the naive three-activity gate, on the
    default dev server, the tuned one (history.transferProcessorMaxPollRPS=1000), and the tuned
    one with a database file as `make up` runs it (without and with SQLite WAL pragmas); plus the
    same work called directly without Temporal;
(b) finance-close-shaped runs per second (the real FinanceCloseWorkflow, instant agents) at 1, 50
    and 200 concurrent runs vs a workflow with the same activities, all no-ops (tuned server);
(c) approval round trip: Update sent -> next activity started, and the Update round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; the project's packages live at the repo root.
if sys.path and Path(sys.path[0]).resolve() == REPO_ROOT / "bench":
    sys.path[0] = str(REPO_ROOT)
elif str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from activities.audit import AuditActivities  # noqa: E402
from activities.finance import POSTING_POLICY, FinanceActivities, posting_policy_input  # noqa: E402
from baton.devstack import local  # noqa: E402
from bench import scale  # noqa: E402
from bench.loops import (  # noqa: E402
    BareCloseWorkflow,
    StepLoopWorkflow,
    bank_fee_posting,
    naive_audit_batch,
    naive_policy_batch,
)
from bench.recorder import Mark, Recorder, TimingInterceptor  # noqa: E402
from bench.seeding import period_names, seed_periods  # noqa: E402
from bench.stand_ins import (  # noqa: E402
    AGENT_ACTIVITY_NAMES,
    SMALL_ENTRIES,
    InstantAgents,
    LoopInput,
    NoopInput,
    PlainPosting,
    noop,
    stand_in_settings,
)
from worker import Runtime, build_runtime, build_worker  # noqa: E402
from workflows.client import BatonClient  # noqa: E402
from workflows.contracts import (  # noqa: E402
    AuditBatch,
    AuditEvent,
    ClosePeriodInput,
    CollectPeriodInput,
    ComplianceInput,
    FinanceCloseInput,
    MemoInput,
    PolicyBatch,
    PolicyQuery,
    PostEntryInput,
    ProposeAdjustmentsInput,
    ReconcileInput,
)

TUNING = list(local.TUNED_DEV_SERVER)
WAL = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]


@dataclass(frozen=True)
class ServerSetting:
    name: str
    extra: list[str]
    #: a persistent SQLite file for Temporal's state, as `make up` does (else in-memory)
    db_file: bool = False
    modes: tuple[str, ...] = ("bare", "local", "governed", "plain", "naive")  # (a)
    approvals: bool = True  # (c)
    throughput: bool = False  # (b)


SERVER_SETTINGS = [
    ServerSetting("default", []),
    ServerSetting("tuned", TUNING, throughput=True),
    # what `make up` runs (temporal-dev/stack.py), and the same with SQLite WAL pragmas
    ServerSetting("tuned, file", TUNING, True, ("bare", "governed", "plain"), approvals=False),
    ServerSetting(
        "tuned, file, WAL", TUNING + WAL, True, ("bare", "governed", "plain"), approvals=False
    ),
]


# Worker options a user would set too; the same for every worker in this bench. Not higher: at
# 200/200 the GIL-bound worker accepted more tasks than it could run, so at 200 concurrent closes
# activities sat in the worker > 20 s and the agents' 20 s heartbeat timeout fired (retries,
# no gain in runs/s); with these the backlog waits in the server's task queue instead.
WORKER_OPTIONS: dict[str, Any] = {
    "max_concurrent_activities": 100,
    "max_concurrent_workflow_tasks": 50,
    "max_cached_workflows": 1000,
}
MODES = [
    ("bare", "bare activity (no-op)", 1, "bench_noop"),
    ("local", "local activity (no-op), for reference", 0, "bench_noop"),
    ("governed", "governed step: real post_journal_entry", 1, "post_journal_entry"),
    (
        "plain",
        "plain activity: the same posting, no policy/kill switch/audit",
        1,
        "bench_plain_post",
    ),
    ("naive", "naive gate: evaluate_policies + no-op post + record_audit", 3, "evaluate_policies"),
]
APPROVAL_AMOUNT = Decimal("1845.00")


@dataclass(frozen=True)
class Level:
    """One concurrency level of (b): keep ``concurrency`` runs in flight until ``runs`` have
    been started, or (``runs=None``) until ``seconds`` have passed."""

    concurrency: int
    runs: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Size:
    steps: int  # (a) measured steps per mode and server setting
    chunks: int  # (a) ... run in this many round-robin pieces
    direct: int  # (a) direct calls
    levels: tuple[Level, ...]  # (b)
    approvals: int  # (c) on the tuned server; a third of it on the others
    direct_closes: int  # (b) direct: closes done by calling the activities without Temporal
    policy_decisions: int  # (d) per engine
    process_levels: tuple[tuple[int, int], ...]  # (e) (concurrency, runs), for 1 and 2 processes
    waiting_runs: int  # (f)


FULL = Size(
    steps=200,
    chunks=4,
    direct=200,
    levels=(Level(1, seconds=6.0), Level(50, runs=100), Level(200, runs=200)),
    approvals=30,
    direct_closes=10,
    policy_decisions=300,
    process_levels=((1, 20), (50, 100), (200, 200)),
    waiting_runs=1000,
)
QUICK = Size(
    steps=30,
    chunks=2,
    direct=60,
    levels=(Level(1, seconds=2.0), Level(50, runs=50)),
    approvals=6,
    direct_closes=3,
    policy_decisions=50,
    process_levels=((1, 5), (50, 50)),
    waiting_runs=100,
)


# -- small helpers --------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000.0


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def diffs(starts: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


def temporal_binary() -> str:
    found = local.temporal_binary()
    if not found:
        sys.exit("the `temporal` CLI is missing: run `make install`")
    return found


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dev_server_pid(port: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in argv and str(port).encode() in argv:
            return int(proc.name)
    return None


def machine_facts(command: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cli = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [
        ("command", f"`{command}`"),
        ("date", datetime.now().astimezone().isoformat(timespec="seconds")),
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("cpu", cpu),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("temporal CLI", cli),
        ("temporalio", version("temporalio")),
        ("load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# -- the bench's Baton: real activities on SQLite, agents replaced by instant stand-ins -------


@dataclass
class Bench:
    size: Size
    runtime: Runtime
    finance: FinanceActivities
    audit: AuditActivities
    recorder: Recorder
    periods: list[tuple[str, str]]
    loop_period: tuple[str, str]
    next_period: Callable[[], tuple[str, str]] = field(init=False)
    plain: PlainPosting = field(init=False)

    @classmethod
    def of(cls, size: Size, runtime: Runtime, periods: list[tuple[str, str]]) -> Bench:
        """A bench on ``runtime``'s activities: the first period loops, the others are taken in
        turn."""
        return cls(
            size=size,
            runtime=runtime,
            finance=find_activity_owner(runtime, FinanceActivities),
            audit=find_activity_owner(runtime, AuditActivities),
            recorder=Recorder(),
            periods=periods[1:],
            loop_period=periods[0],
        )

    def __post_init__(self) -> None:
        self.plain = PlainPosting(self.runtime.db)
        it = iter(self.periods)

        def take() -> tuple[str, str]:
            try:
                return next(it)
            except StopIteration:
                raise RuntimeError("the bench ran out of seeded periods; seed more") from None

        self.next_period = take

    def close_runtime(self, *, approval: bool) -> Runtime:
        """build_runtime's activities with the three agents swapped for instant stand-ins."""
        agents = InstantAgents(
            self.runtime.ledger, approval_amount=APPROVAL_AMOUNT if approval else None
        )
        kept = [a for a in self.runtime.activities if a.__name__ not in AGENT_ACTIVITY_NAMES]
        return dataclasses.replace(
            self.runtime,
            activities=[
                *kept,
                agents.propose_adjustments,
                agents.review_compliance,
                agents.write_close_memo,
            ],
        )


def find_activity_owner(runtime: Runtime, cls: type) -> Any:
    for fn in runtime.activities:
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, cls):
            return owner
    raise RuntimeError(f"build_runtime() registered no {cls.__name__}")


# -- (a) per-step cost ------------------------------------------------------------------------


@dataclass
class StepResult:
    setting: str
    mode: str
    intervals: list[float]
    #: per step, the time its activities ran inside the worker (interceptor start -> end, summed
    #: over the step's activities): the step's own work as it runs in the loop, caches and all
    busy: list[float] = field(default_factory=list)


def busy_per_step(recorder: Recorder, workflow_id: str, lead: str) -> list[float]:
    """Per step (a step starts with its ``lead`` activity): how long its activities ran."""
    marks = sorted(
        (m for m in recorder.marks if m.workflow_id == workflow_id), key=lambda m: m.started
    )
    steps: list[float] = []
    for m in marks:
        if m.activity_type == lead:
            steps.append(0.0)
        if steps and m.ended is not None:
            steps[-1] += m.ended - m.started
    return steps


async def measure_steps(client: Client, bench: Bench, setting: ServerSetting) -> list[StepResult]:
    """Each mode's loop runs in ``chunks`` pieces, round-robin with the other modes, so that
    background load drifting during the run hits every mode alike."""
    task_queue = f"bench-steps-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[StepLoopWorkflow],
        activities=[
            noop,
            bench.finance.post_journal_entry,
            bench.finance.evaluate_policies,
            bench.audit.record_audit,
            bench.plain.plain_post,
        ],
        interceptors=[TimingInterceptor(bench.recorder)],
        **WORKER_OPTIONS,
    )
    tenant, period = bench.loop_period
    modes = [m for m in MODES if m[0] in setting.modes]
    intervals: dict[str, list[float]] = {mode: [] for mode, *_ in modes}
    busy: dict[str, list[float]] = {mode: [] for mode, *_ in modes}
    chunks = bench.size.chunks
    async with worker:
        for chunk in range(-1, chunks):  # chunk -1: a short warm-up per mode
            for mode, _, _, lead in modes:
                steps = 5 if chunk < 0 else bench.size.steps // chunks + 1
                workflow_id = f"bench-steps/{setting.name}/{mode}/{uuid.uuid4().hex[:8]}"
                bench.recorder.clear()
                await client.execute_workflow(
                    StepLoopWorkflow.run,
                    LoopInput(mode=mode, steps=steps, tenant=tenant, period=period),  # type: ignore[arg-type]
                    id=workflow_id,
                    task_queue=task_queue,
                )
                starts = bench.recorder.starts(workflow_id, lead)
                assert len(starts) == steps, (mode, len(starts), steps)
                if chunk >= 0:
                    intervals[mode] += diffs(starts)
                    busy[mode] += busy_per_step(bench.recorder, workflow_id, lead)[:-1]
    results = [
        StepResult(setting.name, mode, values, busy[mode]) for mode, values in intervals.items()
    ]
    for r in results:
        print(
            f"  {setting.name:16s} {r.mode:9s} median {ms(statistics.median(r.intervals)):6.2f} ms"
            f"  p95 {ms(p95(r.intervals)):6.2f} ms  in worker {ms(_med(r.busy)):6.2f} ms",
            flush=True,
        )
    bench.recorder.clear()
    return results


async def measure_direct(bench: Bench) -> dict[str, list[float]]:
    """The same work without Temporal: the activity functions called in an activity context."""
    env = ActivityEnvironment()
    base = ActivityEnvironment.default_info()
    tenant, period = bench.loop_period
    out: dict[str, list[float]] = {"bare": [], "governed": [], "naive": [], "plain": []}
    tag = uuid.uuid4().hex[:8]

    def request(i: int) -> PostEntryInput:
        return bank_fee_posting(tenant, period, i, f"direct/{tag}/post/{i}")

    for i in range(-10, bench.size.direct):  # 10 warm-up calls (first policy query compiles)
        workflow_id = f"direct/{tag}"
        env.info = dataclasses.replace(
            base, workflow_id=workflow_id, workflow_run_id=tag, activity_id=f"g{i}"
        )
        t0 = time.perf_counter()
        await env.run(noop, NoopInput(step=i))
        t1 = time.perf_counter()
        outcome = await env.run(bench.finance.post_journal_entry, request(i))
        t2 = time.perf_counter()
        assert outcome.decision.verdict == "allow", outcome.decision.reasons
        naive = request(10_000 + i)
        env.info = dataclasses.replace(env.info, activity_id=f"n{i}")
        [decision] = await env.run(
            bench.finance.evaluate_policies, naive_policy_batch(naive, workflow_id)
        )
        await env.run(noop, NoopInput(step=i, label="post"))
        await env.run(
            bench.audit.record_audit,
            naive_audit_batch(naive, workflow_id, tag, i, decision.decision_id),
        )
        t3 = time.perf_counter()
        env.info = dataclasses.replace(env.info, activity_id=f"p{i}")
        await env.run(bench.plain.plain_post, request(20_000 + i))
        t4 = time.perf_counter()
        if i >= 0:
            out["bare"].append(t1 - t0)
            out["governed"].append(t2 - t1)
            out["naive"].append(t3 - t2)
            out["plain"].append(t4 - t3)
    return out


async def measure_direct_close(bench: Bench) -> list[float]:
    """(b)'s work without Temporal: one close's 13 activities called in sequence (no payload
    conversion, no orchestration), with the instant agents; milliseconds of Baton's own work."""
    env = ActivityEnvironment()
    base = ActivityEnvironment.default_info()
    agents = InstantAgents(bench.runtime.ledger)
    fin = bench.finance
    out: list[float] = []
    for k in range(-1, bench.size.direct_closes):  # one warm-up
        tenant, period = bench.next_period()
        wid = f"direct-close/{tenant}/{period}"
        ids = itertools.count()

        def call(fn: Callable[[Any], Any], arg: Any, wid: str = wid, ids: Any = ids) -> Any:
            env.info = dataclasses.replace(
                base, workflow_id=wid, workflow_run_id="direct", activity_id=str(next(ids))
            )
            return env.run(fn, arg)

        t0 = time.perf_counter()
        data = await call(fin.collect_period_data, CollectPeriodInput(tenant=tenant, period=period))
        recon = await call(fin.reconcile_transactions, ReconcileInput(data=data))
        proposal = await call(
            agents.propose_adjustments,
            ProposeAdjustmentsInput(
                tenant=tenant,
                period=period,
                unmatched_bank=recon.unmatched_bank,
                unmatched_ledger=recon.unmatched_ledger,
                duplicate_ledger=recon.duplicate_ledger,
                duplicate_ledger_ids=[e.entry_id for e in recon.duplicate_ledger],
            ),
        )
        drafts = [
            PostEntryInput(
                tenant=tenant,
                period=period,
                entry=e,
                preparer="agent:reconciler",
                requested_by="alice",
                idempotency_key=f"{wid}/post/{e.entry_id}",
            )
            for e in proposal.entries
        ]
        preflight = await call(
            fin.evaluate_policies,
            PolicyBatch(
                queries=[
                    PolicyQuery(
                        policy=POSTING_POLICY,
                        input=posting_policy_input(d, data.period_status),
                        subject=d.entry.entry_id,
                        workflow_id=wid,
                    )
                    for d in drafts
                ]
            ),
        )
        review = await call(
            agents.review_compliance,
            ComplianceInput(
                tenant=tenant, period=period, entries=proposal.entries, decisions=preflight
            ),
        )
        await call(
            agents.write_close_memo,
            MemoInput(
                tenant=tenant,
                period=period,
                matched=len(recon.matches),
                unmatched_bank=len(recon.unmatched_bank),
                unmatched_ledger=len(recon.unmatched_ledger),
                entries=proposal.entries,
                compliance_summary=review.summary,
            ),
        )
        for d in drafts:
            outcome = await call(fin.post_journal_entry, d)
            assert outcome.decision.verdict == "allow", outcome.decision.reasons
        await call(
            fin.close_period, ClosePeriodInput(tenant=tenant, period=period, closed_by="alice")
        )
        await call(
            bench.audit.record_audit,
            AuditBatch(
                events=[
                    AuditEvent(
                        workflow_id=wid, run_id="direct", seq=f"wf/{n}", actor="alice", action=a
                    )
                    for n, a in enumerate(("close.started", "close.completed"), 1)
                ]
            ),
        )
        if k >= 0:
            out.append(time.perf_counter() - t0)
    return out


# -- (b) runs per second ----------------------------------------------------------------------


@dataclass
class Throughput:
    kind: str
    concurrency: int
    runs: int
    elapsed: float
    latencies: list[float]
    server_cpu: float
    bench_cpu: float

    @property
    def per_second(self) -> float:
        return self.runs / self.elapsed


async def run_lanes(
    one_run: Callable[[], Awaitable[None]],
    level: Level,
    *,
    kind: str,
    server_pid: int | None,
) -> Throughput:
    """``level.concurrency`` runs in flight at all times until the level's budget of runs (or
    seconds) is used up; runs/s = runs / (first start -> last completion)."""
    latencies: list[float] = []
    budget = itertools.count()
    cpu0 = proc_cpu_seconds(server_pid) if server_pid else float("nan")
    own0 = time.process_time()
    t0 = time.perf_counter()

    def more() -> bool:
        if level.runs is not None:
            return next(budget) < level.runs
        return time.perf_counter() - t0 < level.seconds

    async def lane() -> None:
        while more():
            started = time.perf_counter()
            await one_run()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(lane() for _ in range(level.concurrency)))
    elapsed = time.perf_counter() - t0
    server_cpu = (proc_cpu_seconds(server_pid) - cpu0) if server_pid else float("nan")
    return Throughput(
        kind,
        level.concurrency,
        len(latencies),
        elapsed,
        latencies,
        server_cpu / elapsed,
        (time.process_time() - own0) / elapsed,
    )


async def measure_throughput(
    client: Client, bench: Bench, server_pid: int | None
) -> list[Throughput]:
    real_queue = f"bench-close-{uuid.uuid4().hex[:8]}"
    bare_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    baton = BatonClient(client, task_queue=real_queue)
    close_runtime = bench.close_runtime(approval=False)

    def real_worker() -> Worker:
        return build_worker(client, close_runtime, task_queue=real_queue, **WORKER_OPTIONS)

    def bare_worker() -> Worker:
        return Worker(
            client,
            task_queue=bare_queue,
            workflows=[BareCloseWorkflow],
            activities=[noop],
            **WORKER_OPTIONS,
        )

    async def one_close() -> None:
        tenant, period = bench.next_period()
        handle = await baton.start_finance_close(
            FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
        )
        result = await handle.result()
        if len(result.posted) != len(SMALL_ENTRIES):
            raise RuntimeError(f"close of {tenant} {period} posted {len(result.posted)} entries")

    one_bare = scale.bare_close_runner(client, bare_queue, "bench-bare")

    results: list[Throughput] = []
    for level in bench.size.levels:
        for kind, worker, one_run in (
            ("finance close", real_worker, one_close),
            ("bare activities", bare_worker, one_bare),
        ):
            async with worker():  # a fresh worker per level: nothing cached from the last one
                await one_run()  # warm-up: sandbox, first policy compile
                r = await run_lanes(one_run, level, kind=kind, server_pid=server_pid)
            results.append(r)
            print(
                f"  {kind:16s} x{level.concurrency:<4d} {r.runs:4d} runs in {r.elapsed:5.1f} s ="
                f" {r.per_second:6.1f} runs/s  (p50 run {ms(statistics.median(r.latencies)):7.1f}"
                f" ms; CPU: server {r.server_cpu:.2f}, bench {r.bench_cpu:.2f} cores)",
                flush=True,
            )
    return results


# -- (c) approval round trip ------------------------------------------------------------------


@dataclass
class Approvals:
    setting: str
    to_next_activity: list[float]
    update_round_trip: list[float]


async def measure_approvals(client: Client, bench: Bench, setting: str, n: int) -> Approvals:
    task_queue = f"bench-approval-{uuid.uuid4().hex[:8]}"
    baton = BatonClient(client, task_queue=task_queue)
    worker = build_worker(
        client,
        bench.close_runtime(approval=True),
        task_queue=task_queue,
        interceptors=[TimingInterceptor(bench.recorder)],
        **WORKER_OPTIONS,
    )
    out = Approvals(setting, [], [])
    async with worker:
        for i in range(-1, n):  # one warm-up
            tenant, period = bench.next_period()
            inp = FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
            wid = inp.workflow_id()

            def flush_done(m: Mark, ended: bool, wid: str = wid) -> bool:
                return ended and m.workflow_id == wid and m.activity_type == "record_audit"

            def approved_post(m: Mark, ended: bool, wid: str = wid) -> bool:
                return (
                    not ended
                    and m.workflow_id == wid
                    and m.activity_type == "post_journal_entry"
                    and m.approved
                )

            flushed = bench.recorder.expect(flush_done)
            await baton.start_finance_close(inp)
            await asyncio.wait_for(flushed, 30)  # the approval request's audit flush is done
            pending = await baton.pending_approvals(wid)
            while not pending:
                await asyncio.sleep(0.01)
                pending = await baton.pending_approvals(wid)
            await asyncio.sleep(0.1)  # the workflow is now parked in the approval wait
            request = pending[0]
            next_started = bench.recorder.expect(approved_post)
            t0 = time.perf_counter()
            await baton.approve(
                wid,
                approver="carol",
                rationale="bench: matches the statement",
                request_id=request.request_id,
                action_digest=request.action_digest,
            )
            t1 = time.perf_counter()
            mark: Mark = await asyncio.wait_for(next_started, 30)
            result = await baton.result(wid)
            if not result.approvals or len(result.posted) != len(SMALL_ENTRIES) + 1:
                raise RuntimeError(f"approval run {wid} ended unexpectedly: {result.posted}")
            if i >= 0:
                out.to_next_activity.append(mark.started - t0)
                out.update_round_trip.append(t1 - t0)
    bench.recorder.clear()
    print(
        f"  {setting:8s} approval -> next activity median "
        f"{ms(statistics.median(out.to_next_activity)):6.2f} ms; update round trip median "
        f"{ms(statistics.median(out.update_round_trip)):6.2f} ms",
        flush=True,
    )
    return out


# -- the run ----------------------------------------------------------------------------------


async def start_server(
    setting: ServerSetting, state_dir: Path
) -> tuple[WorkflowEnvironment, int, int | None]:
    port = local.free_port()
    db_file = state_dir / f"temporal-{port}.db" if setting.db_file else None
    env = await local.start_dev_server(
        extra_args=setting.extra,
        port=port,
        existing_path=temporal_binary(),
        dev_server_database_filename=str(db_file) if db_file else None,
    )
    return env, port, dev_server_pid(port)


@dataclass
class Results:
    facts: list[tuple[str, str]]
    steps: list[StepResult] = field(default_factory=list)
    direct: dict[str, list[float]] = field(default_factory=dict)
    direct_close: list[float] = field(default_factory=list)
    throughput_setting: str = ""
    throughput: list[Throughput] = field(default_factory=list)
    approvals: list[Approvals] = field(default_factory=list)
    policy_latency: dict[str, list[float]] = field(default_factory=dict)
    processes: list[scale.ProcessLevel] = field(default_factory=list)
    memory: scale.WaitingMemory | None = None
    notes: list[str] = field(default_factory=list)


async def main(quick: bool) -> Results:
    size = QUICK if quick else FULL
    command = ".venv/bin/python bench/finance_close_bench.py" + (" --quick" if quick else "")
    results = Results(machine_facts(command))
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    settings = stand_in_settings(tmp)
    runtime = build_runtime(settings)
    try:
        # one period for the step loops, then one per close run (each close is its own period)
        needed = (
            8
            + 3 * size.approvals
            + size.direct_closes
            + sum((lv.runs or int(lv.seconds * 40)) + 2 for lv in size.levels)
            + 2 * sum(runs + 1 for _, runs in size.process_levels)
            + size.waiting_runs
        )
        t0 = time.perf_counter()
        periods = period_names(needed, first_year=3000)
        ledger_rows, bank_lines = seed_periods(runtime.db, periods)
        results.notes.append(
            f"seeded {len(periods)} tenant-periods ({ledger_rows} ledger entries + {bank_lines}"
            f" bank lines each) in {time.perf_counter() - t0:.1f} s"
        )
        print(results.notes[-1], flush=True)
        bench = Bench.of(size, runtime, periods)

        print("(d) policy decision latency", flush=True)
        results.policy_latency = await scale.measure_policy_latency(size.policy_decisions)

        print("(a) direct calls, no Temporal", flush=True)
        results.direct = await measure_direct(bench)
        results.direct_close = await measure_direct_close(bench)
        print(
            f"  direct: bare {ms(statistics.median(results.direct['bare'])):.2f} ms, governed"
            f" {ms(statistics.median(results.direct['governed'])):.2f} ms, naive"
            f" {ms(statistics.median(results.direct['naive'])):.2f} ms; one close's activities"
            f" {ms(statistics.median(results.direct_close)):.0f} ms",
            flush=True,
        )

        for setting in SERVER_SETTINGS:
            env, port, pid = await start_server(setting, tmp)
            print(
                f"dev server {setting.name!r}: port {port}, pid {pid},"
                f" {'file' if setting.db_file else 'in-memory'} store, {' '.join(setting.extra)}",
                flush=True,
            )
            try:
                print("(a) sequential steps", flush=True)
                results.steps += await measure_steps(env.client, bench, setting)
                if setting.throughput:
                    print("(b) runs per second", flush=True)
                    results.throughput = await measure_throughput(env.client, bench, pid)
                    results.throughput_setting = setting.name
                    address, url = f"127.0.0.1:{port}", settings.database_url
                    print("(e) runs per second, 1 and 2 worker processes", flush=True)
                    results.processes = await scale.measure_processes(
                        env.client, address, url, bench.next_period, list(size.process_levels)
                    )
                    print(f"(f) memory of {size.waiting_runs} waiting runs", flush=True)
                    results.memory = await scale.measure_waiting_memory(
                        env.client, address, url, bench.next_period, size.waiting_runs
                    )
                if setting.approvals:
                    print("(c) approval round trip", flush=True)
                    n = size.approvals if setting.throughput else max(3, size.approvals // 3)
                    results.approvals.append(
                        await measure_approvals(env.client, bench, setting.name, n)
                    )
            finally:
                await env.shutdown()
        results.facts.append(
            (
                "load average at end (1/5/15 min)",
                " / ".join(f"{x:.2f}" for x in os.getloadavg()),
            )
        )
        return results
    finally:
        await runtime.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- the table --------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(results: Results) -> str:
    lines = ["# Baton finance-close benchmark", ""]
    lines += ["| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.facts]
    servers = "; ".join(
        f"**{st.name}**: {'`--db-filename <tmp>/temporal.db` ' if st.db_file else ''}"
        f"`{' '.join(st.extra) or '(no extra flags)'}`"
        for st in SERVER_SETTINGS
    )
    options = ", ".join(f"`{k}={v}`" for k, v in WORKER_OPTIONS.items())
    lines += [
        f"| worker options | {options}; one worker process (this one), BatonPlugin on client and"
        " worker (pydantic converter, sandbox) |",
        "| dev servers | `temporal server start-dev` via `WorkflowEnvironment.start_local`"
        f" (free port; in-memory store unless a file is named), one after the other; {servers} |",
        "| storage | SQLite file in a fresh temp dir (WAL), real `build_runtime()` activities,"
        " embedded OPA |",
        "",
    ]

    # (a)
    direct = {mode: _med(v) for mode, v in results.direct.items()}
    direct["local"] = direct.get("bare", float("nan"))
    n = len(results.steps[0].intervals) if results.steps else 0
    lines += [
        "## (a) Cost of one step, sequential, inside one workflow run that loops",
        "",
        f"Per step = time between the starts of consecutive steps of one run (N = {n} each)."
        " *Temporal overhead* = median step − median of the same work called directly"
        " (last rows), i.e. what orchestration adds on top of the work itself."
        " *In worker* = median time the step's activities ran inside the worker (interceptor,"
        " activity start → end): the same work as the direct call, but in the loop, where it"
        " runs with cold caches between server round trips; *step − in worker* is then the"
        " orchestration around it.",
        "",
        "| step | activities / step | server | median ms | p95 ms | median × bare |"
        " Temporal overhead ms | overhead × bare | in worker ms | step − in worker, × bare |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in SERVER_SETTINGS:
        setting = st.name
        rows = {r.mode: r for r in results.steps if r.setting == setting}
        if "bare" not in rows:
            continue
        bare = _med(rows["bare"].intervals)
        bare_overhead = bare - direct["bare"]
        bare_orchestration = bare - _med(rows["bare"].busy)
        for mode, label, per_step, _ in MODES:
            if mode not in rows:
                continue
            r = rows[mode]
            med = _med(r.intervals)
            overhead = med - direct[mode]
            busy = _med(r.busy)
            lines.append(
                f"| {label} | {per_step or '1 local'} | {setting} | {ms(med):.2f} |"
                f" {ms(p95(r.intervals)):.2f} | **{med / bare:.2f}x** | {ms(overhead):.2f} |"
                f" {overhead / bare_overhead:.2f}x | {ms(busy):.2f} |"
                f" {(med - busy) / bare_orchestration:.2f}x |"
            )
    for mode, label in (
        ("bare", "no-op"),
        ("governed", "post_journal_entry: policy + posting + audit, one call"),
        ("plain", "the same posting, no policy/kill switch/audit"),
        ("naive", "evaluate_policies + no-op + record_audit"),
    ):
        values = results.direct.get(mode) or [float("nan")]
        lines.append(
            f"| direct call, no Temporal: {label} | 0 | none | {ms(_med(values)):.2f} |"
            f" {ms(p95(values)):.2f} | | | | | |"
        )
    lines.append("")
    lines += governance_cost(results)

    # (b)
    if results.throughput:
        lines += [
            "## (b) Finance-close runs per second, instant agents"
            f" ({results.throughput_setting} server only)",
            "",
            "Real `FinanceCloseWorkflow` started with `BatonClient` (13 activities: collect,"
            " reconcile, 3 instant agents, policy preflight, 5 governed postings, close period,"
            " audit flush; real SQLite + OPA) vs `BenchBareClose`: the same 13 activities in the"
            " same order, all no-ops. Closed loop: N runs in flight until the level's runs are"
            " started; runs/s = runs / (first start → last completion). CPU = cores used during"
            " the level by the dev server and by this process (worker + client).",
            "",
            "| concurrent runs | close runs/s | bare runs/s | close ÷ bare | runs (close / bare) |"
            " p50 run ms (close / bare) | CPU cores server / bench: close | … : bare |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        by = {(t.kind, t.concurrency): t for t in results.throughput}
        for c in sorted({t.concurrency for t in results.throughput}):
            close, noops = by[("finance close", c)], by[("bare activities", c)]
            lines.append(
                f"| {c} | {close.per_second:.1f} | {noops.per_second:.1f} |"
                f" **{100 * close.per_second / noops.per_second:.0f}%** |"
                f" {close.runs} / {noops.runs} | {ms(_med(close.latencies)):.0f} /"
                f" {ms(_med(noops.latencies)):.0f} |"
                f" {close.server_cpu:.2f} / {close.bench_cpu:.2f} |"
                f" {noops.server_cpu:.2f} / {noops.bench_cpu:.2f} |"
            )
        if results.direct_close:
            lines += [
                "",
                f"Direct, no Temporal: one close's 13 activities called in sequence take"
                f" {ms(_med(results.direct_close)):.0f} ms (median of {len(results.direct_close)}"
                f"; p95 {ms(p95(results.direct_close)):.0f} ms) of Baton's own work.",
            ]
        lines.append("")

    # (c)
    if results.approvals:
        lines += [
            "## (c) Approval round trip (a close waiting for a finance controller)",
            "",
            "The stand-in reconciler adds an entry of 1,845.00; policy requires a"
            " finance-controller; `BatonClient.approve(..., request_id, action_digest)` sends the"
            " `decide_approval` Update as carol while the run waits.",
            "",
            "| measure | server | N | median ms | p95 ms |",
            "|---|---|---:|---:|---:|",
        ]
        for a in results.approvals:
            lines.append(
                f"| Update sent → approved post_journal_entry started | {a.setting} |"
                f" {len(a.to_next_activity)} | {ms(_med(a.to_next_activity)):.2f} |"
                f" {ms(p95(a.to_next_activity)):.2f} |"
            )
        for a in results.approvals:
            lines.append(
                f"| Update round trip (send → accepted result) | {a.setting} |"
                f" {len(a.update_round_trip)} | {ms(_med(a.update_round_trip)):.2f} |"
                f" {ms(p95(a.update_round_trip)):.2f} |"
            )
        lines.append("")
    lines += render_scale(results)
    if results.notes:
        lines += ["Notes: " + "; ".join(results.notes) + ".", ""]
    return "\n".join(lines)


def governance_cost(results: Results) -> list[str]:
    """Governance's own cost: the governed step over the same posting by a plain activity with
    no policy, kill switch or audit, measured in the same runs (goal: at most 1.15x)."""
    rows = [
        "### Governance's own cost (goal: governed step ÷ plain posting ≤ 1.15x)",
        "",
        "| server | governed step ms | plain posting ms | governed ÷ plain |"
        " in worker: governed / plain ms | in worker ÷ |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    found = False
    for st in SERVER_SETTINGS:
        by = {r.mode: r for r in results.steps if r.setting == st.name}
        if "governed" not in by or "plain" not in by:
            continue
        found = True
        g, p = _med(by["governed"].intervals), _med(by["plain"].intervals)
        gb, pb = _med(by["governed"].busy), _med(by["plain"].busy)
        rows.append(
            f"| {st.name} | {ms(g):.2f} | {ms(p):.2f} | **{g / p:.2f}x** |"
            f" {ms(gb):.2f} / {ms(pb):.2f} | {gb / pb:.2f}x |"
        )
    if results.direct.get("plain"):
        g, p = _med(results.direct["governed"]), _med(results.direct["plain"])
        found = True
        rows.append(f"| none (direct call) | {ms(g):.2f} | {ms(p):.2f} | **{g / p:.2f}x** | | |")
    return [*rows, ""] if found else []


def render_scale(results: Results) -> list[str]:
    """(d), (e), (f): bench/scale.py's measurements."""
    lines: list[str] = []
    bare = [s for s in results.steps if s.mode == "bare" and s.setting == "tuned"]
    bare_ms = ms(_med(bare[0].intervals)) if bare else float("nan")
    if results.policy_latency:
        lines += [
            "## (d) Policy decision latency (finance posting policy, one decide() call)",
            "",
            f"Ratio to the bare activity round trip measured in this run on the tuned server"
            f" ({bare_ms:.2f} ms).",
            "",
            "| engine | N | median ms | p95 ms | median ÷ bare activity |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, times in results.policy_latency.items():
            lines.append(
                f"| {name} | {len(times)} | {ms(_med(times)):.2f} | {ms(p95(times)):.2f} |"
                f" {ms(_med(times)) / bare_ms:.2f}x |"
            )
        lines.append("")
    if results.processes:
        lines += [
            "## (e) Finance-close runs per second with 1 and 2 worker processes (tuned server)",
            "",
            "Worker processes from `bench/soak.py worker` (real close, instant agents; or the"
            " no-op close shape), SQLite file shared in WAL mode; closed loop as in (b).",
            "",
            "| processes | concurrent runs | close runs/s | bare runs/s | close ÷ bare |"
            " p50 run ms (close / bare) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for level in [p for p in results.processes if p.kind == "finance close"]:
            twin = next(
                p
                for p in results.processes
                if p.kind == "bare activities"
                and (p.processes, p.concurrency) == (level.processes, level.concurrency)
            )
            lines.append(
                f"| {level.processes} | {level.concurrency} | {level.per_second:.1f} |"
                f" {twin.per_second:.1f} | **{100 * level.per_second / twin.per_second:.0f}%** |"
                f" {ms(_med(level.latencies)):.0f} / {ms(_med(twin.latencies)):.0f} |"
            )
        lines.append("")
    if results.memory is not None:
        m = results.memory
        lines += [
            "## (f) Memory per waiting run",
            "",
            f"One worker process with {m.runs} finance closes open, each waiting for a finance"
            f" controller (cached in the worker): resident memory {m.rss_before_kib / 1024:.0f}"
            f" MiB before, {m.rss_with_kib / 1024:.0f} MiB with them: **{m.per_run_kib:.0f} KiB"
            f" per waiting run** ({m.per_run_kib * 1000 / 1024:.0f} MiB per 1,000).",
            "",
        ]
    return lines


async def main_governance(quick: bool) -> Results:
    """Only governance's own cost: the direct calls and (a) with the bare, governed and plain
    steps on the default and the tuned dev server (--governance)."""
    size = QUICK if quick else FULL
    command = ".venv/bin/python bench/finance_close_bench.py --governance"
    results = Results(machine_facts(command + (" --quick" if quick else "")))
    tmp = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    settings = stand_in_settings(tmp)
    runtime = build_runtime(settings)
    try:
        periods = period_names(2, first_year=3000)
        seed_periods(runtime.db, periods)
        bench = Bench.of(size, runtime, periods)
        results.direct = await measure_direct(bench)
        for base in SERVER_SETTINGS[:2]:  # default, and tuned (where a step is least orchestration)
            setting = dataclasses.replace(base, modes=("bare", "governed", "plain"))
            env, _, _ = await start_server(setting, tmp)
            try:
                results.steps += await measure_steps(env.client, bench, setting)
            finally:
                await env.shutdown()
        return results
    finally:
        await runtime.close()
        shutil.rmtree(tmp, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and shorter windows")
    parser.add_argument(
        "--governance",
        action="store_true",
        help="only governance's own cost (governed step vs the same posting, plain); prints it",
    )
    args = parser.parse_args()
    if args.governance:
        results = asyncio.run(main_governance(args.quick))
        print("\n".join(governance_cost(results)))
        sys.stdout.flush()
        os._exit(0)
    started = time.perf_counter()
    results = asyncio.run(main(args.quick))
    results.notes.append(f"whole bench took {time.perf_counter() - started:.0f} s")
    table = render(results)
    print()
    print(table)
    # a quick run does not overwrite the last full run's table
    name = "results-quick.md" if args.quick else "results.md"
    (REPO_ROOT / "bench" / name).write_text(table + "\n")
    sys.stdout.flush()
    # temporalio 1.35 on CPython 3.11 can crash at exit (docs/architecture.md, "Process exit")
    os._exit(0)


if __name__ == "__main__":
    cli()
