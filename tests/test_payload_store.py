"""The payload store reads a whole conversation window in one query: what it hands back is what
was stored, in the order asked, and a missing or edited payload is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from activities.database import Database
from activities.payload_store import PayloadMissing, PayloadStore
from workflows.contracts.tools import PayloadRef


@pytest.fixture
def store(tmp_path: Path) -> PayloadStore:
    db = Database(f"sqlite:///{tmp_path / 'payloads.db'}")
    db.create_tables()
    return PayloadStore(db)


def test_a_window_comes_back_in_the_order_asked_repeats_included(store: PayloadStore) -> None:
    messages = [{"role": "user", "content": f"message {i}"} for i in range(40)]
    refs = store.put_many(messages)
    asked: list[PayloadRef | str] = [refs[3], refs[0], refs[3].digest, refs[39]]
    assert store.get_many(asked) == [messages[3], messages[0], messages[3], messages[39]]
    assert store.get_many([]) == []


def test_a_missing_payload_is_named(store: PayloadStore) -> None:
    ref = store.put({"role": "user", "content": "kept"})
    unknown = "0" * 64
    with pytest.raises(PayloadMissing, match=f"holds no payload {unknown}"):
        store.get_many([ref, unknown])


def test_an_edited_payload_is_refused(store: PayloadStore) -> None:
    ref = store.put({"role": "tool", "content": "the tool's answer"})
    with store.db.session() as session:
        session.exec(  # type: ignore[call-overload]
            text("UPDATE payload SET body = :body WHERE digest = :digest"),
            params={"body": b'{"content":"edited"}', "digest": ref.digest},
        )
    with pytest.raises(PayloadMissing, match="does not match its digest"):
        store.get(ref)
