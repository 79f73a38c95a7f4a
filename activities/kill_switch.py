"""The kill switch: stop agents touching systems of record, within seconds, on every worker.

An operator engages it with a scope and a reason (``baton kill engage --scope tenant:acme
--reason ...``); it lives in the database every worker already uses, so no worker needs a restart
or a message. Scopes: ``global``, ``process:<name>`` (e.g. finance_close), ``agent:<role>`` (e.g.
reconciler) and ``tenant:<name>``.

What it stops: every sensitive activity (postings, closing a period) checks the switch inside its
own transaction and writes nothing while a matching engagement is active; every agent call checks
it before calling the model. Compensations (reversals, reopening a period) are never stopped:
undoing must always be possible. A stopped activity raises a non-retryable ``KillSwitchEngaged``
error whose details say the scope, mode and reason; the workflow then holds at that step until the
switch is cleared (mode ``hold``) or fails and compensates (mode ``cancel``), see
``workflows/kill_switch_gate.py``.

Workers read the active engagements at most once per ``ttl_seconds`` (default 2 s), so a change
reaches every worker within that time plus the time of the step in flight.

Must not: be imported by workflows except through ``imports_passed_through``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import exists
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditLedger, operator_event
from activities.database import Database, KillSwitchRow, utcnow
from workflows.contracts import (
    KILL_SWITCH_ERROR,
    AuditEvent,
    KillSwitchCheck,
    KillSwitchState,
    KillSwitchStatus,
)
from workflows.errors import BatonError

SCOPES = ("global", "process", "agent", "tenant")
AUDIT_WORKFLOW_ID = "baton:kill-switch"

_TABLE = KillSwitchRow.__table__  # type: ignore[attr-defined]
# Built once, read with Core: every sensitive step runs it inside its transaction, where the
# ORM's query and identity map cost several times the query itself (usually no row at all).
_ACTIVE = core_select(_TABLE).where(_TABLE.c.cleared_at.is_(None)).order_by(_TABLE.c.id)


class KillSwitchError(BatonError, ValueError):
    """Bad input to engage/clear: the message names the field and the expectation."""


def parse_scope(text: str) -> tuple[str, str]:
    """'global' | 'process:finance_close' | 'agent:reconciler' | 'tenant:acme' -> (scope, value)."""
    scope, sep, value = text.partition(":")
    if scope == "global" and not sep:
        return "global", ""
    if scope not in SCOPES or scope == "global" or not sep or not value.strip():
        raise KillSwitchError(
            f"scope {text!r}: expected 'global', 'process:<name>', 'agent:<role>' or "
            "'tenant:<name>'"
        )
    return scope, value.strip()


@dataclass(frozen=True)
class Subject:
    """What an activity is about to do, in the switch's terms."""

    process: str = ""
    agent: str = ""
    tenant: str = ""

    def matches(self, row: KillSwitchRow) -> bool:
        return row.scope == "global" or (row.scope, row.value) in {
            ("process", self.process),
            ("agent", self.agent),
            ("tenant", self.tenant),
        }


def state_of(row: KillSwitchRow) -> KillSwitchState:
    return KillSwitchState(
        id=row.id or 0,
        scope=row.scope if row.scope == "global" else f"{row.scope}:{row.value}",
        mode=row.mode,  # type: ignore[arg-type]
        reason=row.reason,
        engaged_by=row.engaged_by,
        engaged_at=row.engaged_at,
    )


class KillSwitch:
    #: True while any engagement is active: a column a sensitive step can read in its first
    #: statement (activities/finance.py) and take the full look (:meth:`raise_if_blocking`, in
    #: the same transaction) only when it is true. Usually no switch is engaged at all.
    ENGAGED_ANY = exists().where(_TABLE.c.cleared_at.is_(None))

    def __init__(self, db: Database, ledger: AuditLedger, *, ttl_seconds: float = 2.0) -> None:
        self.db = db
        self.ledger = ledger
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._cached: list[KillSwitchRow] = []
        self._read_at = float("-inf")

    # -- operators ---------------------------------------------------------------------------

    def engage(self, scope: str, *, reason: str, by: str, mode: str = "hold") -> KillSwitchState:
        """Engage for ``scope`` ('tenant:acme'...). Engaging an engaged scope again changes
        nothing and returns the active engagement."""
        kind, value = parse_scope(scope)
        if mode not in ("hold", "cancel"):
            raise KillSwitchError(f"mode {mode!r}: expected 'hold' or 'cancel'")
        if not reason.strip():
            raise KillSwitchError("reason: say why the switch is engaged (it goes to the audit)")
        if not by.strip():
            raise KillSwitchError("by: name who engages the switch")
        with self.db.session() as session:
            existing = self._active_row(session, kind, value)
            if existing is not None:
                return state_of(existing)
            row = KillSwitchRow(
                scope=kind, value=value, mode=mode, reason=reason.strip(), engaged_by=by
            )
            session.add(row)
            session.flush()
            self.ledger.append_in(
                session, [self._event(row, "engaged", by, reason, {"mode": mode})]
            )
            state = state_of(row)
        self._forget()
        return state

    def clear(self, scope: str, *, reason: str, by: str) -> KillSwitchState | None:
        """Clear the active engagement of ``scope``; None if it was not engaged."""
        kind, value = parse_scope(scope)
        if not reason.strip():
            raise KillSwitchError("reason: say why the switch is cleared (it goes to the audit)")
        with self.db.session() as session:
            row = self._active_row(session, kind, value)
            if row is None:
                return None
            row.cleared_at, row.cleared_by, row.clear_reason = utcnow(), by, reason.strip()
            session.add(row)
            self.ledger.append_in(session, [self._event(row, "cleared", by, reason, {})])
            state = state_of(row)
        self._forget()
        return state

    def active(self) -> list[KillSwitchState]:
        with self.db.read_session() as session:
            return [state_of(r) for r in self._active_rows(session)]

    # -- workers -----------------------------------------------------------------------------

    def blocking(
        self, subject: Subject, session: Session | None = None, *, fresh: bool = False
    ) -> KillSwitchState | None:
        """The engagement that stops ``subject``, if any (the oldest one).

        With ``session``: read inside the caller's transaction (a sensitive write sees the switch
        exactly as it commits). Otherwise from the per-worker cache (at most ttl_seconds old),
        or, with ``fresh``, from the database now (refreshing the cache)."""
        if fresh:
            self._forget()
        rows = self._active_rows(session) if session is not None else self._cached_rows()
        for row in rows:
            if subject.matches(row):
                return state_of(row)
        return None

    def raise_if_blocking(self, subject: Subject, session: Session | None = None) -> None:
        state = self.blocking(subject, session)
        if state is not None:
            raise engaged_error(state, subject)

    # -- internals -----------------------------------------------------------------------------

    def _cached_rows(self) -> list[KillSwitchRow]:
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl_seconds:
                return self._cached
        with self.db.read_session() as session:
            rows = self._active_rows(session)
        with self._lock:
            self._cached, self._read_at = rows, time.monotonic()
        return rows

    def _forget(self) -> None:
        with self._lock:
            self._read_at = float("-inf")

    @staticmethod
    def _active_rows(session: Session) -> list[KillSwitchRow]:
        """The active engagements, oldest first, as rows detached from ``session``."""
        found = session.connection().execute(_ACTIVE).mappings().all()
        return [KillSwitchRow(**row) for row in found]

    @staticmethod
    def _active_row(session: Session, scope: str, value: str) -> KillSwitchRow | None:
        return session.exec(
            select(KillSwitchRow).where(
                KillSwitchRow.scope == scope,
                KillSwitchRow.value == value,
                col(KillSwitchRow.cleared_at).is_(None),
            )
        ).first()

    @staticmethod
    def _event(
        row: KillSwitchRow, step: str, by: str, reason: str, extra: dict[str, str]
    ) -> AuditEvent:
        return operator_event(
            AUDIT_WORKFLOW_ID,
            f"{row.id}/{step}",
            by=by,
            action=f"kill_switch.{step}",
            detail={"scope": state_of(row).scope, **extra},
            reason=reason,
        )


def engaged_error(state: KillSwitchState, subject: Subject) -> ApplicationError:
    """The error a stopped activity raises. Its details are the engagement and what was stopped
    (a KillSwitchCheck), so the held workflow asks about exactly that."""
    check = KillSwitchCheck(process=subject.process, agent=subject.agent, tenant=subject.tenant)
    return ApplicationError(
        f"kill switch engaged for {state.scope} ({state.mode}) by {state.engaged_by}: "
        f"{state.reason}",
        state.model_dump(mode="json"),
        check.model_dump(mode="json"),
        type=KILL_SWITCH_ERROR,
        non_retryable=True,
    )


class KillSwitchActivities:
    """What a held workflow asks while it waits: is the switch that stopped me cleared?"""

    def __init__(self, switch: KillSwitch) -> None:
        self.switch = switch

    @activity.defn(name="kill_switch_status")
    async def kill_switch_status(self, check: KillSwitchCheck) -> KillSwitchStatus:
        subject = Subject(process=check.process, agent=check.agent, tenant=check.tenant)
        # fresh: the step retried right after this answer must see the same state
        state = await asyncio.to_thread(self.switch.blocking, subject, fresh=True)
        return KillSwitchStatus(blocking=state)


def subjects_text(states: Iterable[KillSwitchState]) -> str:
    return ", ".join(f"{s.scope} ({s.mode})" for s in states) or "none"


__all__ = [
    "AUDIT_WORKFLOW_ID",
    "KillSwitch",
    "KillSwitchActivities",
    "KillSwitchError",
    "SCOPES",
    "Subject",
    "engaged_error",
    "parse_scope",
    "state_of",
    "subjects_text",
]
