"""Baton's database schema as Alembic migrations: upgrade, inspect, and detect drift.

Owns: the list of modules whose SQLModel tables make up the schema, running the migrations
under activities/migrations/ against a :class:`~activities.database.Database` (the worker does
it at start; ``baton db upgrade`` does it on demand), adopting a database that an older Baton
built with ``create_all`` (no ``alembic_version`` table: its tables are kept, row for row, and the
baseline creates only what is missing), and comparing the models with the migrated schema so a
model change without a migration fails CI.

Must not: create tables any other way (``create_all`` would skip the migrations' history), drop
or rewrite rows outside a migration, or talk to Temporal.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy import Engine


class Database(Protocol):
    """What migrating needs of ``activities.database.Database`` (named by shape: that module
    imports this one, so this one does not import it)."""

    engine: Engine
    is_sqlite: bool

    def __init__(self, url: str) -> None: ...

    def writer_lock(self) -> AbstractContextManager[object]: ...

    def dispose(self) -> None: ...


MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: Every module that declares ``table=True`` models. A module missing here would leave its
#: tables out of the drift check; tests/test_migrations.py greps the source tree to keep it whole.
MODEL_MODULES = (
    "activities.database",
    "activities.audit",
    "activities.auction",
    "activities.spend",
    "activities.support",
    "activities.hr",
    "activities.canary",
    "activities.knowledge",
    "activities.customer",
    "activities.payload_store",
    "activities.tools",
    "activities.claims",
)

#: Serialises concurrent upgrades on PostgreSQL (two workers starting at once).
_PG_LOCK_KEY = 727275


def model_metadata() -> MetaData:
    """The SQLModel metadata with every Baton table registered."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
    from sqlmodel import SQLModel

    return SQLModel.metadata


@functools.cache
def _script() -> ScriptDirectory:
    """Parsed once per process: a test session builds hundreds of databases."""
    return ScriptDirectory(str(MIGRATIONS_DIR))


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head() -> str:
    revision = _script().get_current_head()
    assert revision is not None, "activities/migrations/versions holds no revision"
    return revision


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool


def history() -> list[Revision]:
    """Every migration, oldest first."""
    revisions = list(_script().walk_revisions())[::-1]
    return [
        Revision(
            revision=r.revision,
            down_revision=r.down_revision if isinstance(r.down_revision, str) else None,
            message=(r.doc or "").strip(),
            is_head=r.is_head,
        )
        for r in revisions
    ]


@dataclass
class UpgradeReport:
    """What an upgrade did, for ``baton db upgrade`` and the worker's start-up log."""

    before: str | None
    after: str | None
    applied: list[str] = field(default_factory=list)
    #: the database had Baton's tables but no alembic_version: built by create_all before
    #: migrations existed. Its tables were kept and it was stamped, then upgraded.
    adopted: bool = False
    existing_tables: int = 0

    @property
    def changed(self) -> bool:
        return self.before != self.after


@contextmanager
def _locked_connection(db: Database) -> Iterator[Connection]:
    """One write transaction that holds the schema lock: SQLite's BEGIN IMMEDIATE (the
    engine's begin hook) or a PostgreSQL advisory lock; DDL on both is transactional, so a
    failed migration leaves the database as it was."""
    with db.writer_lock(), db.engine.begin() as conn:
        if not db.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield conn


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def current(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with db.engine.connect() as conn:
        return _current(conn)


def _run(
    db: Database, destination: str, fn: Callable[[Any, MigrationContext], Any], applied: list[str]
) -> None:
    script = _script()
    cfg = _config()
    with _locked_connection(db) as conn:
        cfg.attributes["connection"] = conn

        def record(ctx: MigrationContext, step: Any, heads: Any, run_args: Any) -> None:
            applied.append(step.up_revision_id if step.is_upgrade else str(step.down_revision_ids))

        cfg.attributes["on_version_apply"] = record
        with EnvironmentContext(cfg, script, fn=fn, destination_rev=destination):
            script.run_env()


def upgrade(db: Database, revision: str = "head") -> UpgradeReport:
    """Bring the database to ``revision``; a no-op (one query) when it is already there."""
    with db.engine.connect() as conn:
        before = _current(conn)
        tables = set(inspect(conn).get_table_names())
    report = UpgradeReport(before=before, after=before)
    target = head() if revision == "head" else revision
    if before == target:
        return report
    report.adopted = before is None and bool(tables & set(model_metadata().tables))
    report.existing_tables = len(tables)
    if db.is_sqlite and not tables and revision == "head" and _create_from_template(db, target):
        report.applied = [r.revision for r in history()]
        report.after = target
        return report
    script = _script()
    _run(db, target, lambda rev, _ctx: script._upgrade_revs(target, rev), report.applied)
    report.after = current(db)
    return report


@functools.cache
def _sqlite_template(target: str, database_class: type[Database]) -> tuple[str, ...]:
    """The DDL the migrations produce on SQLite, read back from a database they just built.

    A test session makes hundreds of fresh databases; replaying these statements in one
    transaction costs what ``create_all`` did, where running the migrations costs twice that.
    The statements come from the migrations themselves, so the result is the same schema.
    (``database_class`` is the caller's: this module does not import the database module,
    which imports it.)
    """
    with tempfile.TemporaryDirectory() as directory:
        template = database_class(f"sqlite:///{directory}/template.db")
        try:
            script = _script()
            _run(template, target, lambda rev, _ctx: script._upgrade_revs(target, rev), [])
            with template.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
                ).all()
        finally:
            template.dispose()
    return tuple(sql for (sql,) in rows)


def _create_from_template(db: Database, target: str) -> bool:
    """Build an empty SQLite database from the template; False if it is no longer empty (a
    concurrent process got there first: then the ordinary migration path decides)."""
    statements = _sqlite_template(target, type(db))
    with _locked_connection(db) as conn:
        if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return False
        for sql in statements:
            conn.exec_driver_sql(sql)
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (target,))
    return True


def downgrade(db: Database, revision: str) -> UpgradeReport:
    """Take the database back to ``revision`` (``base`` drops every table: for tests only)."""
    before = current(db)
    report = UpgradeReport(before=before, after=before)
    script = _script()
    _run(db, revision, lambda rev, _ctx: script._downgrade_revs(revision, rev), report.applied)
    report.after = current(db)
    return report


def draft_revision(message: str, database_class: type[Database]) -> Path:
    """Write a new revision that turns the current head into the models (Alembic's
    autogenerate, compared on a scratch SQLite database at head); returns its file.

    A draft: read it, fix what autogenerate cannot know (renames look like drop + add, a new
    NOT NULL column needs a ``server_default`` for the rows already there), then commit it.
    """
    from alembic import command

    before = {p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py")}
    with tempfile.TemporaryDirectory() as directory:
        scratch = database_class(f"sqlite:///{directory}/draft.db")
        try:
            script = _script()
            _run(scratch, head(), lambda rev, _ctx: script._upgrade_revs(head(), rev), [])
            cfg = _config()
            with _locked_connection(scratch) as conn:
                cfg.attributes["connection"] = conn
                command.revision(cfg, message=message, autogenerate=True)
        finally:
            scratch.dispose()
    _script.cache_clear()
    _sqlite_template.cache_clear()
    [written] = [p for p in (MIGRATIONS_DIR / "versions").glob("*.py") if p.name not in before]
    return written


def drift(db: Database) -> list[Any]:
    """What differs between the models and the migrated database (empty: none).

    The same comparison ``alembic check`` makes; a model changed without a migration shows up
    here as an added/removed table, column, index or a changed type.
    """
    metadata = model_metadata()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "target_metadata": metadata}
        )
        diffs = compare_metadata(context, metadata)
    return [d for d in diffs if not _is_alembic_own(d)]


def _is_alembic_own(diff: Any) -> bool:
    return (
        isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"
    )


__all__ = [
    "MIGRATIONS_DIR",
    "MODEL_MODULES",
    "Revision",
    "UpgradeReport",
    "current",
    "downgrade",
    "draft_revision",
    "drift",
    "head",
    "history",
    "model_metadata",
    "upgrade",
]
