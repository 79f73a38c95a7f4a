"""``baton kpi``: the KPI report (baton/kpi.py) as a table, JSON or CSV, and trend charts."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baton.settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "kpi",
        help="KPIs per process and version: completion/error rate, cycle time, escalations, "
        "approval wait, compensations, tokens and cost per transaction, MTTD, MTTR",
    )
    p.add_argument("--since", default="7d", help="24h, 7d, 2w or an ISO date (default 7d)")
    p.add_argument("--process", help="one process, e.g. finance_close (default: all)")
    p.add_argument("--task-queue", help="only runs on this task queue (default: all)")
    p.add_argument("--format", default="table", help="table (default), json or csv")
    p.add_argument("--plot", metavar="DIR", help="also write PNG trend charts into DIR")
    p.set_defaults(func=cmd_kpi)


async def cmd_kpi(args: argparse.Namespace, settings: Settings) -> int:
    from activities.database import Database
    from baton import kpi
    from baton.cli_common import EXIT_OK, _client

    # bad input fails before any connection
    since = kpi.parse_since(args.since, datetime.now(UTC))
    kpi.render([], args.format)
    query = kpi.runs_query(since, args.process, args.task_queue)
    baton = await _client(settings)
    db = Database(settings.database_url)
    try:
        runs = await kpi.gather(baton.client, db, query)
    finally:
        db.dispose()
    print(kpi.render(kpi.compute(runs), args.format))
    if args.plot:
        for path in kpi.plot(runs, Path(args.plot)):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK
