"""``baton doctor`` and ``baton repair``: runs that ended leaving side effects standing.

``doctor`` lists runs closed TERMINATED, TIMED_OUT, FAILED or CANCELED (Temporal visibility)
whose postings, entitlements, customer actions or published reviews are still in force (the
database), with each effect and the compensation that undoes it (activities/orphans.py).
``doctor --schedule`` has a Temporal Schedule run the same check on the worker (BatonDoctor),
which audits what it finds. ``repair WORKFLOW_ID`` starts the BatonRepair workflow on the worker
(durable, retried, audited: workflows/repair.py) and prints what it undid; a second repair
finds nothing standing and says so.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import timedelta
from typing import Any

import click

from baton.cli_common import json_option, run
from baton.settings import Settings
from workflows.contracts.integrity import (
    DOCTOR_SCHEDULE_ID,
    DoctorInput,
    DoctorReport,
    RepairInput,
    RepairResult,
)

#: How often the scheduled doctor looks, unless ``--every`` says otherwise.
DOCTOR_EVERY = timedelta(hours=1)


@click.command("doctor", help="list runs that ended leaving side effects standing (orphans)")
@click.option("--since", default="7d", help="runs closed within: 24h, 7d, 2w (default 7d)")
@click.option("--all-queues", is_flag=True, help="every task queue, not only BATON_TASK_QUEUE")
@json_option("print the report as JSON")
@click.option("--schedule", is_flag=True, help="create a Temporal Schedule that runs the check")
@click.option("--every", default="1h", help="with --schedule: 30m, 1h, 1d (default 1h)")
@click.option("--unschedule", is_flag=True, help="delete the Schedule")
def doctor(**params: Any) -> int:
    return run(cmd_doctor, params)


@click.command(
    "repair",
    help="run the compensations of an orphaned run (BatonRepair)"
    "\n\nWORKFLOW_ID: the orphaned run's workflow id",
)
@click.argument("workflow_id", metavar="WORKFLOW_ID")
@click.option("--run-id", default="", help="a run of it (default: its newest run)")
@click.option("--requested-by", help="who asks for the repair (default: your user name)")
@click.option("--reason", default="repair of an orphaned run", help="for the audit trail")
@json_option("print the result as JSON")
def repair(**params: Any) -> int:
    return run(cmd_repair, params)


COMMANDS = [doctor, repair]


def _seconds(text: str, flag: str) -> int:
    from baton.cli_common import EXIT_USAGE, CliError
    from baton.kpi import _DURATION, _UNITS

    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise CliError(
            f"{flag}: expected a duration like 30m, 24h, 7d or 2w, got {text!r}", EXIT_USAGE
        )
    return int(timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}).total_seconds())


def schedule_id(task_queue: str) -> str:
    return f"{DOCTOR_SCHEDULE_ID}/{task_queue}"


async def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from activities.database import Database
    from activities.orphans import find_orphans
    from baton.cli_common import EXIT_OK, _client

    inp = DoctorInput(
        task_queue="" if args.all_queues else settings.task_queue,
        since_seconds=_seconds(args.since, "--since"),
    )
    every = _seconds(args.every, "--every")
    baton = await _client(settings)
    if args.unschedule:
        return await _unschedule(baton.client, settings)
    if args.schedule:
        return await _schedule(baton.client, settings, inp, timedelta(seconds=every))
    db = Database(settings.database_url)
    try:
        report = await find_orphans(db, baton.client, inp)
    finally:
        db.dispose()
    if args.json:
        print(report.model_dump_json())
    else:
        _print_doctor(report, inp)
    return EXIT_OK


def _print_doctor(report: DoctorReport, inp: DoctorInput) -> None:
    """A head line, a table with one row per effect left standing, the repair commands."""
    from baton.cli_common import print_table

    where = f"task queue {inp.task_queue}" if inp.task_queue else "all task queues"
    head = f"checked {report.checked_runs} run(s) that ended without completing ({where})"
    if not report.orphans:
        print(f"{head}: no side effects left standing")
        return
    print(f"{head}: {len(report.orphans)} orphaned run(s)")
    print_table(
        ["WORKFLOW", "TYPE", "STATUS", "CLOSED", "EFFECT", "UNDO"],
        (
            [
                o.workflow_id,
                o.workflow_type,
                o.status,
                o.closed_at.isoformat(timespec="seconds") if o.closed_at else "?",
                f"{e.kind} {e.id}: {e.summary}",
                e.compensation,
            ]
            for o in report.orphans
            for e in o.effects
        ),
    )
    for o in report.orphans:
        print(f"repair: baton repair {o.workflow_id} --run-id {o.run_id}")


async def _schedule(client: Any, settings: Settings, inp: DoctorInput, every: timedelta) -> int:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
    )

    from baton.cli_common import EXIT_OK
    from workflows.repair import DoctorWorkflow

    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            DoctorWorkflow.run,
            inp,
            id=f"{schedule_id(settings.task_queue)}/check",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    sid = schedule_id(settings.task_queue)
    try:
        await client.create_schedule(sid, schedule, trigger_immediately=True)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(sid).update(lambda _: ScheduleUpdate(schedule=schedule))
    print(
        f"schedule {sid}: runs the orphan check every {every} on {settings.task_queue}; "
        "findings go to the audit trail (integrity.orphans_found)"
    )
    return EXIT_OK


async def _unschedule(client: Any, settings: Settings) -> int:
    from temporalio.service import RPCError

    from baton.cli_common import EXIT_OK

    try:
        await client.get_schedule_handle(schedule_id(settings.task_queue)).delete()
    except RPCError as err:
        print(f"no schedule to delete: {err.message}")
        return EXIT_OK
    print(f"deleted schedule {schedule_id(settings.task_queue)}")
    return EXIT_OK


async def cmd_repair(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.common import WorkflowIDConflictPolicy

    from baton.cli_common import EXIT_FAILED, EXIT_OK, _client
    from workflows.repair import RepairWorkflow

    inp = RepairInput(
        workflow_id=args.workflow_id,
        run_id=args.run_id,
        requested_by=args.requested_by or getpass.getuser(),
        reason=args.reason,
    )
    baton = await _client(settings)
    # one repair per orphan at a time: a second `baton repair` while one runs waits for it
    result: RepairResult = await baton.client.execute_workflow(
        RepairWorkflow.run,
        inp,
        id=f"repair/{inp.workflow_id}",
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    if args.json:
        print(result.model_dump_json())
    else:
        print(result.message)
        for r in result.repaired:
            mark = "undone" if r.undone else "nothing to undo"
            print(f"  - {r.effect.kind} {r.effect.id}: {mark} ({r.detail})")
    return EXIT_FAILED if result.status == "refused" else EXIT_OK
