"""The payload store: large payloads (conversation messages, tool results) kept content-addressed
in the database, so workflow histories carry references (digest, size, preview) instead.

A payload's key is the sha256 of its bytes: storing the same bytes twice is one row, a retried
activity writes nothing new, and a reference can be checked against what it names. Payloads are
never updated or deleted by Baton (retention is an operator's job: ``created_at`` is indexed).

Must not: be imported by workflows (it does I/O); hold anything but bytes and their digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, bindparam
from sqlalchemy import select as sql_select
from sqlmodel import Column, Field, Session, SQLModel

from activities.database import Database, utcnow
from workflows.contracts.tools import PREVIEW_CHARS, PayloadRef

#: The largest payload stored (bytes): a tool result above it is cut, and says so.
MAX_PAYLOAD_BYTES = 1024 * 1024


class Payload(SQLModel, table=True):
    """One stored payload, keyed by the sha256 of its bytes."""

    __tablename__ = "payload"
    digest: str = Field(primary_key=True, max_length=64)
    size: int
    media_type: str = "application/json"
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


_TABLE: Any = Payload.__table__  # type: ignore[attr-defined]
_BODIES = sql_select(_TABLE.c.digest, _TABLE.c.body).where(
    _TABLE.c.digest.in_(bindparam("digests", expanding=True))
)


class PayloadMissing(LookupError):
    """A reference names a payload the store does not hold."""


def encode(value: Any) -> bytes:
    """Canonical JSON bytes of ``value`` (the digest is over these)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def preview_of(value: Any) -> str:
    if isinstance(value, dict):
        text = value.get("content")
        if not isinstance(text, str) or not text:
            calls = value.get("tool_calls") or []
            names = [c.get("function", {}).get("name", "?") for c in calls if isinstance(c, dict)]
            text = f"{value.get('role', '')}: calls {', '.join(names)}" if names else ""
        else:
            text = f"{value.get('role', '')}: {text}"
    elif isinstance(value, list):
        text = f"[{len(value)} items]"
    else:
        text = str(value)
    return text[:PREVIEW_CHARS]


class PayloadStore:
    """Put and get JSON payloads by digest. Built once in worker.py."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put_in(self, session: Session, value: Any) -> PayloadRef:
        """Store ``value`` inside the caller's transaction (commits with its side effect)."""
        body = encode(value)
        key = hashlib.sha256(body).hexdigest()
        if session.get(Payload, key) is None:
            session.add(Payload(digest=key, size=len(body), body=body))
            session.flush()
        return PayloadRef(digest=key, size=len(body), preview=preview_of(value))

    def put(self, value: Any) -> PayloadRef:
        with self.db.session() as session:
            return self.put_in(session, value)

    def put_many(self, values: list[Any]) -> list[PayloadRef]:
        with self.db.session() as session:
            return [self.put_in(session, v) for v in values]

    def get(self, ref: PayloadRef | str) -> Any:
        return self.get_many([ref])[0]

    def get_many(self, refs: Sequence[PayloadRef | str]) -> list[Any]:
        keys = [r if isinstance(r, str) else r.digest for r in refs]
        if not keys:
            return []
        # one Core query for the whole window (an ORM get per digest cost ~0.4 ms each: a
        # 40-message window was 7 ms of every agent turn)
        wanted = sorted(set(keys))
        with self.db.read_session() as session:
            conn = session.connection()
            found: dict[str, bytes] = {
                row[0]: row[1] for row in conn.execute(_BODIES, {"digests": wanted})
            }
        missing = [k for k in keys if k not in found]
        if missing:
            raise PayloadMissing(f"the payload store holds no payload {missing[0]}")
        out = []
        for key in keys:
            body = found[key]
            if hashlib.sha256(body).hexdigest() != key:
                raise PayloadMissing(f"payload {key} does not match its digest (edited?)")
            out.append(json.loads(body))
        return out

    def largest(self) -> int:
        """The largest payload stored, in bytes (the bench reports it)."""
        from sqlalchemy import func
        from sqlmodel import select

        with self.db.read_session() as session:
            return int(session.exec(select(func.max(Payload.size))).one() or 0)


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Payload",
    "PayloadMissing",
    "PayloadStore",
    "encode",
    "preview_of",
]
