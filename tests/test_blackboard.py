"""The versioned blackboard on its own: versions, stale writes, all-or-nothing proposals, history,
and concurrent writers (asyncio tasks that interleave between read and write) that converge
through optimistic concurrency."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from workflows.blackboard import (
    Blackboard,
    ConflictRetriesExhausted,
    StaleWrite,
    cooperate,
)
from workflows.contracts import BoardSlot, BoardWrite


def board() -> Blackboard:
    ticks = itertools.count()
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    return Blackboard("test", clock=lambda: start + timedelta(seconds=next(ticks)))


def test_writes_are_versioned_per_key_and_attributed() -> None:
    b = board()
    assert b.read("identity") == BoardSlot(value=None, version=0)
    first = b.write("identity", {"verified": True}, 0, "agent:identity_verifier", "document ok")
    assert (first.version, first.seq, first.author) == (1, 1, "agent:identity_verifier")
    b.write("policies", ["code-of-conduct"], 0, "agent:policy_educator", "role engineer")
    second = b.write("identity", {"verified": False}, 1, "hr:bob", "document expired")
    assert (second.version, second.seq) == (2, 3)
    assert b.read("identity").value == {"verified": False}
    assert b.version == 3
    assert [e.reason for e in b.history("identity")] == ["document ok", "document expired"]
    assert [e.at for e in b.history()] == sorted(e.at for e in b.history())


def test_a_stale_write_is_refused_and_changes_nothing() -> None:
    b = board()
    b.write("checklist", ["a"], 0, "x", "first")
    with pytest.raises(StaleWrite, match="read version 0, current is 1"):
        b.write("checklist", ["b"], 0, "y", "based on an old read")
    assert b.read("checklist") == BoardSlot(value=["a"], version=1)
    assert len(b.conflicts) == 1 and b.version == 1


def test_a_proposal_applies_all_or_nothing() -> None:
    b = board()
    b.write("a", 1, 0, "x", "r")
    with pytest.raises(StaleWrite):
        b.apply(
            [
                BoardWrite(key="b", value=2, expected_version=0, reason="fresh"),
                BoardWrite(key="a", value=3, expected_version=0, reason="stale"),
            ],
            "y",
        )
    assert b.read("b").version == 0 and b.version == 1


def test_snapshots_are_copies() -> None:
    b = board()
    b.write("list", [1], 0, "x", "r")
    snap = b.snapshot()
    snap["list"].value.append(2)
    assert b.read("list").value == [1]


def test_unpersisted_entries_are_handed_out_once() -> None:
    b = board()
    b.write("a", 1, 0, "x", "r")
    b.write("b", 1, 0, "x", "r")
    assert [e.seq for e in b.unpersisted()] == [1, 2]
    b.mark_persisted(2)
    b.write("a", 2, 1, "x", "r")
    assert [e.seq for e in b.unpersisted()] == [3]


async def test_concurrent_writers_on_one_key_converge_by_retrying_on_fresh_state() -> None:
    """Five writers append to one list at the same time; every one reads, yields (as an agent
    activity would), then writes. All but one go stale on the first round and retry; no item
    is lost and every version is there exactly once."""
    b = board()
    runs: dict[str, int] = {}

    def appender(name: str):  # type: ignore[no-untyped-def]
        async def propose(snapshot: dict[str, BoardSlot]) -> list[BoardWrite]:
            runs[name] = runs.get(name, 0) + 1
            slot = snapshot.get("checklist", BoardSlot())
            await asyncio.sleep(0)  # the "agent" thinks; others write meanwhile
            return [
                BoardWrite(
                    key="checklist",
                    value=[*(slot.value or []), name],
                    expected_version=slot.version,
                    reason=f"{name} adds its item",
                )
            ]

        return propose

    names = [f"agent-{i}" for i in range(5)]
    await asyncio.gather(*(cooperate(b, n, appender(n), max_retries=10) for n in names))
    assert sorted(b.value("checklist")) == names
    history = b.history("checklist")
    assert [e.version for e in history] == [1, 2, 3, 4, 5]
    assert sorted(e.author for e in history) == names
    assert len(b.conflicts) >= 4  # everyone but the first writer went stale at least once
    assert sum(runs.values()) == 5 + len(b.conflicts)


async def test_retries_are_bounded() -> None:
    b = board()

    async def always_stale(snapshot: dict[str, BoardSlot]) -> list[BoardWrite]:
        b.write("k", "other", b.read("k").version, "rival", "keeps winning")
        return [BoardWrite(key="k", value="mine", expected_version=0, reason="old read")]

    seen: list[int] = []
    with pytest.raises(ConflictRetriesExhausted, match="3 stale writes"):
        await cooperate(
            b, "loser", always_stale, max_retries=2, on_conflict=lambda e, n: seen.append(n)
        )
    assert seen == [1, 2, 3]
