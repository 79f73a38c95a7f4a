"""Throttles: rate and concurrency limits per agent role, per model and per tenant, shared by
every worker through the database. Excess work waits (heartbeating) rather than fails.

Configured by a JSON file (``BATON_THROTTLES_FILE``), re-read when it changes::

    {"limits": {
        "agent:reconciler":            {"concurrency": 4, "per_minute": 120},
        "model:gpt-4o":                {"per_minute": 500},
        "tenant:acme":                 {"concurrency": 8}}}

Keys are ``agent:<role>``, ``model:<name>`` and ``tenant:<name>``; each limit is optional.
``concurrency``: at most that many calls at once; ``per_minute``: a token bucket refilled at that
rate, holding up to one second's worth (at least one token), so a burst is smoothed, not refused.

A call takes every slot its keys need in ONE transaction that first locks each key's
``throttle_bucket`` row (sorted, so two callers never deadlock), or takes none and tries again
shortly; a slot is a ``throttle_lease`` row released when the call ends, and it expires by itself
when a worker dies mid-call (after the activity's start-to-close timeout).

Must not: be imported by workflows.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from temporalio import activity

from activities.database import Database, ThrottleBucket, ThrottleLease, as_utc, utcnow

BUCKETS = ThrottleBucket.__table__  # type: ignore[attr-defined]
LEASES = ThrottleLease.__table__  # type: ignore[attr-defined]
KEY_KINDS = ("agent", "model", "tenant")
MAX_WAIT_STEP_SECONDS = 0.5


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    per_minute: float | None = Field(default=None, gt=0, le=1_000_000)

    @property
    def capacity(self) -> float:
        """Tokens the bucket holds when full: one second's worth, at least one."""
        return max(1.0, (self.per_minute or 0) / 60)


class ThrottleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: dict[str, Limit] = {}

    @field_validator("limits")
    @classmethod
    def _keys_are_scoped(cls, limits: dict[str, Limit]) -> dict[str, Limit]:
        for key, limit in limits.items():
            kind, sep, name = key.partition(":")
            if kind not in KEY_KINDS or not sep or not name:
                raise ValueError(
                    f"limit key {key!r}: expected 'agent:<role>', 'model:<name>' or 'tenant:<name>'"
                )
            if limit.concurrency is None and limit.per_minute is None:
                raise ValueError(f"limit {key!r} sets neither concurrency nor per_minute")
        return limits


def load_config(path: Path) -> ThrottleConfig:
    """Read and validate a throttle file; ValueError names the file and the bad field."""
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"BATON_THROTTLES_FILE {path}: cannot read it ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"BATON_THROTTLES_FILE {path}: not valid JSON ({err})") from None
    try:
        return ThrottleConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"BATON_THROTTLES_FILE {path}: {problems}") from None


class Throttle:
    def __init__(
        self,
        db: Database,
        config: ThrottleConfig | Path | None = None,
        *,
        lease_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        self._path = config if isinstance(config, Path) else None
        self._config = config if isinstance(config, ThrottleConfig) else ThrottleConfig()
        self._mtime: float | None = None
        self._lock = threading.Lock()
        if self._path is not None:
            self._config = load_config(self._path)  # a bad file stops the worker at start
            self._mtime = os.stat(self._path).st_mtime

    def config(self) -> ThrottleConfig:
        """The limits, re-read when the file changed (a bad edit keeps the last good ones)."""
        if self._path is None:
            return self._config
        with self._lock:
            try:
                mtime = os.stat(self._path).st_mtime
                if mtime != self._mtime:
                    self._config, self._mtime = load_config(self._path), mtime
            except (OSError, ValueError) as err:
                activity.logger.warning(f"throttles: keeping the last good limits: {err}")
            return self._config

    @asynccontextmanager
    async def slot(self, keys: list[str]) -> AsyncIterator[float]:
        """Hold one slot of every configured limit among ``keys`` for the block; yields the
        seconds waited. Waits (heartbeating inside an activity) while any limit is reached."""
        limits = {k: v for k, v in self.config().limits.items() if k in set(keys)}
        if not limits:
            yield 0.0
            return
        holder = uuid.uuid4().hex
        lease = self.lease_seconds
        timeout = activity.info().start_to_close_timeout if activity.in_activity() else None
        if timeout:
            lease = timeout.total_seconds()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            retry_in = await asyncio.to_thread(self._try_acquire, limits, holder, lease)
            if retry_in is None:
                break
            if activity.in_activity():
                activity.heartbeat({"throttled_by": sorted(limits)})
            await asyncio.sleep(min(retry_in, MAX_WAIT_STEP_SECONDS) * random.uniform(0.8, 1.2))
        waited = loop.time() - started
        try:
            yield waited
        finally:
            await asyncio.to_thread(self._release, holder)

    # -- one transaction per attempt ------------------------------------------------------------

    def _try_acquire(self, limits: dict[str, Limit], holder: str, lease: float) -> float | None:
        """Take every slot, or none: None when taken, else seconds until it may be worth trying."""
        try:
            return self._acquire_once(limits, holder, lease)
        except IntegrityError:  # two first callers created the same bucket row: try again
            return 0.01

    def _acquire_once(self, limits: dict[str, Limit], holder: str, lease: float) -> float | None:
        now = utcnow()
        with self.db.session() as session:
            conn = session.connection()
            buckets: dict[str, tuple[float, datetime]] = {}
            for key in sorted(limits):  # lock order: no two callers deadlock
                buckets[key] = self._lock_bucket(conn, key, limits[key], now)
            conn.execute(delete(LEASES).where(LEASES.c.expires_at < now))
            wait = 0.0
            for key, limit in limits.items():
                if limit.concurrency is not None:
                    held = conn.execute(
                        select(func.count()).select_from(LEASES).where(LEASES.c.key == key)
                    ).scalar_one()
                    if held >= limit.concurrency:
                        wait = max(wait, 0.05)
                if limit.per_minute is not None:
                    tokens = self._tokens(buckets[key], limit, now)
                    if tokens < 1:
                        wait = max(wait, (1 - tokens) * 60 / limit.per_minute)
            if wait > 0:
                return wait  # nothing taken; expired leases removed is fine to commit
            for key, limit in limits.items():
                if limit.concurrency is not None:
                    conn.execute(
                        insert(LEASES).values(
                            key=key, holder=holder, expires_at=now + timedelta(seconds=lease)
                        )
                    )
                if limit.per_minute is not None:
                    conn.execute(
                        update(BUCKETS)
                        .where(BUCKETS.c.key == key)
                        .values(tokens=self._tokens(buckets[key], limit, now) - 1, refilled_at=now)
                    )
        return None

    @staticmethod
    def _lock_bucket(
        conn: Connection, key: str, limit: Limit, now: datetime
    ) -> tuple[float, datetime]:
        """The key's (tokens, refilled_at), its row locked for this transaction (created full)."""
        row = conn.execute(
            select(BUCKETS.c.tokens, BUCKETS.c.refilled_at)
            .where(BUCKETS.c.key == key)
            .with_for_update()  # PostgreSQL row lock; SQLite already holds the write lock
        ).first()
        if row is None:
            conn.execute(insert(BUCKETS).values(key=key, tokens=limit.capacity, refilled_at=now))
            return limit.capacity, now
        return float(row.tokens), as_utc(row.refilled_at)

    @staticmethod
    def _tokens(bucket: tuple[float, datetime], limit: Limit, now: datetime) -> float:
        tokens, refilled_at = bucket
        elapsed = (now - refilled_at).total_seconds()
        return min(limit.capacity, tokens + max(0.0, elapsed) * (limit.per_minute or 0) / 60)

    def _release(self, holder: str) -> None:
        with self.db.session() as session:
            session.connection().execute(delete(LEASES).where(LEASES.c.holder == holder))


class EndpointSlots:
    """Worker-local concurrency per model endpoint: at most ``max_concurrency`` requests to one
    (endpoint, model) at once from this worker (the catalogue's ``max_concurrency``); excess
    requests wait (heartbeating), like the throttles above. A small local model server answers
    one request at a time: a second request would only queue there, past its client timeout."""

    def __init__(self) -> None:
        self._semaphores: dict[tuple[str, str], tuple[int, asyncio.Semaphore]] = {}

    @asynccontextmanager
    async def slot(self, endpoint: str, model: str, limit: int | None) -> AsyncIterator[float]:
        """Hold one of the (endpoint, model)'s slots for the block; yields the seconds waited."""
        if limit is None:
            yield 0.0
            return
        key = (endpoint, model)
        known = self._semaphores.get(key)
        if known is None or known[0] != limit:
            known = (limit, asyncio.Semaphore(limit))
            self._semaphores[key] = known
        semaphore = known[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            try:
                await asyncio.wait_for(semaphore.acquire(), timeout=MAX_WAIT_STEP_SECONDS * 4)
                break
            except TimeoutError:
                if activity.in_activity():
                    activity.heartbeat({"waiting_for": f"{model}@{endpoint}"})
        try:
            yield loop.time() - started
        finally:
            semaphore.release()


__all__ = [
    "BUCKETS",
    "EndpointSlots",
    "KEY_KINDS",
    "LEASES",
    "Limit",
    "MAX_WAIT_STEP_SECONDS",
    "Throttle",
    "ThrottleConfig",
    "load_config",
]
