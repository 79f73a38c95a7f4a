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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Field, Session, SQLModel, UniqueConstraint, col, select
from temporalio import activity

from activities.database import Database, as_utc, utcnow
from workflows.contracts import AuditBatch, AuditEvent, AuditWriteResult

GENESIS_HASH = "0" * 64


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
        return {
            "position": self.position,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "seq": self.seq,
            "recorded_at": as_utc(self.recorded_at).isoformat(),
            "actor": self.actor,
            "action": self.action,
            "detail": json.loads(self.detail_json),
            "rationale": self.rationale,
            "decision_id": self.decision_id,
            "model": self.model,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 8),
            "input_digest": self.input_digest,
            "output_digest": self.output_digest,
        }


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


class AuditLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, events: list[AuditEvent]) -> AuditWriteResult:
        """Append events in their own transaction."""
        with self.db.session() as session:
            return self.append_in(session, events)

    def append_in(self, session: Session, events: list[AuditEvent]) -> AuditWriteResult:
        """Append events inside the caller's transaction (commits with the caller's side effect)."""
        self.db.lock_audit_chain(session)
        last = session.exec(
            select(AuditRecord).order_by(col(AuditRecord.position).desc()).limit(1)
        ).first()
        prev = last.row_hash if last else GENESIS_HASH
        position = last.position if last else 0
        written = present = 0
        for event in events:
            exists = session.exec(
                select(AuditRecord.id).where(
                    AuditRecord.workflow_id == event.workflow_id,
                    AuditRecord.run_id == event.run_id,
                    AuditRecord.seq == event.seq,
                )
            ).first()
            if exists is not None:
                present += 1
                continue
            record = AuditRecord(
                workflow_id=event.workflow_id,
                run_id=event.run_id,
                seq=event.seq,
                actor=event.actor,
                action=event.action,
                detail_json=json.dumps(event.detail, sort_keys=True, default=str),
                rationale=event.rationale,
                decision_id=event.decision_id,
                model=event.model,
                tokens=event.tokens,
                cost_usd=event.cost_usd,
                input_digest=event.input_digest,
                output_digest=event.output_digest,
                position=position + 1,
                prev_hash=prev,
                row_hash="",
            )
            record.row_hash = row_hash(prev, record.content())
            session.add(record)
            session.flush()  # the next row chains to this one
            prev, position = record.row_hash, record.position
            written += 1
        return AuditWriteResult(written=written, already_present=present)

    def trail(self, workflow_id: str, run_id: str | None = None) -> list[AuditRecord]:
        with self.db.session() as session:
            query = select(AuditRecord).where(AuditRecord.workflow_id == workflow_id)
            if run_id:
                query = query.where(AuditRecord.run_id == run_id)
            return list(session.exec(query.order_by(col(AuditRecord.position))).all())

    def verify(self) -> VerifyReport:
        """Walk the whole chain; name every row that was edited, and every gap left by a delete."""
        report = VerifyReport()
        prev_hash = GENESIS_HASH
        prev_position = 0
        with self.db.session() as session:
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


class AuditActivities:
    """The activity through which workflows write their own events (approvals, outcomes)."""

    def __init__(self, ledger: AuditLedger) -> None:
        self.ledger = ledger

    @activity.defn(name="record_audit")
    async def record_audit(self, batch: AuditBatch) -> AuditWriteResult:
        return await asyncio.to_thread(self.ledger.append, batch.events)
