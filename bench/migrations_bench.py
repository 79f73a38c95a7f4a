"""Schema set-up cost: what building one Baton database takes, per way of building it.

    .venv/bin/python bench/migrations_bench.py [--repeat 20] [--postgres URL]

A test session builds hundreds of fresh databases, and every worker start checks the schema, so
the migrations (activities/schema.py) must cost no more than the ``create_all`` they replaced.
Measured, per database, on SQLite files in a temp dir (and on PostgreSQL with ``--postgres``):

- ``create_all`` (the old way, for reference);
- ``migrations``: every revision run through Alembic on an empty database;
- ``upgrade (template)``: what ``Database.create_tables()`` does for a fresh SQLite file: the
  DDL the migrations produced, replayed in one transaction;
- ``upgrade (at head)``: a worker start on a database already migrated (one query);
- ``adopt pre-migration``: the committed create_all-era fixture (40 audit rows) adopted.

Prints a markdown table (median and p95 in milliseconds).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import SQLModel  # noqa: E402

from activities import schema  # noqa: E402
from activities.database import Database  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "baton-pre-alembic.db"


def _migrate_all(db: Database) -> None:
    script = schema._script()
    schema._run(db, schema.head(), lambda rev, _c: script._upgrade_revs("head", rev), [])


def measure(
    repeat: int, make: Callable[[], Database], step: Callable[[Database], object]
) -> list[float]:
    times = []
    for _ in range(repeat):
        db = make()
        try:
            started = time.perf_counter()
            step(db)
            times.append((time.perf_counter() - started) * 1000)
        finally:
            db.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres", help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    schema.model_metadata()
    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Database(f"sqlite:///{tmp}/warm.db")  # imports, parsed revisions, the template
        schema.upgrade(warm)
        warm.dispose()

        def fresh() -> Database:
            return Database(f"sqlite:///{tmp}/{uuid.uuid4().hex}.db")

        def migrated() -> Database:
            db = fresh()
            schema.upgrade(db)
            return db

        def legacy() -> Database:
            path = Path(tmp) / f"{uuid.uuid4().hex}.db"
            shutil.copy(FIXTURE, path)
            return Database(f"sqlite:///{path}")

        sqlite = [
            ("create_all", fresh, lambda db: SQLModel.metadata.create_all(db.engine)),
            ("migrations", fresh, _migrate_all),
            ("upgrade (template)", fresh, schema.upgrade),
            ("upgrade (at head)", migrated, schema.upgrade),
            ("adopt pre-migration", legacy, schema.upgrade),
        ]
        for name, make, step in sqlite:
            rows.append(("SQLite", name, measure(args.repeat, make, step)))
    if args.postgres:
        import psycopg

        admin = args.postgres.replace("postgresql+psycopg", "postgresql") + "postgres"
        made: list[str] = []

        def pg() -> Database:
            name = f"baton_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            made.append(name)
            return Database(args.postgres + name)

        try:
            repeat = max(3, args.repeat // 4)
            pg_steps = [
                ("create_all", lambda db: SQLModel.metadata.create_all(db.engine)),
                ("migrations", schema.upgrade),
            ]
            for name, step in pg_steps:
                rows.append(("PostgreSQL", name, measure(repeat, pg, step)))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                for name in made:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print("| database | how | runs | median ms | p95 ms |")
    print("|---|---|---:|---:|---:|")
    for database, name, times in rows:
        p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
        print(
            f"| {database} | {name} | {len(times)} | {statistics.median(times):.1f} | {p95:.1f} |"
        )


if __name__ == "__main__":
    main()
