"""``baton policy test|eval|bundle|log``: the policy tools.

``test``: the Rego unit tests (installed extensions' too). ``eval``: one input decided as the
gate would, exit 0 allow, 1 anything else, 2 bad input.

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
import sys
from typing import Any

import click

from baton.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, json_option, run
from baton.settings import Settings

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


policy = click.Group("policy", help="policy tools")


@policy.command("test", help="run the Rego unit tests")
@click.option("--engine", type=click.Choice(["opa", "regorus"]), default="opa")
def policy_test(**params: Any) -> int:
    return run(cmd_policy_test, params)


@policy.command("eval", help="decide one input: print the decision document, verdict and revision")
@click.option("--input", required=True, metavar="FILE.json", help="the policy's input")
@click.option(
    "--policy",
    default="baton/base/agent_call",
    help="Rego package, e.g. baton/base/agent_call or baton/finance/posting",
)
@click.option("--engine", type=click.Choice(["opa", "regorus"]), default="opa")
@click.option("--policy-dir", help="policy directory (default: BATON_POLICY_DIR or policy/)")
def policy_eval(**params: Any) -> int:
    return run(cmd_policy_eval, params)


@policy.command(
    "bundle", help="write the policy directory as an OPA bundle (.tar.gz with a revision)"
)
@click.option("--out", required=True, metavar="FILE.tar.gz", help="the bundle to write")
@click.option("--revision", help="the manifest revision (default: the content revision)")
@click.option("--policy-dir", help="policy directory (default: BATON_POLICY_DIR or policy/)")
def policy_bundle(**params: Any) -> int:
    return run(cmd_policy_bundle, params)


@policy.command("log", help="show logged decisions (OPA decision-log format) from the audit ledger")
@click.option("--day", help="UTC day, YYYY-MM-DD (default: all days)")
@click.option("--policy", help="only this policy, e.g. baton/finance/posting")
@click.option("--limit", type=int, default=50, help="the newest N (default 50; 0 = all)")
@json_option("one JSON record per line (OPA's fields)")
def policy_log(**params: Any) -> int:
    return run(cmd_policy_log, params)


async def cmd_policy_test(args: argparse.Namespace, settings: Settings) -> int:
    from activities.policy import run_rego_tests
    from baton import extensions

    extra = extensions.load().policy_dirs  # installed extensions' policies and their tests
    results = run_rego_tests(settings.policy_dir, engine=args.engine, extra_dirs=extra)
    failed = [r for r in results if not r.passed]
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        print(f"{mark} {r.name}{': ' + r.error if r.error else ''}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed or not results else EXIT_OK


async def cmd_policy_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate one policy on one input file, as the gate would: exit 0 allow, 1 anything else
    (deny, require_approval), 2 bad input. Prints JSON on stdout, a one-line verdict on stderr."""
    import uuid
    from pathlib import Path

    from activities.policy import (
        EmbeddedOpaEngine,
        PolicyBundle,
        PolicyError,
        RegorusEngine,
        explain_sync,
        policy_packages,
        rule_path,
    )
    from workflows.contracts import PolicyQuery

    document = _read_json_object(args.input)
    try:
        segments = rule_path(args.policy)
    except ValueError as err:
        raise CliError(f"--policy: {err}", EXIT_USAGE) from None
    if segments[-1] == "decision":  # the document's own path names the same policy
        segments = segments[:-1]
    policy_dir = Path(args.policy_dir) if args.policy_dir else settings.policy_dir
    try:
        snapshot = PolicyBundle(policy_dir, reload_interval=0).current()
    except PolicyError as err:
        raise CliError(f"the policies in {policy_dir} do not load: {err}") from None
    known = policy_packages(snapshot)
    if ".".join(segments) not in known:
        raise CliError(
            f"unknown policy {args.policy!r}: no Rego package {'.'.join(segments)} in "
            f"{policy_dir}; known policies: {', '.join('/'.join(k.split('.')) for k in known)}",
            EXIT_USAGE,
        )
    engine = (EmbeddedOpaEngine if args.engine == "opa" else RegorusEngine)(policy_dir)
    query = PolicyQuery(policy="/".join(segments), input=document, subject=Path(args.input).name)
    value, decision = explain_sync(engine, query, f"cli/{uuid.uuid4().hex[:12]}")
    print(
        json.dumps(
            {
                "policy": decision.policy,
                "engine": decision.engine,
                "revision": decision.revision,
                "verdict": decision.verdict,
                "reasons": decision.reasons,
                "obligations": decision.obligations.model_dump(mode="json"),
                "decision": value,
            },
            indent=2,
        )
    )
    print(f"{decision.verdict} (policy revision {decision.revision})", file=sys.stderr)
    return EXIT_OK if decision.verdict == "allow" else EXIT_FAILED


def _read_json_object(name: str) -> dict[str, Any]:
    """The JSON object in file ``name``; bad input is a CliError (exit 2) naming the problem."""

    def no_constants(token: str) -> None:
        raise ValueError(f"{token} is not a JSON number")

    try:
        with open(name, encoding="utf-8") as file:
            text = file.read()
    except OSError as err:
        raise CliError(f"cannot read --input {name}: {err.strerror or err}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"--input {name} is not UTF-8 text", EXIT_USAGE) from None
    try:
        document = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as err:
        raise CliError(
            f"--input {name} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})",
            EXIT_USAGE,
        ) from None
    except ValueError as err:
        raise CliError(f"--input {name} is not valid JSON: {err}", EXIT_USAGE) from None
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else type(document).__name__
        raise CliError(
            f"--input {name} must hold a JSON object (the policy's input), not {kind}",
            EXIT_USAGE,
        )
    return document


async def cmd_policy_log(args: argparse.Namespace, settings: Settings) -> int:
    from activities.audit import AuditLedger
    from activities.database import Database
    from activities.decision_log import read_records

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
