"""Approval notifications: the ``notify`` activity behind a small :class:`Notifier` interface.

The workflow tells people that an approval was requested, escalated, expired or closed by running
the ``notify`` activity (preset kind ``notification``). Where the notification goes is chosen once,
in worker.py, by :func:`build_notifier`:

- :class:`OutboxNotifier` (the default): writes the notification into the ``notification_outbox``
  table and its ``notification.queued`` audit row in ONE transaction. A relay (or the receiving
  system) delivers unsent rows (``delivered_at IS NULL``). Nothing leaves the database, so the
  embedded stack works offline; the result says ``delivered=False`` because it is only queued.
- :class:`WebhookNotifier` (``BATON_NOTIFY_WEBHOOK_URL``): POSTs the notification as JSON, with an
  ``Idempotency-Key`` header and, when ``BATON_NOTIFY_WEBHOOK_SECRET`` is set, an
  ``X-Baton-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`` header. After a 2xx it
  appends a ``notification.sent`` audit row.

Idempotency: everything is keyed by ``Notification.idempotency_key``. A retried attempt writes no
second outbox row and no second audit row; a retried webhook POST carries the same key so the
receiver drops the repeat (a POST whose answer was lost, or whose audit write failed, is sent again:
delivery is at least once, de-duplicated by the receiver).

Retries belong to Temporal: 408, 429, 5xx, timeouts and connection errors raise a retryable
``NotificationUnavailable`` (``Retry-After`` becomes ``next_retry_delay``); any other 4xx raises a
non-retryable ``NotificationRejected`` naming the status and the start of the answer.

Must not: be imported by workflows except through ``imports_passed_through`` for the activity
reference (it does I/O).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditLedger
from activities.database import Database, NotificationOutbox, utcnow
from baton.settings import Settings
from workflows.contracts import AuditEvent, Notification, NotifyResult, digest

OUTBOX = NotificationOutbox.__table__  # type: ignore[attr-defined]
RETRYABLE_STATUS = {408, 429}
BODY_EXCERPT_CHARS = 200
ACTOR = "baton:notify"


class Notifier(Protocol):
    """Where notifications go. ``send`` must be idempotent per ``n.idempotency_key``."""

    async def send(self, n: Notification) -> NotifyResult: ...


def notification_event(n: Notification, step: str, action: str, **detail: object) -> AuditEvent:
    """The audit event of one notification step, keyed by its idempotency key (not the attempt).

    Inside an activity the row belongs to the run that sent it; outside one (a relay, a test) to
    the notification's workflow.
    """
    workflow_id, run_id = n.workflow_id, ""
    if activity.in_activity():
        info = activity.info()
        workflow_id, run_id = info.workflow_id or n.workflow_id, info.workflow_run_id or ""
    return AuditEvent(
        workflow_id=workflow_id,
        run_id=run_id,
        seq=f"notify/{n.idempotency_key}/{step}",
        actor=ACTOR,
        action=action,
        detail={
            "kind": n.kind,
            "request_id": n.request_id,
            "roles": n.roles,
            "recipients": n.recipients,
            "escalation_level": n.escalation_level,
            **detail,
        },
        input_digest=digest(n),
    )


class OutboxNotifier:
    """Queue notifications in the database, with their audit row, in one transaction."""

    channel = "outbox"

    def __init__(self, db: Database, ledger: AuditLedger) -> None:
        self.db = db
        self.ledger = ledger

    async def send(self, n: Notification) -> NotifyResult:
        return await asyncio.to_thread(self._queue, n)

    def _queue(self, n: Notification) -> NotifyResult:
        row = {
            "idempotency_key": n.idempotency_key,
            "kind": n.kind,
            "workflow_id": n.workflow_id,
            "request_id": n.request_id,
            "recipients": n.recipients,
            "roles": n.roles,
            "payload": n.model_dump(mode="json"),
            "created_at": utcnow(),
        }
        # ON CONFLICT DO NOTHING: a concurrent attempt with the same key (PostgreSQL) waits for
        # the first to commit and then inserts nothing, instead of failing on the unique key.
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        statement = (
            insert(OUTBOX)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(OUTBOX.c.id)
        )
        with self.db.session() as session:
            conn = session.connection()
            outbox_id = conn.execute(statement).scalar()
            if outbox_id is None:  # queued by an earlier attempt: its audit row is there too
                existing = conn.execute(
                    select(OUTBOX.c.id).where(OUTBOX.c.idempotency_key == n.idempotency_key)
                ).scalar()
                return NotifyResult(
                    channel=self.channel,
                    delivered=False,
                    detail=f"already queued as outbox row {existing}",
                )
            event = notification_event(
                n, "queued", "notification.queued", channel=self.channel, outbox_id=outbox_id
            )
            self.ledger.append_in(session, [event])
        return NotifyResult(
            channel=self.channel, delivered=False, detail=f"queued as outbox row {outbox_id}"
        )


class WebhookNotifier:
    """POST notifications to an HTTP endpoint (signed when a secret is set)."""

    channel = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        ledger: AuditLedger | None = None,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.ledger = ledger
        self._owns_client = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._where = urlsplit(url).netloc or url  # never the path/query: they may hold tokens

    def body(self, n: Notification) -> bytes:
        """The exact bytes POSTed (and signed)."""
        return json.dumps(n.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def signature(self, body: bytes) -> str | None:
        if not self.secret:
            return None
        mac = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={mac}"

    async def send(self, n: Notification) -> NotifyResult:
        body = self.body(n)
        headers = {"Content-Type": "application/json", "Idempotency-Key": header_key(n)}
        signature = self.signature(body)
        if signature is not None:
            headers["X-Baton-Signature"] = signature
        try:
            response = await self.client.post(
                self.url, content=body, headers=headers, timeout=self.timeout
            )
        except httpx.TransportError as err:  # connect/read/write errors and timeouts
            raise ApplicationError(
                f"notification webhook at {self._where} unreachable or timed out: "
                f"{type(err).__name__}: {err}",
                type="NotificationUnavailable",
            ) from err
        status = response.status_code
        if 200 <= status < 300:
            if self.ledger is not None:
                event = notification_event(
                    n, "sent", "notification.sent", channel=self.channel, status=status
                )
                await asyncio.to_thread(self.ledger.append, [event])
            return NotifyResult(channel=self.channel, delivered=True, detail=f"HTTP {status}")
        excerpt = _excerpt(response)
        message = f"notification webhook at {self._where} answered HTTP {status}: {excerpt}"
        if status in RETRYABLE_STATUS or status >= 500:
            delay = retry_after_seconds(response.headers.get("retry-after"))
            raise ApplicationError(
                message,
                type="NotificationUnavailable",
                next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
            )
        raise ApplicationError(message, type="NotificationRejected", non_retryable=True)

    async def aclose(self) -> None:
        """Close the HTTP client if this notifier made it (an injected one belongs to its owner)."""
        if self._owns_client:
            await self.client.aclose()


def header_key(n: Notification) -> str:
    """The idempotency key as a header value: as is when printable ASCII, else percent-encoded
    (the same on every attempt; the body carries the key unchanged)."""
    key = n.idempotency_key
    return key if key.isascii() and key.isprintable() else quote(key, safe="")


def retry_after_seconds(raw: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None  # unparseable: let the retry policy's backoff decide
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "..."


class NotifyActivities:
    """The ``notify`` activity. Built once in worker.py around the configured notifier."""

    def __init__(self, notifier: Notifier, *, inbox_url: str | None = None) -> None:
        """``inbox_url`` (BATON_INBOX_URL): approval notifications carry the deep link to the
        request's page in the approver inbox."""
        self.notifier = notifier
        self.inbox_url = inbox_url

    @activity.defn(name="notify")
    async def notify(self, n: Notification) -> NotifyResult:
        return await self.notifier.send(with_link(n, self.inbox_url))


def with_link(n: Notification, inbox_url: str | None) -> Notification:
    """``n`` with the inbox page of its request as ``link`` (approval notifications only)."""
    if inbox_url is None or n.link is not None or not n.kind.startswith("approval."):
        return n
    path = f"/requests/{quote(n.request_id, safe='')}?workflow={quote(n.workflow_id, safe='')}"
    return n.model_copy(update={"link": inbox_url.rstrip("/") + path})


def build_notifier(settings: Settings, db: Database, ledger: AuditLedger) -> Notifier:
    """The webhook when ``BATON_NOTIFY_WEBHOOK_URL`` is set, else the database outbox."""
    if settings.notify_webhook_url:
        return WebhookNotifier(
            settings.notify_webhook_url, secret=settings.notify_webhook_secret, ledger=ledger
        )
    return OutboxNotifier(db, ledger)


__all__ = [
    "ACTOR",
    "BODY_EXCERPT_CHARS",
    "Notifier",
    "NotifyActivities",
    "OUTBOX",
    "OutboxNotifier",
    "RETRYABLE_STATUS",
    "WebhookNotifier",
    "build_notifier",
    "header_key",
    "notification_event",
    "retry_after_seconds",
    "with_link",
]
