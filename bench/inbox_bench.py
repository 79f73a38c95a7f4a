"""How fast the approver inbox loads with 500 pending approvals (target: under 500 ms).

    .venv/bin/python bench/inbox_bench.py              # 500 pending closes, ~3-6 min on 2 cores
    .venv/bin/python bench/inbox_bench.py --runs 100   # a quicker look

A Temporal dev server of its own (free port), one worker process of bench/soak.py in "approval"
mode (Baton's real finance close with instant agents: every close waits for a finance
controller), ``--runs`` closes started and waited for until visibility counts them all pending.
Then the real inbox server (uvicorn, baton/inbox/) answers, for a signed-in finance controller
who may decide every one of them:

- the inbox page (``GET /``: one visibility list of every pending run, the 100 most urgent rows
  rendered, the count of all in the title), cold (listing visibility for this load) and warm
  (within the 1 s snapshot that every open page shares),
- the live-refresh fragment the page polls (``GET /fragments/inbox``),
- one request's page (describe + the run's pending query),
- the visibility list alone (what the page's time is mostly made of),
- the inbox page in headless Chromium (navigation start -> load event), when installed.

Prints a markdown table and writes it to bench/inbox_results.md. Other load on the machine
moves the numbers: compare the load average at start with the number of cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from baton.devstack import local  # noqa: E402
from baton.devstack.webui import Browser, browser_binaries  # noqa: E402
from baton.inbox import create_app, request_path  # noqa: E402
from baton.inbox.app import PAGE_ROWS  # noqa: E402
from baton.inbox.auth import SESSION_COOKIE  # noqa: E402
from baton.inbox.server import build_config  # noqa: E402
from bench.finance_close_bench import machine_facts  # noqa: E402
from bench.seeding import period_names, seed_periods  # noqa: E402
from bench.soak import Workers  # noqa: E402
from bench.stand_ins import stand_in_settings  # noqa: E402
from workflows.client import BatonClient  # noqa: E402
from workflows.contracts import FinanceCloseInput  # noqa: E402

TARGET_MS = 500.0
RESULTS = REPO / "bench" / "inbox_results.md"


@dataclasses.dataclass
class Row:
    what: str
    samples: list[float]  # seconds

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


async def timed(fn: Callable[[], Awaitable[object]], loads: int) -> list[float]:
    await fn()  # warm-up
    samples = []
    for _ in range(loads):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def start_pending(baton: BatonClient, periods: list[tuple[str, str]], lanes: int) -> None:
    queue = list(periods)

    async def lane() -> None:
        while queue:
            tenant, period = queue.pop()
            await baton.start_finance_close(
                FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
            )

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def main(runs: int, loads: int) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="baton-inbox-bench-"))
    settings = stand_in_settings(tmp, issuer_dir=tmp / "issuer")
    port = local.free_port()
    env = await local.start_dev_server(port=port)
    from worker import build_runtime

    runtime = build_runtime(settings)
    periods = period_names(runs, first_year=3000)
    seed_periods(runtime.db, periods)
    await runtime.close()
    queue = f"bench-inbox-{uuid.uuid4().hex[:8]}"
    workers = Workers(f"127.0.0.1:{port}", queue, settings.database_url, "approval")
    workers.start(1)
    rows: list[Row] = []
    try:
        baton = BatonClient(env.client, task_queue=queue)
        t0 = time.perf_counter()
        await start_pending(baton, periods, lanes=20)
        pending = f"TaskQueue = '{queue}' AND BatonApprovalState = 'pending'"
        deadline = time.monotonic() + 1200
        while (count := (await env.client.count_workflows(pending)).count) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count} of {runs} closes reached their approval")
            await asyncio.sleep(2)
        print(f"{runs} closes pending after {time.perf_counter() - t0:.0f} s", flush=True)

        config = await build_config(settings, task_queue=queue, client=env.client)
        app_port = local.free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=app_port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        assert config.dev_issuer is not None
        token = config.dev_issuer.sign_in_token("carol", ["finance-controller"])
        base = f"http://127.0.0.1:{app_port}"
        try:
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                page = await http.get("/")
                assert page.status_code == 200 and f"Inbox ({runs})" in page.text, page.text[:300]
                first = (await config.backend.pending())[0].line
                one = request_path(first.workflow_id, first.request_id)

                async def get(path: str, *, cold: bool = True) -> None:
                    if cold:  # the shared snapshot forgotten: this load lists visibility
                        config.backend.invalidate()
                    answer = await http.get(path)
                    answer.raise_for_status()

                shown = min(runs, PAGE_ROWS)
                rows.append(
                    Row(
                        f"inbox page, {runs} pending, {shown} rows shown (cold: lists visibility)",
                        await timed(lambda: get("/"), loads),
                    )
                )
                rows.append(
                    Row(
                        "inbox page (warm: the 1 s snapshot all open pages share)",
                        await timed(lambda: get("/", cold=False), loads),
                    )
                )
                rows.append(
                    Row(
                        "live refresh (GET /fragments/inbox, cold)",
                        await timed(lambda: get("/fragments/inbox"), loads),
                    )
                )
                rows.append(Row("one request's page", await timed(lambda: get(one), loads)))
                rows.append(
                    Row(
                        f"visibility list of {runs} pending runs alone",
                        await timed(lambda: config.backend.pending(fresh=True), loads),
                    )
                )
            if browser_binaries() is not None:
                rows.append(
                    Row(
                        "inbox page in headless Chromium (to load event, cold)",
                        await browser_loads(base, token, 5, config.backend.invalidate),
                    )
                )
        finally:
            server.should_exit = True
            await serving
    finally:
        workers.stop()
        await env.shutdown()
    return rows


async def browser_loads(
    base: str, token: str, loads: int, invalidate: Callable[[], None]
) -> list[float]:
    def run() -> list[float]:
        samples = []
        with Browser() as browser:
            browser.open(base + "/sign-in")
            browser.set_cookie(SESSION_COOKIE, token)
            for _ in range(loads + 1):
                invalidate()
                browser.open(base + "/")
                ms = browser.execute(
                    "const t = performance.getEntriesByType('navigation')[0];"
                    "return t.loadEventEnd - t.startTime;"
                )
                samples.append(float(ms) / 1000)
        return samples[1:]  # the first load warms the browser

    return await asyncio.to_thread(run)


def render(rows: list[Row], facts: list[tuple[str, str]], runs: int) -> str:
    lines = [
        f"# Approver inbox with {runs} pending approvals",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts),
        "",
        f"| what | samples | median ms | p95 ms | target {TARGET_MS:.0f} ms |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        verdict = "met" if row.median_ms < TARGET_MS else "MISSED"
        figures = f"{len(row.samples)} | {row.median_ms:.0f} | {row.p95_ms:.0f}"
        lines.append(f"| {row.what} | {figures} | {verdict} |")
    return "\n".join(lines) + "\n"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="pending approvals (default 500)")
    parser.add_argument("--loads", type=int, default=20, help="timed loads per row (default 20)")
    args = parser.parse_args()
    command = ".venv/bin/python bench/inbox_bench.py" + (
        f" --runs {args.runs}" if args.runs != 500 else ""
    )
    facts = machine_facts(command)
    rows = asyncio.run(main(args.runs, args.loads))
    table = render(rows, facts, args.runs)
    print(table)
    RESULTS.write_text(table)
    print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    cli()
