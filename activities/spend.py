"""What each tenant's model calls cost per UTC day, for the base policy's spend cap.

One row per agent call (written with the call's audit row, in the same transaction, under the
same idempotency key), summed per tenant and day when the next call asks policy whether it may
spend more. A retried attempt that writes the same call again changes nothing.

Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

from datetime import UTC, datetime

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


def spent_on(db: Database, tenant: str, day: str) -> float:
    """USD the tenant's model calls cost on ``day`` (UTC) so far."""
    with db.read_session() as session:
        total = session.exec(
            select(func.coalesce(func.sum(AgentSpend.cost_usd), 0.0)).where(
                AgentSpend.tenant == tenant, AgentSpend.day == day
            )
        ).one()
    return round(float(total), 8)


def record_in(session: Session, row: AgentSpend) -> bool:
    """Add one call's cost inside the caller's transaction; False if it was recorded before."""
    conn = session.connection()
    present = conn.execute(
        select(TABLE.c.id).where(
            TABLE.c.workflow_id == row.workflow_id,
            TABLE.c.run_id == row.run_id,
            TABLE.c.seq == row.seq,
        )
    ).first()
    if present is not None:
        return False
    conn.execute(insert(TABLE), [row.model_dump(exclude={"id"})])
    return True
