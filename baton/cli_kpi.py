"""``baton kpi``: the KPI report (baton/kpi.py) as a table, JSON or CSV, and trend charts."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from baton.cli_common import json_option, run
from baton.settings import Settings


@click.command(
    "kpi",
    help="KPIs per process and version: completion/error rate, cycle time, escalations, "
    "approval wait, compensations, tokens and cost per transaction, MTTD, MTTR",
)
@click.option("--since", default="7d", help="24h, 7d, 2w or an ISO date (default 7d)")
@click.option("--process", help="one process, e.g. finance_close (default: all)")
@click.option("--task-queue", help="only runs on this task queue (default: all)")
@click.option("--format", default="table", help="table (default), json or csv")
@json_option("print JSON (the same as --format json)")
@click.option("--plot", metavar="DIR", help="also write PNG trend charts into DIR")
def kpi(**params: Any) -> int:
    return run(cmd_kpi, params)


async def cmd_kpi(args: argparse.Namespace, settings: Settings) -> int:
    from activities.database import Database
    from baton import kpi
    from baton.cli_common import EXIT_OK, _client, print_table

    # bad input fails before any connection
    since = kpi.parse_since(args.since, datetime.now(UTC))
    fmt = "json" if args.json else args.format
    kpi.render([], fmt)
    query = kpi.runs_query(since, args.process, args.task_queue)
    baton = await _client(settings)
    db = Database(settings.database_url)
    try:
        runs = await kpi.gather(baton.client, db, query)
    finally:
        db.dispose()
    rows = kpi.compute(runs)
    if fmt == "table" and rows:
        header, body = kpi.table(rows)
        print_table(header, body)
    else:
        print(kpi.render(rows, fmt))
    if args.plot:
        for path in kpi.plot(runs, Path(args.plot)):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK
