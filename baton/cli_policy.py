"""``baton policy log`` and ``baton policy bundle``.

``log``: the decision log (activities/decision_log.py) read back from the ledger, one line per
decision (time, verdict, path, decision id, revision, requested by, first reason), or the
records themselves in OPA's decision-log format with ``--json``.

``bundle``: the policy directory as an OPA bundle (``.tar.gz`` with a ``.manifest`` and its
revision), which workers load and hot-reload when BATON_POLICY_DIR names it, and which a real
OPA server can serve.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from baton.settings import Settings

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def add_parsers(policy_sub: Any) -> None:
    """``baton policy log`` and ``baton policy bundle`` under the ``policy`` subparsers."""
    p = policy_sub.add_parser(
        "bundle", help="write the policy directory as an OPA bundle (.tar.gz with a revision)"
    )
    p.add_argument("--out", required=True, metavar="FILE.tar.gz", help="the bundle to write")
    p.add_argument("--revision", help="the manifest revision (default: the content revision)")
    p.add_argument("--policy-dir", help="policy directory (default: BATON_POLICY_DIR or policy/)")
    p.set_defaults(func=cmd_policy_bundle)
    p = policy_sub.add_parser(
        "log", help="show logged decisions (OPA decision-log format) from the audit ledger"
    )
    p.add_argument("--day", help="UTC day, YYYY-MM-DD (default: all days)")
    p.add_argument("--policy", help="only this policy, e.g. baton/finance/posting")
    p.add_argument("--limit", type=int, default=50, help="the newest N (default 50; 0 = all)")
    p.add_argument("--json", action="store_true", help="one JSON record per line (OPA's fields)")
    p.set_defaults(func=cmd_policy_log)


async def cmd_policy_log(args: argparse.Namespace, settings: Settings) -> int:
    from activities.audit import AuditLedger
    from activities.database import Database
    from activities.decision_log import read_records
    from baton.cli_common import EXIT_OK, EXIT_USAGE, CliError

    if args.day is not None and not _DAY.match(args.day):
        raise CliError(f"--day must be a UTC day like 2026-10-30, got {args.day!r}", EXIT_USAGE)
    if args.limit < 0:
        raise CliError(f"--limit must be 0 (all) or more, got {args.limit}", EXIT_USAGE)
    db = Database(settings.database_url)
    try:
        db.create_tables()
        records = read_records(AuditLedger(db), day=args.day, path=args.policy, limit=args.limit)
    finally:
        db.dispose()
    for record in records:
        print(json.dumps(record, sort_keys=True) if args.json else _line(record))
    if not args.json:
        print(f"{len(records)} decision(s)")
    return EXIT_OK


async def cmd_policy_bundle(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from activities.policy import PolicyError, build_bundle
    from baton.cli_common import EXIT_OK, EXIT_USAGE, CliError

    if not args.out.endswith((".tar.gz", ".tgz")):
        raise CliError(f"--out must name a .tar.gz or .tgz file, got {args.out!r}", EXIT_USAGE)
    if args.revision is not None and not args.revision.strip():
        raise CliError("--revision must not be empty", EXIT_USAGE)
    policy_dir = Path(args.policy_dir) if args.policy_dir else settings.policy_dir
    if not policy_dir.is_dir():
        raise CliError(f"--policy-dir {policy_dir} is not a directory", EXIT_USAGE)
    try:
        revision = build_bundle(policy_dir, args.out, args.revision)
    except PolicyError as err:
        raise CliError(f"the policies in {policy_dir} do not load: {err}") from None
    print(f"wrote {args.out} (revision {revision})")
    return EXIT_OK


def _line(record: dict[str, Any]) -> str:
    baton = record.get("baton", {})
    revision = record.get("bundles", {}).get("baton", {}).get("revision", "?")
    reasons = baton.get("reasons") or []
    reason = f"  {reasons[0]}" if reasons else ""
    masked = f"  (erased {', '.join(record['erased'])})" if record.get("erased") else ""
    return (
        f"{record.get('timestamp', '?')}  {baton.get('verdict', '?'):<16} "
        f"{record.get('path', '?')}  {record.get('decision_id', '?')}  rev {revision}  "
        f"by {record.get('requested_by', '?')}{reason}{masked}"
    )
