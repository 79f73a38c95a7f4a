"""`baton catalog`: every agent and action a process definition may call, built-in and from
extensions (baton/extensions.py), with its input and output JSON Schema and its policy path.

baton catalog [--json] [NAME]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import click

from baton.cli_common import EXIT_OK, EXIT_USAGE, CliError, json_option, print_table, run
from baton.settings import Settings

__all__ = ["catalog", "catalogue_entries", "cmd_catalog"]


def catalogue_entries() -> list[dict[str, Any]]:
    """One entry per agent and connector action of the YAML catalogue (extensions loaded)."""
    from pydantic import TypeAdapter

    from baton import extensions
    from workflows.dsl import catalog

    extensions.load()
    entries = []
    for kind, table in (("agent", catalog.AGENTS), ("action", catalog.CONNECTORS)):
        for name, action in sorted(table.items()):
            policy = action.policy or catalog.BUILTIN_POLICIES.get(name)
            entries.append(
                {
                    "name": name,
                    "kind": kind,
                    "activity": action.activity,
                    "description": action.description,
                    "sensitive": action.sensitive,
                    "governed": action.governed,
                    "policy": policy,
                    "compensation": action.undo,
                    "extension": action.extension,
                    "input_schema": action.arguments.model_json_schema(),
                    "output_schema": TypeAdapter(action.output).json_schema(),
                }
            )
    return entries


async def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    entries = catalogue_entries()
    if args.name:
        entries = [e for e in entries if e["name"] == args.name]
        if not entries:
            from workflows.dsl import catalog
            from workflows.dsl.names import nearest

            known = [*catalog.AGENTS, *catalog.CONNECTORS]
            raise CliError(
                f"no agent or action {args.name!r}{nearest(args.name, known)}", EXIT_USAGE
            )
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True, default=str))
        return EXIT_OK
    if not args.name:
        print_table(
            ["KIND", "NAME", "ORIGIN", "POLICY", "UNDO", "WITH", "DESCRIPTION"],
            (
                [
                    e["kind"],
                    e["name"],
                    f"extension {e['extension']}" if e["extension"] else "built-in",
                    e["policy"] or "-",
                    e["compensation"] or "-",
                    ", ".join(e["input_schema"].get("properties", {})) or "-",
                    e["description"] or "",
                ]
                for e in entries
            ),
        )
        return EXIT_OK
    for e in entries:
        origin = f"extension {e['extension']}" if e["extension"] else "built-in"
        policy = f"  policy {e['policy']}" if e["policy"] else ""
        undo = f"  undo {e['compensation']}" if e["compensation"] else ""
        print(f"{e['kind']:<7} {e['name']:<36} {origin}{policy}{undo}")
        if e["description"]:
            print(f"        {e['description']}")
        fields = ", ".join(e["input_schema"].get("properties", {}))
        print(f"        with: {fields or '-'}")
        print(json.dumps({"input": e["input_schema"], "output": e["output_schema"]}, indent=2))
    return EXIT_OK


@click.command(
    "catalog",
    help="every agent and action a process may call (built-in and extensions), with schemas"
    "\n\nNAME: show one entry with its input and output JSON Schema",
)
@click.argument("name", required=False)
@json_option("every entry with its JSON Schemas")
def catalog(**params: Any) -> int:
    return run(cmd_catalog, params)
