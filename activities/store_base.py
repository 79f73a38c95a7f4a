"""What the idempotent writers' tables share: the outcome of a call kept under its key.

A governed write (a grant, a ticket update, a tool call, a CRM commit) decides and writes once
per idempotency key. It stores the outcome it returned, denials and approval holds included,
in a table of its own built on :class:`StoredOutcome`; a retry of the call finds that row and
returns the same outcome instead of asking policy and writing again.

Must not: declare tables itself (each writer's module does, see activities/schema.py).
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel
from sqlmodel import Field, Session, SQLModel

Outcome = TypeVar("Outcome", bound=BaseModel)


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


__all__ = ["StoredOutcome", "stored_outcome"]
