"""``baton mcp tools``: check the MCP configuration (BATON_MCP_CONFIG) and list every server's
tools as a worker would see them at start (activities/mcp_tools.py).

Credentials are resolved from this shell's environment, as the worker resolves them from its
own; nothing printed contains one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import click

from baton.cli_common import json_option, print_table, run
from baton.settings import Settings

mcp = click.Group("mcp", help="MCP servers whose tools agents may call")


@mcp.command(
    "tools",
    help="check the MCP configuration and list each server's tools (exit 1: a server did not "
    "answer)",
)
@click.option("--config", help="the configuration file (default: BATON_MCP_CONFIG)")
@json_option("print the tools as JSON")
def mcp_tools(**params: Any) -> int:
    return run(cmd_mcp_tools, params)


async def cmd_mcp_tools(args: argparse.Namespace, settings: Settings) -> int:
    from activities.mcp_tools import McpToolbox, load_mcp_config, model_tool_name
    from baton.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

    path = Path(args.config) if args.config else settings.mcp_config
    if path is None:
        raise CliError("no MCP configuration: set BATON_MCP_CONFIG or pass --config", EXIT_USAGE)
    toolbox = McpToolbox(load_mcp_config(path, os.environ))
    found: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for server in toolbox.servers:
        try:
            tools = await toolbox.list_tools(server)
        except Exception as err:  # noqa: BLE001 - reported per server
            failed[server] = toolbox.describe(server, err)
            continue
        found += [
            {
                "server": server,
                "tool": t.name,
                "governed_as": t.qualified_name,
                "model_name": model_tool_name(server, t.name),
                "read_only": t.read_only,
                "description": t.description.strip().splitlines()[0] if t.description else "",
                "input_schema": t.input_schema,
            }
            for t in tools
        ]
    if args.json:
        print(json.dumps({"tools": found, "failed": failed}, indent=2))
    else:
        print_table(
            ["TOOL", "KIND", "DESCRIPTION"],
            (
                [
                    t["governed_as"],
                    "read-only" if t["read_only"] else "side effects",
                    t["description"],
                ]
                for t in found
            ),
        )
        for server, error in failed.items():
            print(f"{server}: did not list its tools: {error}")
    return EXIT_FAILED if failed else EXIT_OK
