"""Where the agent loop's orchestration time goes, per tool call (issue 18's 30 ms goal).

Runs ``bench/agent_loop_bench.py``'s bench in-process with timers around the phases of the two
activities (the worker runs in this process; the Temporal dev server and the stand-in model
server do not count here), then prints ms per tool call for each phase. Timers nest (a phase's
time includes the phases inside it); threads' times are summed (the loop makes one call at a
time, so they rarely overlap).

Run: ``.venv/bin/python bench/profile_agent_loop.py --tool-calls 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timers import with_timer  # noqa: E402

TOTALS: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)
_lock = threading.Lock()


def _add(name: str, seconds: float) -> None:
    with _lock:
        TOTALS[name] += seconds
        COUNTS[name] += 1


def timed(owner: Any, attr: str, name: str) -> None:
    """Wrap ``owner.attr`` (a function, sync or async) with a timer called ``name``."""
    setattr(owner, attr, with_timer(getattr(owner, attr), lambda seconds: _add(name, seconds)))


def instrument() -> None:
    from sqlmodel import Session

    from activities import agent_turn, agents, audit, payload_store, router, spend, tools
    from activities.kill_switch import KillSwitch
    from workflows.process_base import GovernedProcess  # noqa: F401

    # owner: {attribute: timer name}
    phases: dict[Any, dict[str, str]] = {
        agent_turn.AgentTurnActivities: {
            "agent_turn": "agent_turn (activity body)",
            "_extend": "  turn: load conversation + window",
            "_settle": "  turn: store assistant message + node",
        },
        agent_turn: {"_create": "  turn: build request (SDK post, not awaited)"},
        router.Router: {
            "exchange": "  turn: router.exchange (incl. model HTTP)",
            "_remaining": "    exchange: budget remaining (reads)",
            "_charge_one": "    exchange: charge + audit row (txn)",
            "settle": "  turn: router.settle",
        },
        agents.AgentActivities: {"_govern": "    exchange: base policy + audit (txn)"},
        spend: {
            "run_totals": "    db: spend.run_totals (read)",
            "spent_on": "    db: spend.spent_on (read)",
        },
        KillSwitch: {"raise_if_blocking": "    db: kill switch check"},
        tools.ToolActivities: {
            "call_tool": "call_tool (activity body)",
            "_decide": "  tool: switch + policy + audit (txn 1)",
            "_record": "  tool: result + record + audit (txn 2)",
        },
        tools.ToolRegistry: {"load": "  registry.load"},
        audit.AuditLedger: {"append_in": "db: audit append_in"},
        payload_store.PayloadStore: {
            "put_in": "db: payload put_in",
            "get_many": "db: payload get_many",
        },
        Session: {"commit": "db: Session.commit"},
    }
    for owner, names in phases.items():
        for attr, name in names.items():
            timed(owner, attr, name)
    from temporalio.worker import _workflow

    from activities import policy

    timed(agents, "decide", "      policy: decide (model call)")
    if hasattr(agents, "decide_sync"):  # the embedded engine decides on the read's thread
        timed(agents, "decide_sync", "      policy: decide (model call)")
    timed(policy, "decide_sync", "      policy: decide_sync (tool call)")
    timed(audit.AuditLedger, "append", "db: audit append in its own txn")
    timed(router, "_heartbeating", "    exchange: model HTTP round trip")
    timed(_workflow._WorkflowWorker, "_handle_activation", "workflow task (worker side)")


WORKFLOW_PROFILE: Any = None


def profile_workflow_tasks() -> None:
    """cProfile every workflow activation (they run on the worker's workflow thread pool)."""
    import cProfile

    from temporalio.worker import _workflow

    global WORKFLOW_PROFILE
    WORKFLOW_PROFILE = prof = cProfile.Profile()
    fn = _workflow._RunningWorkflow.activate

    def activate(self: Any, *a: Any, **k: Any) -> Any:
        prof.enable()
        try:
            return fn(self, *a, **k)
        finally:
            prof.disable()

    _workflow._RunningWorkflow.activate = activate  # type: ignore[method-assign]


def report(calls: int) -> None:
    print("\n| phase (timers nest) | ms per tool call | count |\n|---|---|---|")
    for name, total in sorted(TOTALS.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {total * 1000 / calls:.2f} | {COUNTS[name]} |")


def main() -> None:
    import agent_loop_bench as bench  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool-calls", type=int, default=200)
    parser.add_argument("--no-eager", action="store_true")
    parser.add_argument("--cprofile-workflow", action="store_true")
    args = parser.parse_args()
    instrument()
    if args.cprofile_workflow:
        profile_workflow_tasks()
    asyncio.run(bench.main_async(args.tool_calls, 2000, tuned=not args.no_eager))
    report(args.tool_calls)
    if WORKFLOW_PROFILE is not None:
        import pstats

        pstats.Stats(WORKFLOW_PROFILE).sort_stats("cumulative").print_stats(45)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
