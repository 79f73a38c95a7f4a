"""What the idempotent writers' tables share: the outcome of a call kept under its key, and
the look-up of a row by the idempotency key it was written under.

A governed write (a grant, a ticket update, a tool call) decides and writes once
per idempotency key. It stores the outcome it returned, denials and approval holds included,
in a table of its own built on :class:`StoredOutcome`; a retry of the call finds that row and
returns the same outcome instead of asking policy and writing again.

Must not: declare tables itself (each writer's module does, see activities/schema.py).
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel
from sqlmodel import Field, Session, SQLModel, select

Outcome = TypeVar("Outcome", bound=BaseModel)
Row = TypeVar("Row", bound=SQLModel)


class StoredOutcome(SQLModel):
    """The columns of a stored outcome: the call's idempotency key and its outcome as JSON.

    A table adds what it is looked up by besides the key (``class GrantAttempt(StoredOutcome,
    table=True)``)."""

    idempotency_key: str = Field(primary_key=True)
    outcome_json: str

    @classmethod
    def of(cls, idempotency_key: str, outcome: BaseModel, **columns: Any) -> Self:
        """The row that keeps ``outcome`` for ``idempotency_key`` (plus the table's own
        ``columns``)."""
        return cls(
            idempotency_key=idempotency_key, outcome_json=outcome.model_dump_json(), **columns
        )


def stored_outcome(
    session: Session, table: type[StoredOutcome], idempotency_key: str, outcome: type[Outcome]
) -> Outcome | None:
    """The outcome stored in ``table`` for ``idempotency_key`` (parsed as ``outcome``), or None
    when no call with that key has completed yet."""
    row = session.get(table, idempotency_key)
    return None if row is None else outcome.model_validate_json(row.outcome_json)


def by_idempotency_key(session: Session, table: type[Row], idempotency_key: str) -> Row | None:
    """The row of ``table`` an effect wrote under ``idempotency_key`` (a unique column of the
    table), or None when no call with that key wrote one."""
    column = table.__table__.c["idempotency_key"]  # type: ignore[attr-defined]
    return session.exec(select(table).where(column == idempotency_key)).first()


__all__ = ["StoredOutcome", "by_idempotency_key", "stored_outcome"]
