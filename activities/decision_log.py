"""Decision logs in OPA's format: one record per policy decision, to the audit ledger's hash
chain and, when configured, to a decision-log HTTP service.

Owns:

* ``decision_record()`` - the record of one decision with OPA's decision-log fields
  (``decision_id``, ``path``, ``input``, ``result``, ``bundles`` with the revision, ``labels``,
  ``timestamp``, ``requested_by``, ``erased``), plus Baton's reading of it (``baton``: verdict,
  reasons, engine, subject), with the input masked (``mask``: JSON pointers to erase, as OPA's
  ``erased`` list reports them).
* ``DecisionLogger`` - buffers records and writes them from a background thread: to the ledger
  (one transaction per batch, rows keyed ``decision-log/<UTC day>/<decision_id>``, so a retried
  activity that re-decides under the same id writes once) and, with ``url`` set, to an HTTP
  endpoint like OPA's decision-log plugin (POST of a gzip-compressed JSON array, batched,
  retried with exponential backoff; a batch that still fails is kept for the next flush, up to
  ``buffer_limit`` records, after which the oldest are dropped and counted).
* ``read_records()`` - the records back from the ledger, for ``baton policy log``.

Not durable before a flush (at most ``flush_interval`` seconds, and at worker shutdown): the
decision itself is already in the ledger, in the audit row each governed step writes with its
side effect; this log is the OPA-format stream of every decision next to it.

Must not: be imported by workflows (it does I/O); change a decision (it only records it).
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workflows.contracts import AuditEvent, PolicyDecision, PolicyQuery

LEDGER_WORKFLOW = "decision-log"
LEDGER_ACTOR = "decision-log"
LEDGER_ACTION = "policy.decision_logged"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionLogConfig:
    """How decisions are logged (Settings: BATON_DECISION_LOG_URL, BATON_DECISION_LOG_MASK)."""

    #: JSON pointers to erase from each record, e.g. "/input/arguments/card_number". Must start
    #: with /input or /result (as OPA's mask rules).
    mask: tuple[str, ...] = ()
    #: Decision-log service endpoint (the full URL the batches are POSTed to); None = ledger only.
    url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    max_batch: int = 100
    flush_interval: float = 0.5
    retries: int = 3
    backoff_seconds: float = 0.2
    buffer_limit: int = 10_000
    timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        for pointer in self.mask:
            if not (pointer.startswith("/input") or pointer.startswith("/result")):
                raise ValueError(
                    f"decision-log mask {pointer!r} must be a JSON pointer under /input or "
                    "/result, e.g. /input/arguments/card_number"
                )
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"BATON_DECISION_LOG_URL must be an http(s) URL, got {self.url!r}")


def decision_record(
    query: PolicyQuery,
    decision: PolicyDecision,
    result: Any,
    *,
    mask: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    requested_by: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The OPA decision-log record of one decision (``result`` is the policy's own document,
    None when there was none: undefined, or an evaluation that failed)."""
    record: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "path": f"{query.policy.strip('/').replace('.', '/')}/decision",
        "input": _copied(query.input),
        "bundles": {"baton": {"revision": decision.revision}},
        "labels": dict(labels or {}),
        "timestamp": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "requested_by": requested_by or query.workflow_id or "baton",
        "baton": {
            "verdict": decision.verdict,
            "reasons": list(decision.reasons),
            "engine": decision.engine,
            "subject": decision.subject,
        },
    }
    if result is not None:
        record["result"] = _copied(result)
    erased = [pointer for pointer in mask if _erase(record, pointer)]
    if erased:
        record["erased"] = erased
    return record


_IMMUTABLE = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """A deep copy of a decision's input or result: JSON's dicts, lists and scalars are copied
    (or, immutable, kept) directly, anything else by ``copy.deepcopy``. Several times faster
    than deepcopy on a whole document, and every decision makes two."""
    kind = type(value)
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is list:
        return [_copied(v) for v in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def _erase(record: dict[str, Any], pointer: str) -> bool:
    """Remove the value at a JSON pointer; True when there was one."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    node: Any = record
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    last = parts[-1] if parts else ""
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


class DecisionLogger:
    """Buffers decision records and writes them, batched, from one background thread."""

    def __init__(
        self,
        ledger: Any | None,
        config: DecisionLogConfig | None = None,
        *,
        post: Callable[[str, bytes, dict[str, str], float], int] | None = None,
    ) -> None:
        self.ledger = ledger
        self.config = config or DecisionLogConfig()
        self._post = post or _http_post
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []  # for the ledger
        self._outbox: list[dict[str, Any]] = []  # for the HTTP service
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dropped = 0
        self.sent = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="baton-decision-log", daemon=True)
        self._thread.start()

    def log(self, query: PolicyQuery, decision: PolicyDecision, result: Any) -> dict[str, Any]:
        """Record one decision (never raises: logging must not change a decision)."""
        try:
            record = decision_record(
                query, decision, result, mask=self.config.mask, labels=self.config.labels
            )
        except Exception as exc:  # an input that cannot be copied: record what we can
            log.warning("decision %s not logged: %s", decision.decision_id, exc)
            return {}
        with self._lock:
            if self.ledger is not None:
                self._pending.append(record)
            if self.config.url:
                self._outbox.append(record)
                overflow = len(self._outbox) - self.config.buffer_limit
                if overflow > 0:
                    del self._outbox[:overflow]
                    self.dropped += overflow
            full = max(len(self._pending), len(self._outbox)) >= self.config.max_batch
        if full:
            self._wake.set()
        return record

    def flush(self) -> None:
        """Write everything buffered now (the ledger, then one or more HTTP batches)."""
        with self._lock:
            pending, self._pending = self._pending, []
            outbox, self._outbox = self._outbox, []
        if pending and self.ledger is not None:
            try:
                self.ledger.append([_ledger_event(r) for r in pending])
            except Exception as exc:
                log.warning("decision log: ledger write failed, retrying later: %s", exc)
                with self._lock:
                    self._pending[:0] = pending
        unsent: list[dict[str, Any]] = []
        for start in range(0, len(outbox), self.config.max_batch):
            batch = outbox[start : start + self.config.max_batch]
            if unsent or not self._send(batch):
                unsent.extend(batch)
        if unsent:
            with self._lock:
                self._outbox[:0] = unsent
                overflow = len(self._outbox) - self.config.buffer_limit
                if overflow > 0:
                    del self._outbox[:overflow]
                    self.dropped += overflow

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        assert self.config.url is not None
        body = gzip.compress(json.dumps(batch, default=str).encode())
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        delay = self.config.backoff_seconds
        for attempt in range(self.config.retries + 1):
            try:
                status = self._post(self.config.url, body, headers, self.config.timeout_seconds)
            except Exception as exc:
                status, problem = 0, str(exc)
            else:
                problem = f"HTTP {status}"
            if 200 <= status < 300:
                self.sent += len(batch)
                return True
            self.failures += 1
            log.warning("decision log: POST %s failed (%s)", self.config.url, problem)
            if attempt < self.config.retries and not self._stop.is_set():
                time.sleep(delay)
                delay *= 2
        return False

    def close(self) -> None:
        """Flush what is buffered and stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:  # the thread must outlive one bad flush
                log.warning("decision log flush failed: %s", exc)


def _ledger_event(record: dict[str, Any]) -> AuditEvent:
    day = str(record.get("timestamp", ""))[:10] or "unknown"
    digest = hashlib.sha256(
        json.dumps(record.get("input"), sort_keys=True, default=str).encode()
    ).hexdigest()
    return AuditEvent(
        workflow_id=LEDGER_WORKFLOW,
        run_id=day,
        seq=str(record["decision_id"]),
        actor=LEDGER_ACTOR,
        action=LEDGER_ACTION,
        detail=record,
        decision_id=str(record["decision_id"]),
        input_digest=digest,
    )


def _http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    import httpx

    return httpx.post(url, content=body, headers=headers, timeout=timeout).status_code


def read_records(
    ledger: Any, *, day: str | None = None, path: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Decision records from the ledger, newest last; ``path`` filters on the policy path
    prefix (``baton/finance/posting``), ``day`` on the UTC day (``2026-10-30``)."""
    records = [json.loads(row.detail_json) for row in ledger.trail(LEDGER_WORKFLOW, day)]
    if path:
        wanted = path.strip("/").replace(".", "/")
        records = [r for r in records if str(r.get("path", "")).startswith(wanted)]
    return records[-limit:] if limit > 0 else records


__all__ = [
    "DecisionLogConfig",
    "DecisionLogger",
    "LEDGER_ACTION",
    "LEDGER_ACTOR",
    "LEDGER_WORKFLOW",
    "decision_record",
    "log",
    "read_records",
]
