"""``baton db upgrade|current|history|check|revision``: schema migrations (activities/schema.py).

The worker upgrades the schema at start, so these are for operators who upgrade before rolling
out workers (one upgrade, then many workers that find nothing to do), who want to see where a
database stands, or (``check``) who want CI to fail when a model changed without a migration.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import click

from baton.cli_common import json_option, print_table, run
from baton.settings import Settings

db = click.Group("db", help="database schema migrations: upgrade, current, history, check")


@db.command("upgrade", help="migrate the database (DATABASE_URL) to the newest schema")
@click.option("--revision", default="head", help="the revision to reach (default: head)")
@json_option("print the result as JSON")
def db_upgrade(**params: Any) -> int:
    return run(cmd_db_upgrade, params)


@db.command("current", help="the revision the database is at, and the newest one")
@json_option("print the result as JSON")
def db_current(**params: Any) -> int:
    return run(cmd_db_current, params)


@db.command("history", help="every migration, oldest first")
@json_option("print the result as JSON")
def db_history(**params: Any) -> int:
    return run(cmd_db_history, params)


@db.command("check", help="fail (exit 1) if the models differ from the migrated schema (drift)")
def db_check(**params: Any) -> int:
    return run(cmd_db_check, params)


@db.command("revision", help="draft a migration from the models' changes (for Baton developers)")
@click.option("-m", "--message", required=True, help="what the migration changes")
def db_revision(**params: Any) -> int:
    return run(cmd_db_revision, params)


def _database(settings: Settings) -> Any:
    from activities.database import Database

    return Database(settings.database_url)


def _where(settings: Settings) -> str:
    """The database's URL without a password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from activities import schema
    from baton.cli_common import EXIT_OK, EXIT_USAGE, CliError

    known = {r.revision for r in schema.history()} | {"head"}
    if args.revision not in known:
        raise CliError(
            f"--revision must be 'head' or one of {sorted(known - {'head'})}, "
            f"got {args.revision!r}",
            EXIT_USAGE,
        )
    db = _database(settings)
    try:
        report = schema.upgrade(db, args.revision)
    finally:
        db.dispose()
    if args.json:
        print(
            json.dumps(
                {
                    "database": _where(settings),
                    "before": report.before,
                    "after": report.after,
                    "applied": report.applied,
                    "adopted": report.adopted,
                }
            )
        )
    elif not report.changed:
        print(f"{_where(settings)}: already at {report.after} (nothing to do)")
    else:
        if report.adopted:
            print(
                f"{_where(settings)}: adopted a database built before migrations "
                f"({report.existing_tables} tables kept with their rows)"
            )
        print(
            f"{_where(settings)}: {report.before or _unmigrated(report)} -> {report.after} "
            f"(applied {', '.join(report.applied)})"
        )
    return EXIT_OK


def _unmigrated(report: Any) -> str:
    return "not migrated" if report.existing_tables else "empty"


async def cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from activities import schema
    from baton.cli_common import EXIT_OK

    db = _database(settings)
    try:
        revision = schema.current(db)
    finally:
        db.dispose()
    newest = schema.head()
    if args.json:
        print(
            json.dumps(
                {
                    "database": _where(settings),
                    "current": revision,
                    "head": newest,
                    "up_to_date": revision == newest,
                }
            )
        )
    else:
        state = "up to date" if revision == newest else f"behind: run `baton db upgrade` ({newest})"
        print(f"{_where(settings)}: {revision or 'not migrated'} ({state})")
    return EXIT_OK


async def cmd_db_history(args: argparse.Namespace, settings: Settings) -> int:
    from activities import schema
    from baton.cli_common import EXIT_OK

    revisions = schema.history()
    if args.json:
        print(json.dumps([r.__dict__ for r in revisions]))
    else:
        print_table(
            ["FROM", "REVISION", "", "MESSAGE"],
            (
                [
                    r.down_revision or "<base>",
                    r.revision,
                    "head" if r.is_head else "",
                    r.message.splitlines()[0],
                ]
                for r in revisions
            ),
        )
    return EXIT_OK


async def cmd_db_check(args: argparse.Namespace, settings: Settings) -> int:
    """Migrates a scratch SQLite database and compares it with the models."""
    import tempfile

    from activities import schema
    from activities.database import Database
    from baton.cli_common import EXIT_FAILED, EXIT_OK

    with tempfile.TemporaryDirectory() as directory:
        db = Database(f"sqlite:///{directory}/check.db")
        try:
            schema.upgrade(db)
            diffs = schema.drift(db)
        finally:
            db.dispose()
    if diffs:
        print(
            "the models differ from the migrations; add a migration (docs/operations/integrity.md):"
        )
        for diff in diffs:
            print(f"  {diff}")
        return EXIT_FAILED
    print(f"no drift: the models match the migrations at {schema.head()}")
    return EXIT_OK


async def cmd_db_revision(args: argparse.Namespace, settings: Settings) -> int:
    from activities import schema
    from activities.database import Database
    from baton.cli_common import EXIT_OK

    path = schema.draft_revision(args.message, Database)
    print(f"wrote {path}: review it (renames, server defaults for NOT NULL), then commit it")
    return EXIT_OK
