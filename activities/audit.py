"""The audit ledger: append-only, hash-chained, idempotent, verifiable.

Every row carries who/what/when, inputs and outputs by digest, rationale, the policy decision id,
model, tokens and cost. Rows form ONE global hash chain: each row's hash covers its content and
the previous row's hash, so editing a row breaks its own hash and deleting one breaks the link of
the next. A write is idempotent per (workflow_id, run_id, seq): an activity retry that writes the
same event again changes nothing.

Activities call :meth:`AuditLedger.append` inside the same database transaction as the side
effect they record, so a posting and its audit row commit together or not at all.

Must not: be imported by workflows (it does I/O); update or delete rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, exists, insert
from sqlalchemy import select as core_select  # any number of columns (sqlmodel's stops at 4)
from sqlmodel import Field, Session, SQLModel, UniqueConstraint, col, select
from temporalio import activity

from activities.database import Database, as_utc, utcnow
from workflows.contracts import AuditBatch, AuditEvent, AuditWriteResult, PolicyDecision

GENESIS_HASH = "0" * 64
log = logging.getLogger("baton.audit")


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_record"
    __table_args__ = (UniqueConstraint("workflow_id", "run_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    position: int = Field(unique=True)  # 1, 2, 3 ... assigned under the chain lock
    workflow_id: str = Field(index=True)
    run_id: str
    seq: str
    recorded_at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    detail_json: str = "{}"
    rationale: str = ""
    decision_id: str | None = None
    model: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    input_digest: str | None = None
    output_digest: str | None = None
    prev_hash: str
    row_hash: str

    def content(self) -> dict[str, object]:
        """What the hash covers: everything but the hashes and the surrogate id."""
        return hashed_content(self.model_dump())


HASHED_FIELDS = (
    "position", "workflow_id", "run_id", "seq", "actor", "action", "rationale", "decision_id",
    "model", "tokens", "input_digest", "output_digest",
)  # fmt: skip


def hashed_content(row: Mapping[str, Any]) -> dict[str, object]:
    """The canonical content of a row (a dict of its columns) that its hash covers."""
    content: dict[str, object] = {name: row[name] for name in HASHED_FIELDS}
    content["recorded_at"] = as_utc(row["recorded_at"]).isoformat()
    content["detail"] = json.loads(row["detail_json"])
    content["cost_usd"] = round(row["cost_usd"], 8)
    return content


def row_hash(prev_hash: str, content: dict[str, object]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass
class VerifyReport:
    rows_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


TABLE = AuditRecord.__table__  # type: ignore[attr-defined]


# Built once: these run inside every governed step, and building a statement per call cost more
# than executing it (SQLAlchemy caches the compiled form by the statement's structure).
_HEAD = select(TABLE.c.position, TABLE.c.row_hash).order_by(TABLE.c.position.desc()).limit(1)
_INSERT = insert(TABLE)
_PRESENT = select(TABLE.c.seq).where(
    TABLE.c.workflow_id == bindparam("workflow_id"),
    TABLE.c.run_id == bindparam("run_id"),
    TABLE.c.seq.in_(bindparam("seqs", expanding=True)),
)
# The same for the few rows of a governed step, with plain bound parameters s0, s1, ...: an
# expanding IN is rendered again on every execution, which cost more than the query itself.
_PRESENT_FEW = {
    count: select(TABLE.c.seq).where(
        TABLE.c.workflow_id == bindparam("workflow_id"),
        TABLE.c.run_id == bindparam("run_id"),
        TABLE.c.seq.in_([bindparam(f"s{i}") for i in range(count)]),
    )
    for count in range(1, 5)
}


# A governed step's append in ONE statement: the chain head and, for its few rows of one run,
# which are already written (a flag per row): one round trip instead of two.
_HEAD_POSITION = _HEAD.with_only_columns(TABLE.c.position).scalar_subquery()
_HEAD_HASH = _HEAD.with_only_columns(TABLE.c.row_hash).scalar_subquery()
_HEAD_AND_FEW = {
    count: core_select(
        _HEAD_POSITION,
        _HEAD_HASH,
        *(
            exists()
            .where(
                TABLE.c.workflow_id == bindparam("workflow_id"),
                TABLE.c.run_id == bindparam("run_id"),
                TABLE.c.seq == bindparam(f"s{i}"),
            )
            .label(f"e{i}")
            for i in range(count)
        ),
    )
    for count in _PRESENT_FEW
}


def _head_and_present(
    conn: Connection, events: list[AuditEvent]
) -> tuple[tuple[int, str], set[tuple[str, str, str]]]:
    """The chain head (position, hash) and which of ``events``' keys are already in the ledger."""
    runs = {(e.workflow_id, e.run_id) for e in events}
    if len(runs) == 1 and (both := _HEAD_AND_FEW.get(len(events))) is not None:
        [(workflow_id, run_id)] = runs
        params: dict[str, object] = {"workflow_id": workflow_id, "run_id": run_id}
        params.update((f"s{i}", e.seq) for i, e in enumerate(events))
        position, row_hash_, *flags = conn.execute(both, params).one()
        head = (position, row_hash_) if position is not None else (0, GENESIS_HASH)
        written = zip(events, flags, strict=True)
        present = {(workflow_id, run_id, e.seq) for e, flag in written if flag}
        return head, present
    found = conn.execute(_HEAD).first()
    head = (found.position, found.row_hash) if found else (0, GENESIS_HASH)
    return head, _present_keys(conn, events)


def _present_keys(conn: Connection, events: list[AuditEvent]) -> set[tuple[str, str, str]]:
    """Which of these events' (workflow id, run id, seq) keys are already in the ledger."""
    runs: dict[tuple[str, str], list[str]] = {}
    for e in events:
        runs.setdefault((e.workflow_id, e.run_id), []).append(e.seq)
    present: set[tuple[str, str, str]] = set()
    for (workflow_id, run_id), seqs in runs.items():
        params: dict[str, object] = {"workflow_id": workflow_id, "run_id": run_id}
        if (few := _PRESENT_FEW.get(len(seqs))) is not None:
            params.update((f"s{i}", seq) for i, seq in enumerate(seqs))
            found = conn.execute(few, params)
        else:
            found = conn.execute(_PRESENT, {**params, "seqs": seqs})
        present.update((workflow_id, run_id, seq) for (seq,) in found)
    return present


class AuditLedger:
    def __init__(self, db: Database) -> None:
        self.db = db
        #: Called with the events a write actually added (the worker's metrics, see
        #: activities/metrics.py); must not raise.
        self.observer: Callable[[list[AuditEvent]], None] | None = None

    def append(self, events: list[AuditEvent]) -> AuditWriteResult:
        """Append events in their own transaction."""
        with self.db.session() as session:
            return self.append_in(session, events)

    def append_in(self, session: Session, events: list[AuditEvent]) -> AuditWriteResult:
        """Append events inside the caller's transaction (commits with the caller's side effect).

        Two Core statements for a governed step's few rows of one run (chain head and keys
        already present in one, then one multi-row insert), three for larger batches: this runs
        inside every governed step, so it stays off the ORM.
        """
        self.db.lock_audit_chain(session)
        conn = session.connection()
        (position, prev), present = _head_and_present(conn, events)
        rows: list[dict[str, Any]] = []
        written: list[AuditEvent] = []
        for event in events:
            key = (event.workflow_id, event.run_id, event.seq)
            if key in present:
                continue
            present.add(key)  # the same event twice in one batch is written once
            position += 1
            row = event.model_dump(exclude={"detail"})
            row.update(
                position=position,
                recorded_at=utcnow(),
                detail_json=json.dumps(event.detail, sort_keys=True, default=str),
                prev_hash=prev,
            )
            row["row_hash"] = prev = row_hash(prev, hashed_content(row))
            rows.append(row)
            written.append(event)
        if rows:
            conn.execute(_INSERT, rows)
            if self.observer is not None:
                self.observer(written)
        return AuditWriteResult(written=len(rows), already_present=len(events) - len(rows))

    def trail(self, workflow_id: str, run_id: str | None = None) -> list[AuditRecord]:
        with self.db.read_session() as session:
            query = select(AuditRecord).where(AuditRecord.workflow_id == workflow_id)
            if run_id:
                query = query.where(AuditRecord.run_id == run_id)
            return list(session.exec(query.order_by(col(AuditRecord.position))).all())

    def verify(self) -> VerifyReport:
        """Walk the whole chain; name every row that was edited, and every gap left by a delete."""
        report = VerifyReport()
        prev_hash = GENESIS_HASH
        prev_position = 0
        with self.db.read_session() as session:
            rows = session.exec(select(AuditRecord).order_by(col(AuditRecord.position)))
            for record in rows:
                report.rows_checked += 1
                where = f"row {record.position} ({record.workflow_id} {record.seq} {record.action})"
                if record.position != prev_position + 1:
                    report.problems.append(
                        f"rows {prev_position + 1}..{record.position - 1} are missing (deleted)"
                    )
                if record.prev_hash != prev_hash:
                    report.problems.append(
                        f"{where}: does not chain to the row before it "
                        "(a row before it was deleted or altered)"
                    )
                if row_hash(record.prev_hash, record.content()) != record.row_hash:
                    report.problems.append(f"{where}: content does not match its hash (edited)")
                prev_hash, prev_position = record.row_hash, record.position
        return report


def activity_event(step: str, **fields: Any) -> AuditEvent:
    """An audit event of the running activity, keyed (workflow id, run id, act/<id>/<step>).

    The activity id is fixed by the workflow, so a retried attempt writes under the same key
    and the ledger keeps the first write only.
    """
    info = activity.info()
    return AuditEvent(
        workflow_id=info.workflow_id or "",
        run_id=info.workflow_run_id or "",
        seq=f"act/{info.activity_id}/{step}",
        **fields,
    )


def compensation_event(step: str, action: str, detail: dict[str, Any], reason: str) -> AuditEvent:
    """The audit row of a compensation of the running activity (a saga's undo, actor
    ``baton:compensation``): what it undid (``detail``) and why (``reason``, its rationale)."""
    return activity_event(
        step, actor="baton:compensation", action=action, detail=detail, rationale=reason
    )


def decision_event(
    step: str,
    decision: PolicyDecision,
    about: dict[str, Any],
    *,
    input_digest: str,
    actor: str | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """The audit row of a policy decision an activity asked for: its detail is ``about`` (what
    was decided on, the subject first), the decision's reasons, revision and engine, then
    ``after`` (the approval the action carried, a shadow flag, ...)."""
    return activity_event(
        step,
        actor=actor or f"policy:{decision.policy}",
        action=f"policy.{decision.verdict}",
        detail={
            **about,
            "reasons": decision.reasons,
            "revision": decision.revision,
            "engine": decision.engine,
            **(after or {}),
        },
        decision_id=decision.decision_id,
        input_digest=input_digest,
    )


def operator_event(
    trail: str, seq: str, *, by: str, action: str, detail: Mapping[str, object], reason: str
) -> AuditEvent:
    """The audit row of an operator's change outside any run (the kill switch engaged, a canary
    started or rolled back), kept under the workflow id ``trail`` of its own."""
    return AuditEvent(
        workflow_id=trail,
        run_id="",
        seq=seq,
        actor=by,
        action=action,
        detail=dict(detail),
        rationale=reason.strip(),
    )


def unavailable_event(step: str, error: Exception, subject: str) -> AuditEvent:
    """The audit row of a governed step that found no policy engine to ask (wait mode: the
    workflow holds and asks again; the step did nothing)."""
    return activity_event(
        step,
        actor="policy:engine",
        action="policy.unavailable",
        detail={"subject": subject, "error": str(error)},
    )


class AuditActivities:
    """The activity through which workflows write their own events (approvals, outcomes)."""

    def __init__(self, ledger: AuditLedger) -> None:
        self.ledger = ledger

    @activity.defn(name="record_audit")
    async def record_audit(self, batch: AuditBatch) -> AuditWriteResult:
        return await asyncio.to_thread(self.ledger.append, batch.events)


#: Refused approval Updates written one by one per run; the rest are summarised (one row per
#: :data:`REFUSAL_SUMMARY_SECONDS` at most), so a flood cannot fill the ledger.
REFUSED_UPDATE_AUDIT_LIMIT = 20
REFUSAL_SUMMARY_SECONDS = 2.0


class RefusedUpdateWriter:
    """Writes the refused approval Updates the worker's interceptor hands over
    (workflows/update_audit.py), off the workflow's thread: :meth:`submit` is called on the
    workflow thread and only schedules the write on the worker's event loop.

    Per run, the first :data:`REFUSED_UPDATE_AUDIT_LIMIT` refusals are written one by one; later
    ones are counted and summarised in an ``approval.refusals_summarised`` row within
    :data:`REFUSAL_SUMMARY_SECONDS`. A write that fails is logged, never raised into the run."""

    def __init__(self, ledger: AuditLedger, loop: asyncio.AbstractEventLoop) -> None:
        self.ledger = ledger
        self.loop = loop
        self._counts: dict[tuple[str, str], int] = {}
        self._unsummarised: dict[tuple[str, str], list[AuditEvent]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def submit(self, event: AuditEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self._take, event)
        except RuntimeError:  # the worker's loop is closed: it is shutting down
            log.warning("refused update not audited (worker stopping): %s", event.seq)

    def _take(self, event: AuditEvent) -> None:
        run = (event.workflow_id, event.run_id)
        self._counts[run] = count = self._counts.get(run, 0) + 1
        if count <= REFUSED_UPDATE_AUDIT_LIMIT:
            if count == REFUSED_UPDATE_AUDIT_LIMIT:
                further = "counted and summarised in approval.refusals_summarised (rate limit)"
                event = event.model_copy(
                    update={"detail": {**event.detail, "further_refusals": further}}
                )
            self._write([event])
            return
        waiting = self._unsummarised.setdefault(run, [])
        waiting.append(event)
        if len(waiting) == 1:
            self.loop.call_later(REFUSAL_SUMMARY_SECONDS, self._summarise, run)

    def _summarise(self, run: tuple[str, str]) -> None:
        batch = self._unsummarised.pop(run, [])
        if not batch:
            return
        reasons: dict[str, int] = {}
        for e in batch:
            reasons[e.rationale[:200]] = reasons.get(e.rationale[:200], 0) + 1
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        first, last = batch[0], batch[-1]
        self._write(
            [
                AuditEvent(
                    workflow_id=run[0],
                    run_id=run[1],
                    seq=f"{last.seq}/summary",
                    actor="baton:workflow",
                    action="approval.refusals_summarised",
                    detail={
                        "via": "update",
                        "count": len(batch),
                        "first_received_at": first.detail.get("received_at"),
                        "last_received_at": last.detail.get("received_at"),
                        "refused_so_far": self._counts.get(run, 0),
                        "top_reasons": [{"reason": r, "count": n} for r, n in top],
                    },
                    rationale=f"{len(batch)} more refused approval updates (rate limit per run: "
                    f"only the first {REFUSED_UPDATE_AUDIT_LIMIT} are written one by one)",
                )
            ]
        )

    def _write(self, events: list[AuditEvent]) -> None:
        task = asyncio.ensure_future(self._append(events), loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(self, events: list[AuditEvent]) -> None:
        try:
            await asyncio.to_thread(self.ledger.append, events)
        except Exception:
            log.exception("refused update not audited: %s", [e.seq for e in events])

    async def drain(self) -> None:
        """Wait for the writes under way (a worker that stops, a test that reads the ledger)."""
        for run in list(self._unsummarised):
            self._summarise(run)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = [
    "AuditActivities",
    "AuditLedger",
    "AuditRecord",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "REFUSAL_SUMMARY_SECONDS",
    "REFUSED_UPDATE_AUDIT_LIMIT",
    "RefusedUpdateWriter",
    "TABLE",
    "VerifyReport",
    "activity_event",
    "compensation_event",
    "decision_event",
    "hashed_content",
    "operator_event",
    "row_hash",
    "unavailable_event",
]
