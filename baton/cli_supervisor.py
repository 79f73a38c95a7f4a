"""``baton supervisor start|status|stop``: the supervisor agent (workflows/supervisor.py), kept
running by a Temporal Schedule."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from baton.cli_common import run
from baton.settings import Settings
from workflows.contracts.supervisor import (
    SUPERVISOR_SCHEDULE_ID,
    SUPERVISOR_WORKFLOW_ID,
    SupervisorInput,
)

#: How often the Schedule looks whether a supervisor runs (and starts one when none does).
KEEPER_EVERY = timedelta(minutes=5)


def schedule_id(task_queue: str) -> str:
    return f"{SUPERVISOR_SCHEDULE_ID}/{task_queue}"


async def ensure_schedule(
    client: Client, inp: SupervisorInput, *, task_queue: str, every: timedelta = KEEPER_EVERY
) -> ScheduleHandle:
    """Create (or replace) the Schedule that keeps one supervisor running on ``task_queue``.

    Every ``every`` it starts the supervisor workflow; overlap policy SKIP: while one runs
    (through its continue-as-new chain) nothing new starts, so a supervisor that failed or was
    terminated is back within ``every``."""
    # imported here, not at the top: every `baton` command loads this module
    from workflows.supervisor import SupervisorWorkflow

    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SupervisorWorkflow.run,
            inp,
            id=f"{SUPERVISOR_WORKFLOW_ID}/{task_queue}",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    sid = schedule_id(task_queue)
    try:
        return await client.create_schedule(sid, schedule, trigger_immediately=True)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(sid)
        await handle.update(lambda _: _update(schedule))
        return handle


def _update(schedule: Schedule) -> Any:
    from temporalio.client import ScheduleUpdate

    return ScheduleUpdate(schedule=schedule)


supervisor = click.Group(
    "supervisor", help="the supervisor agent: KPIs watched, anomalies alerted and acted on"
)


@supervisor.command("start", help="create the Schedule that keeps a supervisor running")
@click.option("--config", metavar="FILE.json", help="SupervisorInput fields (thresholds...)")
@click.option("--interval", type=float, help="seconds between checks (default 300)")
def supervisor_start(**params: Any) -> int:
    return run(cmd_supervisor_start, params)


@supervisor.command("stop", help="delete the Schedule and terminate the supervisor")
def supervisor_stop(**params: Any) -> int:
    return run(cmd_supervisor_stop, params)


async def cmd_supervisor_start(args: argparse.Namespace, settings: Settings) -> int:
    from baton.cli_common import EXIT_OK, _client

    fields: dict[str, Any] = {}
    if args.config:
        fields = json.loads(await asyncio.to_thread(Path(args.config).read_text))
    if args.interval is not None:
        fields["interval_seconds"] = args.interval
    fields.setdefault("task_queue", settings.task_queue)
    inp = SupervisorInput.model_validate(fields)  # a bad field fails here, naming it
    baton = await _client(settings)
    handle = await ensure_schedule(baton.client, inp, task_queue=settings.task_queue)
    print(
        f"schedule {handle.id}: keeps supervisor {SUPERVISOR_WORKFLOW_ID}/{settings.task_queue} "
        f"running (checks every {inp.interval_seconds:g}s, window {inp.window_seconds}s)"
    )
    return EXIT_OK


async def cmd_supervisor_stop(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError

    from baton.cli_common import EXIT_OK, _client

    baton = await _client(settings)
    try:
        await baton.client.get_schedule_handle(schedule_id(settings.task_queue)).delete()
    except RPCError as err:
        print(f"no schedule to delete: {err.message}")
    async for wf in baton.client.list_workflows(
        f"WorkflowType='BatonSupervisor' AND ExecutionStatus='Running' "
        f"AND TaskQueue='{settings.task_queue}'"
    ):
        await baton.client.get_workflow_handle(wf.id).terminate("baton supervisor stop")
        print(f"terminated {wf.id}")
    return EXIT_OK
