"""What every `baton` command module shares: the exit codes, the error a command raises to exit
with a message, the typed client and the database built from settings, the printers, the
option decorators several commands take, and the one path that starts a run and waits for it.
Sub-command modules (baton/cli_*.py) and the demo import these from here, never from
baton/cli.py, so no CLI module imports another in a circle (and `python -m baton.cli` never
loads a second copy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from baton.settings import Settings
from workflows.errors import BatonError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "_client",
    "_print_json",
    "_print_request",
    "console",
    "database",
    "JSON_ANYWAY",
    "json_option",
    "options",
    "print_query",
    "print_table",
    "run",
    "runner",
    "start_run",
    "wait_option",
    "workflow_reader",
    "wait_for_result",
    "waiting",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


class CliError(BatonError):
    """A command failed in a way the user can act on: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


async def _client(settings: Settings):  # type: ignore[no-untyped-def]
    from workflows.client import BatonClient

    try:
        codec = settings.payload_codec()
        trust = settings.approval_trust()
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        client = await asyncio.wait_for(
            BatonClient.connect(
                None if settings.temporal_profile else settings.temporal_address,
                namespace=settings.temporal_namespace,
                profile=settings.temporal_profile,
                task_queue=settings.task_queue,
                payload_codec=codec,
            ),
            timeout=10,
        )
    except Exception as err:
        raise CliError(
            f"cannot reach Temporal at {settings.temporal_address}: {err}\n"
            "start the local stack with `make up`, or set TEMPORAL_ADDRESS"
        ) from None
    client.approval_trust = trust
    return client


def database(settings: Settings) -> Any:
    """The database of DATABASE_URL (``activities.database.Database``), its tables made."""
    from activities.database import Database

    db = Database(settings.database_url)
    db.create_tables()
    return db


def _print_json(value: Any) -> None:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    print(json.dumps(value, indent=2, default=str))


def _print_request(workflow_id: str, request: Any) -> None:
    from workflows.approval_gate import describe, still_needed

    print(f"request {request.request_id} on {workflow_id} (round {request.round})")
    print(f"  {request.summary}")
    print(
        f"  requested by {request.requested_by} at {request.requested_at:%Y-%m-%d %H:%M:%S}Z, "
        f"SLA deadline {request.deadline:%Y-%m-%d %H:%M:%S}Z "
        f"(escalation tier {request.escalation_level} of {len(request.escalation)})"
    )
    print(
        f"  needs {describe(request.requirements)}; still needed: {describe(still_needed(request))}"
    )
    print(
        f"  who may decide: {', '.join(request.eligible_approvers) or 'nobody'} "
        f"(roles {', '.join(request.approver_roles)})"
    )
    for vote in request.approvals:
        print(f"  approved by {vote.approver} as {vote.role} at {vote.at:%Y-%m-%d %H:%M:%S}Z")
    print(f"  action digest: {request.action_digest}")
    for entry in request.entries:
        print(f"    {entry.entry_id:<16} {entry.account:<26} {entry.amount:>14}  {entry.rationale}")
    for finding in request.compliance_findings:
        print(f"    compliance {finding.severity}: {finding.entry_id}: {finding.note}")


# -- running a command, and the terminal it prints to ----------------------------------------


def run(
    func: Callable[[argparse.Namespace, Settings], Awaitable[int]],
    params: dict[str, Any],
    **extra: Any,
) -> int:
    """Run one command: ``func(args, settings)`` on a new event loop, with the options and
    arguments Click parsed as ``args`` (an argparse-style namespace: repeated options and
    variadic arguments as lists, an absent repeatable option as None) plus ``extra``. Its
    exit code is the command's; exceptions go to ``baton.cli.main``, which maps them."""
    values = {
        name: (list(value) or None) if isinstance(value, tuple) else value
        for name, value in {**params, **extra}.items()
    }
    return asyncio.run(func(argparse.Namespace(**values), Settings.from_env()))


def runner(
    func: Callable[[argparse.Namespace, Settings], Awaitable[int]], **extra: Any
) -> Callable[..., int]:
    """The callback of a command that runs ``func``: ``run(func, params, **extra)``."""

    def callback(**params: Any) -> int:
        return run(func, params, **extra)

    return callback


def json_option(help: str = "print JSON instead of a table (for scripts)") -> Any:
    """The ``--json`` flag every read command has (``args.json``)."""
    return click.option("--json", "json", is_flag=True, help=help)


#: ``--json``'s help on a command that prints JSON anyway.
JSON_ANYWAY = "print JSON (the default; for scripts that say so)"


def wait_option(help: str = "wait for the result") -> Any:
    """The ``--wait`` flag of a command that starts a run (``args.wait``)."""
    return click.option("--wait", is_flag=True, help=help)


def options(*decorators: Callable[[Any], Any]) -> Callable[[T], T]:
    """Several Click decorators as one, applied in the order listed (as if stacked)."""

    def apply(func: T) -> T:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def print_query(
    query: Callable[[Any, str], Awaitable[Any]],
) -> Callable[[argparse.Namespace, Settings], Awaitable[int]]:
    """A status command's ``cmd_*``: print, as JSON, ``query(client, args.workflow_id)``."""

    async def cmd(args: argparse.Namespace, settings: Settings) -> int:
        client = await _client(settings)
        _print_json(await query(client, args.workflow_id))
        return EXIT_OK

    return cmd


def workflow_reader(
    group: click.Group | None,
    name: str,
    help: str,
    func: Callable[[argparse.Namespace, Settings], Awaitable[int]],
    json_help: str = JSON_ANYWAY,
    metavar: str | None = None,
    **attrs: Any,
) -> click.Command:
    """``[GROUP] NAME WORKFLOW_ID [--json]``: a command that reads one run (a process's status
    or result, an audit trail): ``group``'s, or a top-level command when it is None. ``metavar``
    names the argument in --help; ``attrs`` are Click's (short_help)."""
    command = group.command if group is not None else click.command
    read = options(click.argument("workflow_id", metavar=metavar), json_option(json_help))
    return command(name, help=help, **attrs)(read(runner(func)))


async def start_run(
    start: Awaitable[Any],
    settings: Settings,
    *,
    wait: bool,
    show: Callable[[Any], None] = _print_json,
    version: bool = False,
    refused: tuple[type[Exception], ...] = (),
) -> int:
    """The one start-and-wait path: await ``start`` (a refusal to start a second run of the
    same key, or one of ``refused``, exits 1 with its message), print the run's id and web UI
    (and the version the run got, with ``version``), then with ``wait`` ``show`` its result."""
    from workflows.client import ProcessAlreadyStarted

    errors: tuple[type[Exception], ...] = (ProcessAlreadyStarted, *refused)
    try:
        handle = await start
    except errors as err:
        raise CliError(str(err)) from None
    print(f"started {handle.id} (run {handle.result_run_id})")
    print(f"web UI: {settings.workflow_url(handle.id)}")
    if version:
        memo = await (await handle.describe()).memo()
        print(f"version: {memo.get('baton_version', 'stable')}")
    if wait:
        show(await wait_for_result(handle))
    return EXIT_OK


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr). On a terminal: colour and the terminal's width;
    otherwise (a pipe, a file, a test) plain text with no ANSI codes, and wide enough that a
    table row stays on one line for scripts that grep it."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False)
    width = int(os.environ.get("COLUMNS") or 0) or 1000
    return Console(
        file=stream, width=max(width, 1000), color_system=None, highlight=False, soft_wrap=False
    )


def print_table(
    columns: Sequence[str | tuple[str, str]], rows: Iterable[Sequence[Any]], title: str = ""
) -> None:
    """A rich table on stdout: ``columns`` are names, or (name, "right") for numbers."""
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        title=title or None,
        title_justify="left",
        pad_edge=False,
        show_edge=False,
    )
    for column in columns:
        name, justify = (column, "left") if isinstance(column, str) else column
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    sys.stdout.flush()
    out = console()
    if out.is_terminal:
        out.print(table)
        return
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():  # no padding after the last cell, for scripts
        print(line.rstrip())


async def wait_for_result(handle: Any) -> Any:
    """``--wait``: the run's result (``handle.result()``), while ``waiting`` shows it."""
    return await waiting(handle.id, handle.result())


async def waiting(what: str, result: Awaitable[T]) -> T:
    """``result`` awaited while the user sees that ``what`` is awaited. On a terminal a live
    spinner with the time waited; otherwise one plain line on stderr before and one after, so
    stdout stays the result for scripts. A failure propagates as it would without this."""
    import time

    started = time.monotonic()
    if not sys.stdout.isatty():
        print(f"waiting for {what} ...", file=sys.stderr, flush=True)
        try:
            return await result
        finally:
            print(f"{what}: waited {time.monotonic() - started:.0f}s", file=sys.stderr)
    task = asyncio.ensure_future(result)
    with console().status(f"waiting for {what}") as status:
        while not task.done():
            await asyncio.wait({task}, timeout=1)
            status.update(f"waiting for {what} ({time.monotonic() - started:.0f}s)")
    return task.result()
