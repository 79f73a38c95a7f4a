"""Agent loop bench: does a long tool-using agent run keep its workflow history small?

One ``AgentRun`` of the bench agent (workflows/agent_steps.py BENCH_AGENT) makes N tool calls, one
per model turn: the stand-in model server's rules answer each turn with the next ``bench_lookup``
call (a read-only tool answering exactly 300 bytes) until N, then ``final_answer``. Every call
goes the whole governed way: a routed model turn (budget, base policy, charge, audit), then the
tool call as a governed step (kill switch, tool policy in the tool's transaction, idempotency
key, payload store, audit). The run continues as new when its history passes
``--continue-after`` events.

Printed: a table, then exactly three lines::

    history_bytes=N            the serialized size of every history event, summed over the
                               first run and every run it continued as (protobuf ByteSize)
    largest_payload_bytes=N    the largest single Temporal payload in those histories
    overhead_ms_per_tool_call=X  (wall time of the run - the tool's own time - the model
                               server's own time answering the turns) / N: what Baton adds per
                               tool call (routing, policy, payload store, audit, and the
                               Temporal dev server's round trips: two workflow tasks and two
                               activities per call, on the same machine as the worker)

Before Baton's run, the same dev server runs the bare shape of a tool call for comparison:
``bench/loops.py``'s step loop with two no-op activities per call (a turn and a tool call, so
two workflow tasks and two activities, as in the agent loop), nothing else. Its ms per call is
Temporal's floor on this machine; the table prints it and Baton's overhead above it
(``--no-floor`` skips it).

Run: ``.venv/bin/python bench/agent_loop_bench.py --tool-calls 500``. It starts its own Temporal
dev server (the finance bench's tuning plus eager activity execution: ``SERVER_TUNING``;
``--no-eager`` for the server's default), model server, SQLite file and a copy of policy/ whose
tool data allows N calls. ``bench/profile_agent_loop.py`` runs the same bench with timers per
phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402

from activities.tools import ToolContext, ToolSpec, tool_calls_of  # noqa: E402
from workflows.contracts.tools import ToolCallOutcome, ToolResult  # noqa: E402

RESULT_BYTES = 300


class BenchLookupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(ge=1, description="Which call this is.")


async def _bench_lookup(ctx: ToolContext, args: BenchLookupArgs) -> ToolResult:
    head = f"bench n={args.n} "
    return ToolResult(text=head + "x" * (RESULT_BYTES - len(head)))


BENCH_TOOL = ToolSpec(
    "bench_lookup", "A 300-byte lookup (the bench).", BenchLookupArgs, read=_bench_lookup
)


class TimedModelServer:
    """The stand-in model server, timing its own work (a model's thinking time is not Baton's
    overhead)."""

    def __init__(self) -> None:
        import threading

        from baton.devstack.model_server import ModelRequestHandler, ModelServer

        owner = self
        self.busy_seconds = 0.0
        self._lock = threading.Lock()

        class Handler(ModelRequestHandler):
            def chat_completion(self, raw: bytes) -> None:
                began = time.perf_counter()
                try:
                    super().chat_completion(raw)
                finally:
                    with owner._lock:
                        owner.busy_seconds += time.perf_counter() - began

        class Server(ModelServer):
            handler_class = Handler

        self.server = Server()

    def start(self, host: str, port: int) -> None:
        self.server.start(host, port)

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return str(self.server.url)


def bench_policy(tmp: Path, calls: int) -> Path:
    """A copy of policy/ whose tool data lets the bench agent make ``calls`` calls."""
    from baton.settings import REPO_ROOT

    target = tmp / "policy"
    shutil.copytree(REPO_ROOT / "policy", target)
    path = target / "data" / "tools.json"
    data = json.loads(path.read_text())
    tools = data["baton"]["tools"]
    tools["max_calls_per_run"] = calls + 10
    tools["catalogue"]["bench_lookup"] = {"roles": ["bench_agent"], "max_calls_per_run": calls + 10}
    path.write_text(json.dumps(data))
    return target


def _payload_sizes(message: Any, out: list[int]) -> None:
    """Every temporal.api.common.v1.Payload inside a protobuf message, by size."""
    if message.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
        out.append(message.ByteSize())
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if hasattr(value, "DESCRIPTOR"):  # one message
            _payload_sizes(value, out)
            continue
        items = value.values() if hasattr(value, "values") else value  # repeated, or a map
        for item in items:
            if hasattr(item, "DESCRIPTOR"):
                _payload_sizes(item, out)


async def measure_histories(client: Any, workflow_id: str, first_run: str) -> dict[str, Any]:
    """Bytes and events of the run and every run it continued as (followed by run id)."""
    run_id: str | None = first_run
    runs, total, events, largest = 0, 0, 0, 0
    per_run: list[int] = []
    by_type: dict[str, int] = {}
    activity_ms: dict[str, float] = {}
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs += 1
        size = sum(e.ByteSize() for e in history.events)
        per_run.append(size)
        total += size
        events += len(history.events)
        sizes: list[int] = []
        scheduled: dict[int, tuple[str, float]] = {}
        for e in history.events:
            at = e.event_time.seconds + e.event_time.nanos / 1e9
            if e.HasField("activity_task_scheduled_event_attributes"):
                kind = e.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[e.event_id] = (kind, at)
            if e.HasField("activity_task_completed_event_attributes"):
                kind, began = scheduled[
                    e.activity_task_completed_event_attributes.scheduled_event_id
                ]
                activity_ms[kind] = activity_ms.get(kind, 0.0) + (at - began) * 1000
            _payload_sizes(e, sizes)
            name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower()
            by_type[name] = by_type.get(name, 0) + e.ByteSize()
        largest = max([largest, *sizes])
        run_id = None
        last = history.events[-1]
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            attrs = last.workflow_execution_continued_as_new_event_attributes
            run_id = attrs.new_execution_run_id
    return {
        "runs": runs,
        "bytes": total,
        "events": events,
        "largest": largest,
        "per_run": per_run,
        "by_type": by_type,
        "activity_ms": activity_ms,
    }


async def bare_floor(temporal: Any, tool_calls: int) -> float:
    """ms per tool call of the bare shape: 2 no-op activities per call in one workflow run."""
    from temporalio.worker import Worker

    from bench.loops import StepLoopWorkflow
    from bench.stand_ins import LoopInput, noop

    queue = f"agent-bench-floor-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal, task_queue=queue, workflows=[StepLoopWorkflow], activities=[noop]):
        began = time.perf_counter()
        await temporal.execute_workflow(
            StepLoopWorkflow.run,
            LoopInput(mode="bare", steps=2 * tool_calls),
            id=f"agent-bench-floor-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        return (time.perf_counter() - began) * 1000 / max(tool_calls, 1)


async def run_bench(
    temporal: Any,
    model: Any,
    settings: Any,
    *,
    tool_calls: int,
    continue_after_events: int,
    out: Callable[[str], None] = print,
    floor: bool = False,
) -> list[str]:
    """One bench run on ``temporal`` (a client) with ``model`` (a model server) and
    ``settings`` (its policy_dir must allow the calls: :func:`bench_policy`). Returns the
    three result lines (and ``continued_runs=N``). ``floor``: first measure the bare shape of a
    tool call on the same server (:func:`bare_floor`) and print Baton's overhead above it."""
    from worker import build_runtime, build_worker
    from workflows.agent_loop import AgentRunWorkflow
    from workflows.contracts.tools import AgentRunInput

    floor_ms = await bare_floor(temporal, tool_calls) if floor else None
    runtime = build_runtime(settings)
    assert runtime.tools is not None
    runtime.tools.registry.register(BENCH_TOOL)
    queue = f"agent-bench-{uuid.uuid4().hex[:8]}"
    try:
        async with build_worker(temporal, runtime, task_queue=queue):
            began = time.perf_counter()
            handle = await temporal.start_workflow(
                AgentRunWorkflow.run,
                AgentRunInput(
                    run_key=f"bench-{uuid.uuid4().hex[:8]}",
                    agent="bench_agent",
                    tenant="acme",
                    requested_by="bench",
                    task={"calls": tool_calls},
                    max_history_events=continue_after_events,
                ),
                id=f"agent-bench-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            model_before = getattr(model, "busy_seconds", 0.0)
            result = await handle.result()
            wall_ms = (time.perf_counter() - began) * 1000
            model_ms = (getattr(model, "busy_seconds", 0.0) - model_before) * 1000
        first_run = handle.first_execution_run_id or handle.result_run_id or ""
        hist = await measure_histories(temporal, handle.id, first_run)
        records = [r for r in tool_calls_of(runtime.db, handle.id) if r.tool == "bench_lookup"]
        tool_ms = sum(ToolCallOutcome.model_validate_json(r.outcome_json).tool_ms for r in records)
        largest_stored = runtime.tools.payloads.largest()
    finally:
        await runtime.close()
    calls = result.tool_calls
    overhead = (wall_ms - tool_ms - model_ms) / max(calls, 1)
    rows = [
        ("tool calls made", f"{calls}"),
        ("model turns", f"{result.turns}"),
        ("runs (1 + continued as new)", f"{hist['runs']}"),
        ("history events, all runs", f"{hist['events']}"),
        ("history bytes per run", ", ".join(str(b) for b in hist["per_run"])),
        ("wall time", f"{wall_ms / 1000:.1f} s"),
        ("tool time (the tool's own)", f"{tool_ms:.1f} ms"),
        ("model server time (its own, answering turns)", f"{model_ms:.1f} ms"),
        ("largest payload stored in the database", f"{largest_stored} B"),
        ("tokens / cost", f"{result.tokens} / {result.cost_usd:.6f} USD"),
    ]
    if floor_ms is not None:
        rows += [
            ("bare loop on the same server: 2 no-op activities per call", f"{floor_ms:.2f} ms"),
            ("Baton's overhead above the bare loop", f"{overhead - floor_ms:.2f} ms per call"),
        ]
    for kind, ms in sorted(hist["activity_ms"].items(), key=lambda kv: -kv[1]):
        rows.append(
            (f"activity {kind}, scheduled to completed", f"{ms / max(calls, 1):.1f} ms per call")
        )
    for name, size in sorted(hist["by_type"].items(), key=lambda kv: -kv[1])[:6]:
        rows.append((f"history bytes: {name}", f"{size} ({size / max(calls, 1):.0f} per call)"))
    out("| measure | value |\n|---|---|")
    for name, value in rows:
        out(f"| {name} | {value} |")
    lines = [
        f"history_bytes={hist['bytes']}",
        f"largest_payload_bytes={hist['largest']}",
        f"overhead_ms_per_tool_call={overhead:.2f}",
    ]
    for line in lines:
        out(line)
    return [*lines, f"continued_runs={hist['runs'] - 1}"]


#: The dev server's settings: the finance bench's "tuned dev server"
#: (bench/finance_close_bench.py TUNING), plus eager activity execution, which the server
#: keeps off by default: with it, a workflow task that schedules an activity on the worker's
#: own task queue gets the activity back in its completion's answer (the SDK asks for it by
#: default) instead of the activity going through matching.
SERVER_TUNING = [
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value",
    "system.enableActivityEagerExecution=true",
]


async def main_async(
    tool_calls: int, continue_after: int, *, tuned: bool = True, floor: bool = True
) -> None:
    from temporalio.testing import WorkflowEnvironment

    from baton.devstack import local
    from baton.settings import Settings
    from workflows import visibility
    from workflows.plugin import BatonPlugin

    tmp = Path(tempfile.mkdtemp(prefix="baton-agent-bench-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=local.temporal_binary(),
        port=local.free_port(),
        plugins=[BatonPlugin()],
        search_attributes=visibility.ALL,  # type: ignore[arg-type]
        dev_server_extra_args=SERVER_TUNING if tuned else SERVER_TUNING[:2],
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    model = TimedModelServer()
    model.start("127.0.0.1", 0)
    settings = replace(
        Settings(),
        database_url=f"sqlite:///{tmp / 'bench.db'}",
        openai_base_url=model.url,
        policy_dir=bench_policy(tmp, tool_calls),
    )
    print(
        f"# agent loop bench: {tool_calls} tool calls, continue as new after {continue_after} "
        f"events; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; dev server: "
        f"{' '.join(SERVER_TUNING if tuned else SERVER_TUNING[:2])}"
    )
    try:
        await run_bench(
            env.client,
            model,
            settings,
            tool_calls=tool_calls,
            continue_after_events=continue_after,
            floor=floor,
        )
    finally:
        model.stop()
        await env.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    from workflows.agent_steps import BENCH_AGENT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool-calls", type=int, default=500)
    parser.add_argument(
        "--continue-after",
        type=int,
        default=BENCH_AGENT.limits.continue_after_events,
        help="history events after which the run continues as new",
    )
    parser.add_argument(
        "--no-eager",
        action="store_true",
        help="leave the dev server's eager activity execution off (its default)",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the bare loop (2 no-op activities per call) measured before Baton's run",
    )
    args = parser.parse_args(argv)
    asyncio.run(
        main_async(
            args.tool_calls, args.continue_after, tuned=not args.no_eager, floor=not args.no_floor
        )
    )
    sys.stdout.flush()
    os._exit(0)  # docs/architecture.md: temporalio can crash at interpreter exit


if __name__ == "__main__":
    main()
