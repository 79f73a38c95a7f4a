"""What the idempotent writers' tables share: the outcome of a call kept under its key, the
columns of a row an effect wrote under its key, and the look-up of that row by the key.

A governed write (a grant, a ticket update, a tool call) decides and writes once
per idempotency key. It stores the outcome it returned, denials and approval holds included,
in a table of its own built on :class:`StoredOutcome`; a retry of the call finds that row and
returns the same outcome instead of asking policy and writing again. The row the write adds to
its system of record (a posting, a grant, a commit) is built on :class:`KeyedEffect`, or on
:class:`GovernedEffect` when policy governs it for a tenant.

Must not: declare tables itself (each writer's module does, see activities/schema.py).
"""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel
from sqlmodel import Field, Session, SQLModel, select

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


class KeyedEffect(SQLModel):
    """The column of a row an effect wrote: the idempotency key of the call that wrote it
    (unique: a retried call writes nothing more, and a reversal or compensation finds the row by
    it, see :func:`by_idempotency_key`)."""

    idempotency_key: str = Field(unique=True)


class GovernedEffect(KeyedEffect):
    """The columns of a row a governed write added to a tenant's system of record: besides its
    key, the tenant, who approved the write when policy held it for approval (their names joined
    by ", "; None when policy allowed it outright), and the workflow whose activity wrote it."""

    tenant: str = Field(index=True)
    approved_by: str | None = None
    workflow_id: str = ""


Effect = TypeVar("Effect", bound=KeyedEffect)


def stored_outcome(
    session: Session, table: type[StoredOutcome], idempotency_key: str, outcome: type[Outcome]
) -> Outcome | None:
    """The outcome stored in ``table`` for ``idempotency_key`` (parsed as ``outcome``), or None
    when no call with that key has completed yet."""
    row = session.get(table, idempotency_key)
    return None if row is None else outcome.model_validate_json(row.outcome_json)


def by_idempotency_key(
    session: Session, table: type[Effect], idempotency_key: str
) -> Effect | None:
    """The row of ``table`` an effect wrote under ``idempotency_key``, or None when no call with
    that key wrote one."""
    return session.exec(select(table).where(table.idempotency_key == idempotency_key)).first()


__all__ = [
    "GovernedEffect",
    "KeyedEffect",
    "StoredOutcome",
    "by_idempotency_key",
    "stored_outcome",
]
