"""Process definitions: what validation costs, and what the interpreter costs over Python.

    .venv/bin/python bench/dsl_bench.py [--runs N]

(a) `baton validate` of processes/finance_close.yaml, in process (median of 20);
(b) the month-end close, hand-written (FinanceClose) vs the YAML definition (BatonProcess), run
    one after the other N times each on the same seeded data: wall time from start to result
    (approved by an Update as soon as the request is pending), history events and history size.
Starts its own Temporal dev server (free port), the local model server and a worker in this
process; SQLite in a temp dir. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from temporalio.client import Client, WorkflowHandle  # noqa: E402

from activities.seed import seed_period  # noqa: E402
from baton.devstack import local  # noqa: E402
from baton.devstack.model_server import ModelServer  # noqa: E402
from baton.settings import Settings  # noqa: E402
from workflows.client import BatonClient  # noqa: E402
from workflows.dsl.client import start_process  # noqa: E402
from workflows.dsl.validate import load_definition, validate_file  # noqa: E402

FINANCE_YAML = REPO_ROOT / "processes" / "finance_close.yaml"


async def approve_when_pending(client: BatonClient, workflow_id: str) -> None:
    while not (await client.status(workflow_id)).pending:
        await asyncio.sleep(0.02)
    await client.approve(workflow_id, approver="carol", rationale="bench")


async def history_facts(handle: WorkflowHandle) -> tuple[int, int]:  # type: ignore[type-arg]
    history = await handle.fetch_history()
    return len(history.events), len(history.to_json())


async def main(runs: int) -> None:
    from worker import build_runtime, build_worker

    timings = []
    for _ in range(20):
        t = time.perf_counter()
        validate_file(FINANCE_YAML)
        timings.append(time.perf_counter() - t)
    validate_ms = statistics.median(timings) * 1000

    temporal = shutil.which("temporal") or local.temporal_binary()
    env = await local.start_dev_server(extra_args=(), existing_path=temporal)
    model = ModelServer()
    model.start("127.0.0.1", 0)
    tmp = Path(tempfile.mkdtemp(prefix="baton-dsl-bench-"))
    settings = replace(
        Settings(),
        database_url=f"sqlite:///{tmp / 'bench.db'}",
        openai_base_url=model.url,
        policy_dir=REPO_ROOT / "policy",
    )
    runtime = build_runtime(settings)
    client: Client = env.client
    baton = BatonClient(client, task_queue=f"bench-{uuid.uuid4().hex[:8]}")
    definition = load_definition(FINANCE_YAML)
    rows: dict[str, list[tuple[float, int, int]]] = {"hand-written": [], "YAML": []}
    try:
        async with build_worker(client, runtime, task_queue=baton.task_queue):
            for i in range(runs):
                for kind in rows:
                    period = f"{3000 + i:04d}-{1 if kind == 'YAML' else 2:02d}"
                    seed_period(runtime.db, "acme", period)
                    inp = {"tenant": "acme", "period": period, "requested_by": "alice"}
                    t = time.perf_counter()
                    if kind == "YAML":
                        handle = await start_process(
                            client, definition, inp, task_queue=baton.task_queue
                        )
                    else:
                        handle = await baton.start_finance_close(inp)
                    await approve_when_pending(baton, handle.id)
                    await handle.result()
                    wall = time.perf_counter() - t
                    events, size = await history_facts(handle)
                    rows[kind].append((wall, events, size))
    finally:
        await runtime.close()
        model.stop()
        await env.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"validate processes/finance_close.yaml: median {validate_ms:.1f} ms (20 runs)\n")
    print(
        f"| close ({runs} runs each) | wall median ms | wall max ms | history events | "
        "history KiB |"
    )
    print("|---|---:|---:|---:|---:|")
    for kind, values in rows.items():
        walls = [v[0] * 1000 for v in values]
        print(
            f"| {kind} | {statistics.median(walls):.0f} | {max(walls):.0f} | "
            f"{statistics.median(v[1] for v in values):.0f} | "
            f"{statistics.median(v[2] for v in values) / 1024:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
