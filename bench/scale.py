"""The parts of the benchmark that need more than the bench's own process (issue 9's table):

- (d) policy decision latency: OPA's evaluator embedded in the worker vs a policy server asked
  through ``opa-python-client`` (the OPA-REST-compatible local server, which evaluates with the
  same embedded OPA, so the difference is the REST round trip and the client);
- (e) finance-close runs per second at 1/50/200 runs in flight with 1 and with 2 worker
  processes (bench/soak.py's worker: the real close with instant agents; and the no-op close
  shape, "bare", on the same processes count), against the same dev server;
- (f) memory per waiting run: worker resident memory with N closes open, each waiting for an
  approval, minus the same worker's memory before them, divided by N.

Called by bench/finance_close_bench.py on the tuned server; rendered into its table.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.client import Client

from activities.finance import POSTING_POLICY, posting_policy_input
from activities.policy import EmbeddedOpaEngine, OpaRestEngine, decide
from baton.devstack.opa_server import OpaCompatibleServer
from baton.settings import REPO_ROOT
from bench.loops import BareCloseWorkflow, bank_fee_posting
from bench.soak import Workers
from bench.stand_ins import BareCloseInput
from workflows.client import BatonClient
from workflows.contracts import FinanceCloseInput, PolicyQuery


def close_runner(
    baton: BatonClient, next_period: Callable[[], tuple[str, str]]
) -> Callable[[], Awaitable[None]]:
    """One run, for a lane: a finance close of the next (tenant, period) on ``baton``'s queue,
    awaited to its end."""

    async def one_close() -> None:
        tenant, period = next_period()
        handle = await baton.start_finance_close(
            FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
        )
        await handle.result()

    return one_close


def bare_close_runner(client: Client, queue: str, id_prefix: str) -> Callable[[], Awaitable[None]]:
    """One run, for a lane: the no-op close shape (BareCloseWorkflow) on ``queue``, awaited to
    its end; its workflow id is ``id_prefix``/<random>."""

    async def one_bare() -> None:
        await client.execute_workflow(
            BareCloseWorkflow.run,
            BareCloseInput(),
            id=f"{id_prefix}/{uuid.uuid4().hex}",
            task_queue=queue,
        )

    return one_bare


@dataclass
class ProcessLevel:
    kind: str  # "finance close" | "bare activities"
    processes: int
    concurrency: int
    runs: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.runs / self.elapsed


@dataclass
class WaitingMemory:
    runs: int
    rss_before_kib: int
    rss_with_kib: int

    @property
    def per_run_kib(self) -> float:
        return (self.rss_with_kib - self.rss_before_kib) / self.runs


async def measure_policy_latency(n: int) -> dict[str, list[float]]:
    """Seconds per decide() of the posting policy: embedded vs REST (opa-python-client)."""
    query = PolicyQuery(
        policy=POSTING_POLICY,
        input=posting_policy_input(bank_fee_posting("acme", "3000-01", 0, "k"), "open"),
        subject="ADJ-BENCH",
    )
    server = OpaCompatibleServer(REPO_ROOT / "policy")
    port = server.start("127.0.0.1", 0)
    engines = {
        "embedded OPA (in the worker)": EmbeddedOpaEngine(REPO_ROOT / "policy"),
        "OPA REST via opa-python-client": OpaRestEngine(f"http://127.0.0.1:{port}"),
    }
    out: dict[str, list[float]] = {}
    try:
        for name, engine in engines.items():
            for _ in range(5):  # warm: compile, connection
                await decide(engine, query, "warm")
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                decision = await decide(engine, query, f"d{i}")
                times.append(time.perf_counter() - t0)
                if decision.verdict != "allow":
                    raise RuntimeError(f"{name}: {decision.verdict} {decision.reasons}")
            out[name] = times
    finally:
        for engine in engines.values():
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()
        server.stop()
    return out


async def lanes(
    one_run: Callable[[], Awaitable[None]], concurrency: int, runs: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    left = iter(range(runs))
    t0 = time.perf_counter()

    async def lane() -> None:
        for _ in left:
            started = time.perf_counter()
            await one_run()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


async def measure_processes(
    client: Client,
    address: str,
    database_url: str,
    next_period: Callable[[], tuple[str, str]],
    levels: list[tuple[int, int]],
) -> list[ProcessLevel]:
    """(concurrency, runs) levels, for 1 and 2 worker processes, close then bare."""
    results: list[ProcessLevel] = []
    for processes in (1, 2):
        for kind in ("finance close", "bare activities"):
            queue = f"bench-proc-{uuid.uuid4().hex[:8]}"
            mode = "bare" if kind == "bare activities" else "plain"
            workers = Workers(address, queue, database_url, mode)
            workers.start(processes)

            if kind == "finance close":
                one = close_runner(BatonClient(client, task_queue=queue), next_period)
            else:
                one = bare_close_runner(client, queue, "bench-bare")
            try:
                await one()  # warm-up
                for concurrency, runs in levels:
                    elapsed, latencies = await lanes(one, concurrency, runs)
                    level = ProcessLevel(kind, processes, concurrency, runs, elapsed, latencies)
                    results.append(level)
                    print(
                        f"  {kind:16s} {processes} proc x{concurrency:<4d} {runs:4d} runs:"
                        f" {level.per_second:6.1f} runs/s",
                        flush=True,
                    )
            finally:
                workers.stop()
    return results


async def measure_waiting_memory(
    client: Client,
    address: str,
    database_url: str,
    next_period: Callable[[], tuple[str, str]],
    runs: int,
) -> WaitingMemory:
    """One worker process; ``runs`` closes each waiting for a finance controller."""
    queue = f"bench-mem-{uuid.uuid4().hex[:8]}"
    workers = Workers(address, queue, database_url, "approval")
    workers.start(1)
    baton = BatonClient(client, task_queue=queue)
    try:
        await asyncio.sleep(2)
        before = workers.rss_kib()
        ids = []
        for _ in range(runs):
            tenant, period = next_period()
            handle = await baton.start_finance_close(
                FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
            )
            ids.append(handle.id)

        # visibility, not a query per run: 1,000 queries while the worker starts 1,000 runs
        # time out on two cores
        waiting = f"TaskQueue = '{queue}' AND BatonApprovalState = 'pending'"
        deadline = time.monotonic() + 900
        while (await client.count_workflows(waiting)).count < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {runs} runs reached their approval in 900 s")
            await asyncio.sleep(2)
        await asyncio.sleep(2)
        with_runs = workers.rss_kib()
        for wid in ids:  # leave nothing running
            await baton.cancel(wid)
        return WaitingMemory(runs, before, with_runs)
    finally:
        workers.stop()


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")
