"""Database access and the systems-of-record tables (SQLModel).

Owns: engine creation for SQLite (default) and PostgreSQL (``DATABASE_URL``), the tables of the
general ledger, the bank statement and the accounting periods, the journal postings Baton makes,
the notification outbox and the kill switch.
Money is stored as integer cents so sums are exact on every database.

Must not: talk to Temporal, call models, or decide policy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, UniqueConstraint, create_engine, text

from activities.store_base import GovernedEffect, KeyedEffect


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Databases hand timestamps back naive (SQLite) or in the session's zone (PostgreSQL)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class AccountingPeriod(SQLModel, table=True):
    __tablename__ = "accounting_period"
    tenant: str = Field(primary_key=True)
    period: str = Field(primary_key=True)
    status: str = "open"  # open | closed
    closed_by: str | None = None
    closed_at: datetime | None = None


class PeriodLine(SQLModel):
    """The columns a line of one tenant's period has in the books and on the bank statement
    alike: the amount (cents) and the reference reconciliation matches the two by."""

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(index=True)
    period: str = Field(index=True)
    amount_cents: int
    reference: str


class LedgerEntryRow(PeriodLine, table=True):
    """A general-ledger cash entry as booked by accountants (the books)."""

    __tablename__ = "ledger_entry"
    __table_args__ = (UniqueConstraint("tenant", "period", "entry_id"),)
    entry_id: str
    booked_on: str
    account: str
    description: str


class BankStatementLine(PeriodLine, table=True):
    """A line of the bank statement for the period (what really moved)."""

    __tablename__ = "bank_statement_line"
    __table_args__ = (UniqueConstraint("tenant", "period", "line_id"),)
    line_id: str
    value_date: str
    memo: str


class JournalPosting(GovernedEffect, table=True):
    """An adjusting entry Baton posted (or a reversal of one). Unique per idempotency key."""

    __tablename__ = "journal_posting"
    posting_id: str = Field(primary_key=True)
    period: str = Field(index=True)
    entry_id: str
    account: str
    amount_cents: int
    rationale: str
    prepared_by: str
    workflow_id: str = Field(default="", index=True)  # indexed: baton doctor finds postings by run
    reverses_posting_id: str | None = Field(default=None, index=True)
    decision_json: str = ""  # the policy outcome it was posted under, returned again on retry
    posted_at: datetime = Field(default_factory=utcnow)


class NotificationOutbox(KeyedEffect, table=True):
    """A notification queued for delivery (activities/notify.py), one row per idempotency key.

    Written in the same transaction as its ``notification.queued`` audit row. A relay (or the
    receiving system itself) reads rows with ``delivered_at IS NULL``, delivers them, and sets
    ``delivered_at``; receivers drop repeats by ``idempotency_key``.
    """

    __tablename__ = "notification_outbox"
    id: int | None = Field(default=None, primary_key=True)
    kind: str
    workflow_id: str = Field(index=True)
    request_id: str
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = Field(default=None, index=True)


class KillSwitchRow(SQLModel, table=True):
    """One engagement of the kill switch (activities/kill_switch.py): active while cleared_at is
    null. Rows are never deleted, so the table is the switch's own history."""

    __tablename__ = "kill_switch"
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(index=True)  # global | process | agent | tenant
    value: str = ""  # "" for global, else the process / agent role / tenant name
    mode: str = "hold"  # hold | cancel
    reason: str
    engaged_by: str
    engaged_at: datetime = Field(default_factory=utcnow)
    cleared_at: datetime | None = Field(default=None, index=True)
    cleared_by: str | None = None
    clear_reason: str | None = None


class ShadowAction(KeyedEffect, table=True):
    """What a shadow run would have done to a system of record (a posting, a reversal, closing
    a period), recorded instead of doing it. One row per idempotency key."""

    __tablename__ = "shadow_action"
    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(index=True)
    action: str  # post | reverse | close_period
    tenant: str
    period: str
    entry_id: str = ""
    account: str = ""
    amount_cents: int = 0
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    recorded_at: datetime = Field(default_factory=utcnow)


class GovernedActionRow(KeyedEffect, table=True):
    """A governed action of an extension (baton/extensions.py) that policy allowed and that ran:
    its outcome is returned again on a retry (one row per idempotency key), and its undo marks
    it compensated (once)."""

    __tablename__ = "governed_action"
    action_id: str = Field(primary_key=True)
    action: str = Field(index=True)
    tenant: str = ""
    workflow_id: str = Field(default="", index=True)
    args_json: str = ""  # the arguments, tenant and requester it ran with (for its undo)
    outcome_json: str = ""  # the GovernedActionOutcome it ran under
    done_at: datetime = Field(default_factory=utcnow)
    compensated_at: datetime | None = None


class ThrottleBucket(SQLModel, table=True):
    """Per throttle key: the rate limiter's tokens, and the row every acquirer of that key locks
    first (so counting concurrency leases and taking a token is one serialised step)."""

    __tablename__ = "throttle_bucket"
    key: str = Field(primary_key=True)
    tokens: float = 0.0
    refilled_at: datetime = Field(default_factory=utcnow)


class ThrottleLease(SQLModel, table=True):
    """A concurrency slot held by one activity attempt; it expires if its worker dies."""

    __tablename__ = "throttle_lease"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)
    holder: str = Field(index=True)
    expires_at: datetime


class Database:
    """A SQLModel engine plus the few session helpers Baton needs.

    SQLite: WAL journal and ``BEGIN IMMEDIATE`` transactions, so concurrent activity threads
    queue for the write lock instead of failing with 'database is locked' halfway through.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                _private_sqlite_file(Path(path))
            self.engine: Engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            _make_sqlite_transactions_immediate(self.engine)
        else:
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)
        self._writers: AbstractContextManager[object] = (
            threading.Lock() if self.is_sqlite else nullcontext()
        )
        # same pool; tells the SQLite begin hook that this transaction only reads
        self._read_engine = self.engine.execution_options(baton_read_only=True)

    def create_tables(self) -> None:
        """Bring the schema to the newest migration (activities/schema.py): creates a new
        database, upgrades an older one, adopts one an older Baton built with ``create_all``."""
        from activities.schema import upgrade  # alembic is imported only when needed

        upgrade(self)

    def writer_lock(self) -> AbstractContextManager[object]:
        """This process's SQLite writers' queue (a no-op on PostgreSQL)."""
        return self._writers

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error.

        On SQLite, writers of this process queue on a lock first: SQLite's own busy handler
        would make them poll with sleeps of up to 100 ms, which starves a busy worker.
        """
        with self._writers, Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it does not take the write lock."""
        with Session(self._read_engine, expire_on_commit=False) as session:
            yield session

    def lock_audit_chain(self, session: Session) -> None:
        """Serialise appends to the audit hash chain for the rest of this transaction."""
        if not self.is_sqlite:  # SQLite already holds the write lock (BEGIN IMMEDIATE)
            session.exec(text("SELECT pg_advisory_xact_lock(727274)"))  # type: ignore[call-overload]

    def dispose(self) -> None:
        self.engine.dispose()


def _private_sqlite_file(path: Path) -> None:
    """The SQLite file (audit ledger, approvals, tokens' digests, business data) readable by its
    owner only: created 0600 (SQLite gives its -wal/-shm files the same mode), an existing one
    tightened; a new directory for it is 0700, and so is Baton's state directory ``.baton``."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
    elif parent.name == ".baton" and parent.stat().st_mode & 0o077:
        os.chmod(parent, 0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def _make_sqlite_transactions_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of any process; only power loss may drop the
        # last commits. Production ledgers run on PostgreSQL.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        read_only = conn.get_execution_options().get("baton_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


__all__ = [
    "AccountingPeriod",
    "BankStatementLine",
    "Database",
    "GovernedActionRow",
    "JournalPosting",
    "KillSwitchRow",
    "LedgerEntryRow",
    "NotificationOutbox",
    "PeriodLine",
    "ShadowAction",
    "ThrottleBucket",
    "ThrottleLease",
    "as_utc",
    "from_cents",
    "to_cents",
    "utcnow",
]
