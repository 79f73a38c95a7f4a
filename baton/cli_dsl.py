"""`baton validate | schema | run | event`: process definitions written as YAML.

baton validate FILE...                  every error as FILE:LINE:COLUMN: message (exit 1)
baton schema [--output FILE]            the JSON Schema of the language, for editors
baton run FILE|NAME --input JSON [--id ID] [--wait]   start a run (NAME: an extension's process)
baton result RUN                        a run's result later (or why it failed)
baton event WORKFLOW_ID NAME [--data JSON]      deliver an event to a wait_event step

Installed extensions (baton/extensions.py) are loaded first: their actions and agents are in
the catalogue every definition is checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from baton.cli_common import run, wait_for_result, wait_option, workflow_reader
from baton.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _load_extensions() -> None:
    from baton import extensions

    extensions.load()


async def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.dsl.validate import validate_file
    from workflows.dsl.validate_agent import mcp_config, notes

    _load_extensions()
    bad = 0
    for file in args.files:
        with mcp_config(settings.mcp_config):
            definition, issues = validate_file(file)
            for issue in issues:
                print(issue)
            if definition is None:
                bad += 1
            else:
                for note in notes(definition):
                    print(f"{file}: {note}")
                steps = len(definition.steps)
                print(
                    f"{file}: ok ({definition.name} v{definition.version}, {steps} top-level steps)"
                )
    return EXIT_FAILED if bad else EXIT_OK


async def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.dsl.validate import schema_text

    _load_extensions()
    text = schema_text(catalogue=not args.language_only, extensions=not args.builtin)
    if args.output:
        _write(Path(args.output), text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from None


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from baton import extensions
    from baton.cli_common import _client
    from workflows.dsl.client import start_process
    from workflows.dsl.validate import validate_file

    _load_extensions()
    file = Path(args.file)
    named = extensions.yaml_process_path(args.file)
    if named is not None and not await asyncio.to_thread(file.exists):
        file = named  # an extension's process, by name
    definition, issues = validate_file(file)
    if definition is None:
        for issue in issues:
            print(issue, file=sys.stderr)
        return EXIT_USAGE
    values = _json_arg(args.input, "--input")
    if not isinstance(values, dict):
        raise ValueError("--input must be a JSON object of the process inputs")
    baton = await _client(settings)
    handle = await start_process(
        baton.client,
        definition,
        values,
        task_queue=settings.task_queue,
        workflow_id=args.id,
        source=str(file),
    )
    print(f"started {handle.id} ({definition.name} v{definition.version})")
    if args.wait:
        return await _print_result(handle)
    print(f"its result, once it is done: baton result {handle.id}")
    return EXIT_OK


def failure_text(err: BaseException) -> str:
    """Why a run failed, cause by cause: "ApprovalRejected: carol rejected ... <- ..."."""
    parts: list[str] = []
    cause: BaseException | None = err
    while cause is not None:
        kind = getattr(cause, "type", None) or type(cause).__name__
        message = str(getattr(cause, "message", "") or cause)
        if message and message != "Workflow execution failed":
            parts.append(f"{kind}: {message}")
        cause = getattr(cause, "cause", None) or cause.__cause__
    return " <- ".join(parts) or str(err)


async def _print_result(handle: Any) -> int:
    from pydantic import BaseModel
    from temporalio.client import WorkflowFailureError

    try:
        result = await wait_for_result(handle)
    except WorkflowFailureError as err:
        print(f"{handle.id} failed: {failure_text(err)}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    print(json.dumps(result, indent=2, default=str))
    return EXIT_OK


async def cmd_result(args: argparse.Namespace, settings: Settings) -> int:
    from baton.cli_common import _client
    from workflows.dsl.model import ProcessRunResult

    baton = await _client(settings)
    handle = baton.client.get_workflow_handle(args.workflow_id, result_type=ProcessRunResult)
    return await _print_result(handle)


async def cmd_event(args: argparse.Namespace, settings: Settings) -> int:
    from baton.cli_common import _client
    from workflows.dsl.client import send_event

    data = _json_arg(args.data, "--data") if args.data is not None else None
    baton = await _client(settings)
    await send_event(baton.client, args.workflow_id, args.name, data)
    print(f"event {args.name} sent to {args.workflow_id}")
    return EXIT_OK


@click.command("validate", help="check process definitions (YAML): every error")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def validate(**params: Any) -> int:
    return run(cmd_validate, params)


@click.command(
    "schema", help="JSON Schema of process definitions, for editors (with the catalogue)"
)
@click.option("--output", help="write it to this file instead of stdout")
@click.option(
    "--builtin",
    is_flag=True,
    help="Baton's catalogue only, not installed extensions' (processes/process.schema.json)",
)
@click.option(
    "--language-only",
    is_flag=True,
    help="the language alone, without the catalogue's names and fields",
)
def schema(**params: Any) -> int:
    return run(cmd_schema, params)


@click.command(
    "run",
    help="start a run of a process definition (YAML)"
    "\n\nFILE: a definition, or an extension's process name",
)
@click.argument("file", metavar="FILE")
@click.option("--input", default="{}", help="the process inputs as a JSON object")
@click.option("--id", help="workflow id (default: <name>-<random>)")
@wait_option("wait for the result and print it")
def run_command(**params: Any) -> int:
    return run(cmd_run, params)


result = workflow_reader(
    None,
    "result",
    "a YAML run's result (waits for it), or why it failed"
    "\n\nRUN: the run's workflow id (`baton run` prints it)",
    cmd_result,
    "print the result as JSON",
    metavar="RUN",
)


@click.command("event", help="deliver an event to a run's wait_event step")
@click.argument("workflow_id")
@click.argument("name")
@click.option("--data", help="event data as JSON")
def event(**params: Any) -> int:
    return run(cmd_event, params)


COMMANDS = [validate, schema, run_command, result, event]
