"""Schema migrations (activities/schema.py, activities/migrations/) on real databases.

A database built before migrations existed is adopted with every row and its hash chain intact;
a new migration that adds a column applies to a populated database on SQLite (batch mode) and
PostgreSQL; the models and the migrations do not drift apart. PostgreSQL tests skip when no
server is reachable on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from activities import schema
from activities.audit import AuditLedger
from activities.database import Database
from baton.settings import REPO_ROOT
from tests.conftest import fresh_pg_database
from workflows.contracts import AuditEvent

FIXTURE = Path(__file__).parent / "fixtures" / "baton-pre-alembic.db"


def _sqlite_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, read with the sqlite3 module (no Baton code in between)."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name != 'alembic_version'"
            )
        ]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own (dropped afterwards); skips if none."""
    yield from fresh_pg_database("baton_mig")


def test_every_module_with_tables_is_part_of_the_schema() -> None:
    """A new ``table=True`` model in a module the schema does not import would escape both the
    migrations and the drift check."""
    found = set()
    for folder in ("activities", "baton", "workflows"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if re.search(r"^class .*table\s*=\s*True.*:", path.read_text(), re.M):
                found.add(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    assert found and found <= set(schema.MODEL_MODULES), found - set(schema.MODEL_MODULES)


def test_a_database_from_before_migrations_is_adopted_with_every_row(tmp_path: Path) -> None:
    path = tmp_path / "baton.db"
    shutil.copy(FIXTURE, path)
    before = _sqlite_rows(path)
    assert len(before["audit_record"]) == 40 and before["journal_posting"]
    db = Database(f"sqlite:///{path}")
    try:
        assert schema.current(db) is None
        report = schema.upgrade(db)
        assert report.adopted and report.before is None and report.after == schema.head()
        assert report.applied == [r.revision for r in schema.history()]  # baseline first
        assert report.applied[0] == "0001_baseline"
        verified = AuditLedger(db).verify()
        assert verified.ok, verified.problems
        assert verified.rows_checked == 40
        assert schema.drift(db) == []
        again = schema.upgrade(db)
        assert not again.changed and again.applied == []
        # the chain keeps growing from where it was
        AuditLedger(db).append([_event("after-upgrade")])
        assert AuditLedger(db).verify().rows_checked == 41
    finally:
        db.dispose()
    after = _sqlite_rows(path)
    assert after.pop("audit_record")[:40] == before.pop("audit_record")
    added = {table: rows for table, rows in after.items() if table not in before}
    assert all(rows == [] for rows in added.values()), added  # tables later revisions add
    assert {t: r for t, r in after.items() if t in before} == before  # every other table
    assert "process_claim" in after and "process_claim" not in before


def test_a_foreign_table_is_not_adopted_and_nothing_changes(tmp_path: Path) -> None:
    """A table named like Baton's but lacking its columns stops the upgrade before any change."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE journal_posting (posting_id TEXT PRIMARY KEY, note TEXT)")
    conn.execute("INSERT INTO journal_posting VALUES ('P-1', 'theirs')")
    conn.commit()
    conn.close()
    db = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(RuntimeError, match="journal_posting.*lacks column"):
            schema.upgrade(db)
        assert schema.current(db) is None
        assert inspect(db.engine).get_table_names() == ["journal_posting"]
    finally:
        db.dispose()


def _event(seq: str) -> AuditEvent:
    return AuditEvent.model_validate(
        {"workflow_id": "wf-m", "run_id": "r", "seq": seq, "actor": "ops", "action": "x"}
    )


@pytest.mark.postgres
def test_postgres_database_from_before_migrations_is_adopted(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        # what create_all made before migrations is the baseline (the SQLite fixture test shows
        # it, table for table); without alembic_version, as such a database has it
        schema.upgrade(db, "0001_baseline")
        with db.session() as s:
            s.exec(text("DROP TABLE alembic_version"))  # type: ignore[call-overload]
        ledger = AuditLedger(db)
        for i in range(25):
            ledger.append([_event(f"s/{i}")])
        hashes = [r.row_hash for r in ledger.trail("wf-m")]
        report = schema.upgrade(db)
        assert report.adopted and report.after == schema.head()
        assert ledger.verify().ok and ledger.verify().rows_checked == 25
        assert [r.row_hash for r in ledger.trail("wf-m")] == hashes
        assert schema.drift(db) == []
    finally:
        db.dispose()


@pytest.mark.postgres
def test_migrations_match_the_models_on_postgres(pg_url: str) -> None:
    """Built by the migrations (no template on PostgreSQL), compared like ``alembic check``."""
    db = Database(pg_url)
    try:
        report = schema.upgrade(db)
        assert report.applied == [r.revision for r in schema.history()]
        assert schema.drift(db) == []
    finally:
        db.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    """Both ways a SQLite database gets built (migrations; the template replayed from them)
    match the models, so a model changed without a migration fails here."""
    migrated = Database(f"sqlite:///{tmp_path / 'a.db'}")
    templated = Database(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        script = schema._script()
        schema._run(migrated, schema.head(), lambda rev, _c: script._upgrade_revs("head", rev), [])
        assert schema.drift(migrated) == []
        schema.upgrade(templated)
        assert schema.current(templated) == schema.head()
        assert schema.drift(templated) == []
    finally:
        migrated.dispose()
        templated.dispose()


def test_drift_is_detected_when_a_model_changes_without_a_migration(tmp_path: Path) -> None:
    """The check can fail: a column the models have and the migrations lack is reported."""
    from sqlalchemy import Column, String

    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    table = schema.model_metadata().tables["journal_posting"]
    extra = Column("note_without_migration", String, nullable=True)
    table.append_column(extra)
    try:
        schema.upgrade(db)
        diffs = schema.drift(db)
    finally:
        table._columns.remove(extra)  # the shared metadata goes back as it was
        db.dispose()
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "note_without_migration"


ADD_COLUMN = '''"""Add journal_posting.note (a test-only revision).

Revision ID: 0099_note
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "0099_note"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal_posting") as batch:
        batch.add_column(sa.Column("note", sa.String(), nullable=False, server_default="none"))


def downgrade() -> None:
    with op.batch_alter_table("journal_posting") as batch:
        batch.drop_column("note")
'''


@pytest.fixture
def with_add_column_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real migrations plus one that adds a column, in a scratch copy of the directory."""
    base = schema.head()
    scratch = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "versions" / "0099_note.py").write_text(ADD_COLUMN.format(head=base))
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", scratch)
    schema._script.cache_clear()
    yield base
    schema._script.cache_clear()


def _populate(db: Database) -> list[str]:
    ledger = AuditLedger(db)
    ledger.append([_event(f"p/{i}") for i in range(10)])
    with db.session() as s:
        for i in range(5):
            s.exec(  # type: ignore[call-overload]
                text(
                    "INSERT INTO journal_posting (posting_id, idempotency_key, tenant, period, "
                    "entry_id, account, amount_cents, rationale, prepared_by, workflow_id, "
                    "decision_json, posted_at) VALUES (:p, :k, 'acme', '2026-10', 'E', '6100', "
                    ":c, 'r', 'agent', 'wf', '', CURRENT_TIMESTAMP)"
                ),
                params={"p": f"P-{i}", "k": f"k-{i}", "c": 100 * i},
            )
    return [r.row_hash for r in ledger.trail("wf-m")]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_migration_adding_a_column_applies_to_a_populated_database(
    backend: str, tmp_path: Path, with_add_column_revision: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'pop.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    base = with_add_column_revision
    db = Database(url)
    try:
        schema.upgrade(db, base)
        hashes = _populate(db)
        report = schema.upgrade(db)
        assert report.before == base and report.after == "0099_note"
        assert report.applied == ["0099_note"]
        with db.read_session() as s:
            rows = s.exec(  # type: ignore[call-overload]
                text("SELECT posting_id, amount_cents, note FROM journal_posting ORDER BY 1")
            ).all()
        assert [tuple(r) for r in rows] == [(f"P-{i}", 100 * i, "none") for i in range(5)]
        ledger = AuditLedger(db)
        assert ledger.verify().ok and [r.row_hash for r in ledger.trail("wf-m")] == hashes
        down = schema.downgrade(db, base)
        assert down.after == base
        assert "note" not in {c["name"] for c in inspect(db.engine).get_columns("journal_posting")}
        with db.read_session() as s:
            assert s.exec(text("SELECT count(*) FROM journal_posting")).one()[0] == 5  # type: ignore[call-overload]
    finally:
        db.dispose()


@pytest.mark.postgres
def test_workers_starting_together_migrate_once(pg_url: str) -> None:
    """Four workers upgrading one PostgreSQL database at once: the advisory lock lets one
    migrate; the others find it done."""
    reports: list[schema.UpgradeReport] = []
    errors: list[BaseException] = []

    def start() -> None:
        db = Database(pg_url)
        try:
            reports.append(schema.upgrade(db))
        except BaseException as err:  # noqa: BLE001 (collected and asserted below)
            errors.append(err)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r.applied) for r in reports) == [0, 0, 0, len(schema.history())]
    assert all(r.after == schema.head() for r in reports)


def test_baton_db_commands_on_a_pre_migration_database(tmp_path: Path) -> None:
    path = tmp_path / "baton.db"
    shutil.copy(FIXTURE, path)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "PYTHONPATH": str(REPO_ROOT)}
    baton = [str(Path(sys.executable).with_name("baton"))]  # the console script users run

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*baton, *args], env=env, capture_output=True, text=True, timeout=120)

    current = run("db", "current", "--json")
    assert current.returncode == 0, current.stderr
    assert '"current": null' in current.stdout and '"up_to_date": false' in current.stdout
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "adopted a database built before migrations (26 tables kept" in upgraded.stdout
    assert f"not migrated -> {schema.head()}" in upgraded.stdout
    again = run("db", "upgrade")
    assert f"already at {schema.head()} (nothing to do)" in again.stdout
    bad = run("db", "upgrade", "--revision", "nope")
    assert bad.returncode == 2 and "--revision must be 'head' or one of" in bad.stderr


def test_a_drafted_revision_makes_the_drift_go_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflow docs/operations/integrity.md describes: change a model, draft a revision,
    and the database it upgrades matches the models again (rows kept)."""
    from sqlalchemy import Column, String

    scratch = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", scratch)
    schema._script.cache_clear()
    schema._sqlite_template.cache_clear()
    table = schema.model_metadata().tables["kill_switch"]
    extra = Column("ticket", String, nullable=True)
    table.append_column(extra)
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        base = schema.head()
        schema.upgrade(db)
        with db.session() as s:
            s.exec(  # type: ignore[call-overload]
                text(
                    "INSERT INTO kill_switch (scope, value, mode, reason, engaged_by, engaged_at) "
                    "VALUES ('global', '', 'hold', 'test', 'ops', CURRENT_TIMESTAMP)"
                )
            )
        assert [d[0] for d in schema.drift(db)] == ["add_column"]
        drafted = schema.draft_revision("kill switch ticket", Database)
        assert "add_column" in drafted.read_text() and "ticket" in drafted.read_text()
        report = schema.upgrade(db)
        assert report.before == base and report.after != base
        assert schema.drift(db) == []
        with db.read_session() as s:
            assert s.exec(text("SELECT reason, ticket FROM kill_switch")).all() == [  # type: ignore[call-overload]
                ("test", None)
            ]
    finally:
        table._columns.remove(extra)
        db.dispose()
        schema._script.cache_clear()
        schema._sqlite_template.cache_clear()
