"""A versioned blackboard: shared context that cooperating agents read and write.

Every key has a version (0 = never written). A write names the version its author read
(``expected_version``); if the key has moved on since, the write is stale and refused
(:class:`StaleWrite`), and the author must read again and retry (optimistic concurrency). Every
accepted write is an entry with key, value, version, author, reason and time, kept in an
append-only history (``history()``), which a workflow exposes by query and persists through an
activity (activities/hr.py ``persist_blackboard``, idempotent per workflow/run/board/seq).

Deterministic: no I/O, no clock of its own. In a workflow the time is ``workflow.now()``; unit
tests pass a clock. A proposal of several writes is applied all-or-nothing.

:func:`cooperate` is the agent loop: read a snapshot, ask the agent (an activity) for writes
based on it, apply them; on a stale write, read again and re-run the agent (bounded).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from workflows import errors
from workflows.contracts import BoardEntry, BoardSlot, BoardWrite
from workflows.errors import BatonError

if TYPE_CHECKING:
    from workflows.audit_trail import AuditTrail


class StaleWrite(BatonError):
    """A write based on a version of a key that is no longer current."""

    def __init__(self, key: str, expected: int, current: int, author: str) -> None:
        super().__init__(
            f"stale write by {author} to {key!r}: read version {expected}, current is {current}"
        )
        self.key = key
        self.expected = expected
        self.current = current
        self.author = author


class ConflictRetriesExhausted(BatonError):
    """An agent's writes kept going stale more often than allowed."""


def _workflow_now() -> datetime:
    from temporalio import workflow

    return workflow.now()


class Blackboard:
    def __init__(self, name: str, clock: Callable[[], datetime] = _workflow_now) -> None:
        self.name = name
        self._clock = clock
        self._entries: list[BoardEntry] = []
        self._current: dict[str, BoardEntry] = {}
        #: every refused write, for the audit trail and the status query
        self.conflicts: list[str] = []
        self._persisted = 0

    @property
    def version(self) -> int:
        """The board's version: the number of accepted writes."""
        return len(self._entries)

    def read(self, key: str) -> BoardSlot:
        entry = self._current.get(key)
        if entry is None:
            return BoardSlot()
        return BoardSlot(value=copy.deepcopy(entry.value), version=entry.version)

    def value(self, key: str, default: Any = None) -> Any:
        entry = self._current.get(key)
        return default if entry is None else copy.deepcopy(entry.value)

    def snapshot(self) -> dict[str, BoardSlot]:
        """Every key's value and version, as of now (a copy: later writes do not change it)."""
        return {key: self.read(key) for key in sorted(self._current)}

    def write(
        self, key: str, value: Any, expected_version: int, author: str, reason: str
    ) -> BoardEntry:
        """Write one key if it is still at ``expected_version``; else raise :class:`StaleWrite`."""
        write = BoardWrite(key=key, value=value, expected_version=expected_version, reason=reason)
        return self.apply([write], author)[0]

    def put(self, key: str, value: Any, author: str, reason: str) -> BoardEntry:
        """Write one key over whatever it holds now (the author read it just before)."""
        return self.write(key, value, self.read(key).version, author, reason)

    def apply(self, writes: Sequence[BoardWrite], author: str) -> list[BoardEntry]:
        """Apply a proposal all-or-nothing: every write must be current, or none is applied."""
        if not author.strip():
            raise ValueError("a blackboard write needs an author")
        for w in writes:
            current = self.read(w.key).version
            if w.expected_version != current:
                err = StaleWrite(w.key, w.expected_version, current, author)
                self.conflicts.append(str(err))
                raise err
        keys = [w.key for w in writes]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a proposal writes a key twice: {keys}")
        at = self._clock()
        written = []
        for w in writes:
            entry = BoardEntry(
                key=w.key,
                value=copy.deepcopy(w.value),
                version=w.expected_version + 1,
                seq=len(self._entries) + 1,
                author=author,
                reason=w.reason,
                at=at,
            )
            self._entries.append(entry)
            self._current[w.key] = entry
            written.append(entry)
        return written

    def history(self, key: str | None = None) -> list[BoardEntry]:
        """Every accepted write, oldest first (of one key, if given)."""
        return [e for e in self._entries if key is None or e.key == key]

    def unpersisted(self) -> list[BoardEntry]:
        """Entries not yet handed to :meth:`mark_persisted`."""
        return self._entries[self._persisted :]

    def mark_persisted(self, count: int) -> None:
        self._persisted += count


async def cooperate(
    board: Blackboard,
    author: str,
    propose: Callable[[dict[str, BoardSlot]], Awaitable[Sequence[BoardWrite]]],
    *,
    max_retries: int,
    on_conflict: Callable[[StaleWrite, int], None] | None = None,
) -> list[BoardEntry]:
    """Run one agent against the board until its proposal applies cleanly.

    ``propose`` gets a snapshot and returns writes whose ``expected_version`` is the version it
    read. A stale write re-runs the agent on fresh state, at most ``max_retries`` times."""
    attempt = 0
    while True:
        writes = await propose(board.snapshot())
        try:
            return board.apply(writes, author)
        except StaleWrite as err:
            attempt += 1
            if on_conflict is not None:
                on_conflict(err, attempt)
            if attempt > max_retries:
                raise ConflictRetriesExhausted(
                    f"{author}: {attempt} stale writes in a row (last: {err}); giving up"
                ) from err


async def cooperate_audited(
    board: Blackboard,
    author: str,
    propose: Callable[[dict[str, BoardSlot]], Awaitable[Sequence[BoardWrite]]],
    *,
    max_retries: int,
    audit: AuditTrail,
) -> list[BoardEntry]:
    """:func:`cooperate` inside a governed workflow: every stale write is audited
    (``blackboard.stale_write``), and running out of retries fails the run with the
    non-retryable ``BlackboardConflicts``."""

    def conflict(err: StaleWrite, attempt: int) -> None:
        audit.record(
            author,
            "blackboard.stale_write",
            detail={"key": err.key, "read": err.expected, "current": err.current},
            rationale=f"re-running on fresh state (retry {attempt})",
        )

    try:
        return await cooperate(
            board, author, propose, max_retries=max_retries, on_conflict=conflict
        )
    except ConflictRetriesExhausted as err:
        raise errors.failure(errors.BLACKBOARD_CONFLICTS, str(err)) from err


__all__ = [
    "Blackboard",
    "ConflictRetriesExhausted",
    "StaleWrite",
    "cooperate",
    "cooperate_audited",
]
