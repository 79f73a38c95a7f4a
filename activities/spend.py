"""What each tenant's model calls cost per UTC day, for the base policy's spend cap.

One row per agent call (written with the call's audit row, in the same transaction, under the
same idempotency key), summed per tenant and day when the next call asks policy whether it may
spend more. A retried attempt that writes the same call again changes nothing.

Routed calls (activities/router.py) are charged per model request actually made, in
``model_charge``: one row per (workflow id, run id, activity id, attempt, call index), so a
retried activity is charged for each attempt that reached a model (an invalid answer costs what
it cost) and a replayed workflow, which re-runs no activity, charges nothing twice.

Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import Field, Session, SQLModel, UniqueConstraint, select

from activities.database import Database


class AgentSpend(SQLModel, table=True):
    __tablename__ = "agent_spend"
    __table_args__ = (UniqueConstraint("workflow_id", "run_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(index=True)
    day: str = Field(index=True)  # UTC date, YYYY-MM-DD
    workflow_id: str
    run_id: str
    seq: str
    agent: str
    cost_usd: float = 0.0


TABLE = AgentSpend.__table__  # type: ignore[attr-defined]


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


class ModelCharge(SQLModel, table=True):
    """One model request of a routed call, as charged (see the module docstring)."""

    __tablename__ = "model_charge"
    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id", "activity_id", "attempt", "call_index"),
    )
    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(index=True)
    day: str = Field(index=True)  # UTC date, YYYY-MM-DD
    workflow_id: str = Field(index=True)
    run_id: str
    activity_id: str
    attempt: int
    call_index: int
    agent: str
    task_class: str
    model: str
    endpoint: str
    tier: str
    outcome: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


CHARGES = ModelCharge.__table__  # type: ignore[attr-defined]


def spent_on(db: Database, tenant: str, day: str) -> float:
    """USD the tenant's model calls cost on ``day`` (UTC) so far (routed calls included)."""
    with db.read_session() as session:
        total = session.exec(
            select(func.coalesce(func.sum(AgentSpend.cost_usd), 0.0)).where(
                AgentSpend.tenant == tenant, AgentSpend.day == day
            )
        ).one()
        routed = session.exec(
            select(func.coalesce(func.sum(ModelCharge.cost_usd), 0.0)).where(
                ModelCharge.tenant == tenant, ModelCharge.day == day
            )
        ).one()
    return round(float(total) + float(routed), 8)


def run_totals(db: Database, workflow_id: str, run_id: str) -> tuple[int, float]:
    """(tokens, USD) charged for one workflow run's routed model requests so far."""
    with db.read_session() as session:
        tokens, cost = session.exec(
            select(
                func.coalesce(
                    func.sum(ModelCharge.prompt_tokens + ModelCharge.completion_tokens), 0
                ),
                func.coalesce(func.sum(ModelCharge.cost_usd), 0.0),
            ).where(ModelCharge.workflow_id == workflow_id, ModelCharge.run_id == run_id)
        ).one()
    return int(tokens), round(float(cost), 8)


def charges_of(db: Database, workflow_id: str) -> list[ModelCharge]:
    """Every charged model request of a workflow (all runs), oldest first."""
    with db.read_session() as session:
        rows = session.exec(
            select(ModelCharge)
            .where(ModelCharge.workflow_id == workflow_id)
            .order_by(ModelCharge.id)  # type: ignore[arg-type]
        ).all()
        return [ModelCharge.model_validate(r.model_dump()) for r in rows]


def _insert_once(session: Session, table: Any, row: SQLModel, keys: tuple[str, ...]) -> bool:
    """Insert ``row`` into ``table`` inside the caller's transaction, unless a row with the same
    ``keys`` is there already (a retry): False then."""
    conn = session.connection()
    same = [table.c[key] == getattr(row, key) for key in keys]
    if conn.execute(select(table.c.id).where(*same)).first() is not None:
        return False
    conn.execute(insert(table), [row.model_dump(exclude={"id"})])
    return True


def charge_in(session: Session, row: ModelCharge) -> bool:
    """Record one model request inside the caller's transaction; False if already recorded."""
    keys = ("workflow_id", "run_id", "activity_id", "attempt", "call_index")
    return _insert_once(session, CHARGES, row, keys)


def record_in(session: Session, row: AgentSpend) -> bool:
    """Add one call's cost inside the caller's transaction; False if it was recorded before."""
    return _insert_once(session, TABLE, row, ("workflow_id", "run_id", "seq"))


__all__ = [
    "AgentSpend",
    "CHARGES",
    "ModelCharge",
    "TABLE",
    "charge_in",
    "charges_of",
    "record_in",
    "run_totals",
    "spent_on",
    "utc_day",
]
