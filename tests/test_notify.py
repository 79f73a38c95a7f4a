"""Approval notifications on real parts: a database outbox, a local HTTP receiver, Temporal retries.

The receiver is a real HTTP server on a free port that records every request and answers from a
script (e.g. 503, 503, then 200). Retries are Temporal's: a tiny workflow runs the ``notify``
activity with the ``notification`` preset on the session dev server, on its own task queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    from sqlmodel import col, select
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.exceptions import ActivityError, ApplicationError
    from temporalio.worker import Worker

    from activities.audit import AuditLedger
    from activities.database import Database, NotificationOutbox
    from activities.notify import (
        NotifyActivities,
        OutboxNotifier,
        WebhookNotifier,
        build_notifier,
        retry_after_seconds,
    )
    from baton.settings import Settings
    from tests.support.serving import serving
    from workflows.contracts import Notification, NotifyResult
    from workflows.presets import PRESETS


# --------------------------------------------------------------------------------------------
# The receiver: a real HTTP server that records requests and answers from a script
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class Receiver:
    """Answers each POST with the next scripted answer, then 200 once the script is used up."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Answer] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    answer = receiver.script.pop(0) if receiver.script else Answer(200, body="ok")
                data = answer.body.encode()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/baton"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, *answers: Answer) -> Receiver:
        self.script = list(answers)
        return self

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as r:
        yield r


@pytest.fixture
def ledger(database_url: str) -> Iterator[AuditLedger]:
    db = Database(database_url)
    db.create_tables()
    yield AuditLedger(db)
    db.dispose()


def notification(workflow_id: str | None = None, **overrides: object) -> Notification:
    workflow_id = workflow_id or f"close-{uuid.uuid4().hex[:8]}"
    return Notification.model_validate(
        {
            "kind": "approval.requested",
            "workflow_id": workflow_id,
            "request_id": "req-1",
            "process": "finance_close",
            "summary": "2 adjusting entries, total 1,250.00 USD, need approval",
            "roles": ["finance-controller"],
            "recipients": ["carol", "dave"],
            "deadline": datetime(2101, 10, 31, 17, 0, tzinfo=UTC),
            "idempotency_key": f"{workflow_id}/notify/req-1/0/{uuid.uuid4().hex[:6]}",
            **overrides,
        }
    )


def actions(ledger: AuditLedger, workflow_id: str) -> list[str]:
    return [r.action for r in ledger.trail(workflow_id)]


# --------------------------------------------------------------------------------------------
# Outbox (the default): one row and one audit row per key, on SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def any_ledger(request: pytest.FixtureRequest, database_url: str) -> Iterator[AuditLedger]:
    url = database_url if request.param == "sqlite" else request.getfixturevalue("pg_database")
    db = Database(url)
    db.create_tables()
    yield AuditLedger(db)
    db.dispose()


def outbox_rows(db: Database, key: str) -> list[NotificationOutbox]:
    with db.read_session() as s:
        query = select(NotificationOutbox).where(NotificationOutbox.idempotency_key == key)
        return list(s.exec(query.order_by(col(NotificationOutbox.id))).all())


async def test_outbox_queues_one_row_and_one_audit_row_per_key(any_ledger: AuditLedger) -> None:
    db = any_ledger.db
    notifier = OutboxNotifier(db, any_ledger)
    n = notification()

    first = await notifier.send(n)
    again = await notifier.send(n)  # a retried activity: nothing is written twice

    [row] = outbox_rows(db, n.idempotency_key)
    assert first.channel == "outbox" and not first.delivered
    assert first.detail == f"queued as outbox row {row.id}"
    assert again.detail == f"already queued as outbox row {row.id}"
    assert (row.kind, row.workflow_id, row.request_id) == (n.kind, n.workflow_id, "req-1")
    assert (row.recipients, row.roles) == (["carol", "dave"], ["finance-controller"])
    assert Notification.model_validate(row.payload) == n
    assert row.delivered_at is None
    [audit] = any_ledger.trail(n.workflow_id)
    assert (audit.actor, audit.action) == ("baton:notify", "notification.queued")
    assert json.loads(audit.detail_json) == {
        "kind": "approval.requested",
        "request_id": "req-1",
        "roles": ["finance-controller"],
        "recipients": ["carol", "dave"],
        "escalation_level": 0,
        "channel": "outbox",
        "outbox_id": row.id,
    }


async def test_concurrent_attempts_with_one_key_queue_once(any_ledger: AuditLedger) -> None:
    notifier = OutboxNotifier(any_ledger.db, any_ledger)
    n = notification(kind="approval.escalated", escalation_level=1, roles=["cfo"])
    results = await asyncio.gather(*(notifier.send(n) for _ in range(4)))
    assert len(outbox_rows(any_ledger.db, n.idempotency_key)) == 1
    assert sum(r.detail.startswith("queued") for r in results) == 1
    assert actions(any_ledger, n.workflow_id) == ["notification.queued"]


async def test_one_workflow_queues_one_row_per_distinct_key(ledger: AuditLedger) -> None:
    notifier = OutboxNotifier(ledger.db, ledger)
    requested = notification()
    escalated = notification(
        requested.workflow_id, kind="approval.escalated", escalation_level=1, roles=["cfo"]
    )
    await notifier.send(requested)
    await notifier.send(escalated)
    assert actions(ledger, requested.workflow_id) == ["notification.queued"] * 2
    assert ledger.verify().ok


# --------------------------------------------------------------------------------------------
# Webhook: body, headers, signature, and how HTTP answers map to Temporal errors
# --------------------------------------------------------------------------------------------


async def test_webhook_posts_the_body_with_idempotency_key_and_hmac_signature(
    receiver: Receiver, ledger: AuditLedger
) -> None:
    notifier = WebhookNotifier(receiver.url, secret="s3cret", ledger=ledger)
    n = notification()
    try:
        result = await notifier.send(n)
    finally:
        await notifier.aclose()

    assert result == NotifyResult(channel="webhook", delivered=True, detail="HTTP 200")
    [req] = receiver.requests
    assert req.path == "/hooks/baton"
    assert json.loads(req.body) == n.model_dump(mode="json")
    assert req.headers["Idempotency-Key"] == n.idempotency_key
    assert req.headers["Content-Type"] == "application/json"
    expected = hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Baton-Signature"] == f"sha256={expected}"
    assert actions(ledger, n.workflow_id) == ["notification.sent"]


async def test_webhook_without_secret_sends_no_signature(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:  # an injected client stays open after aclose()
        notifier = WebhookNotifier(receiver.url, client=client)
        await notifier.send(notification())
        await notifier.aclose()
        assert not client.is_closed
    [req] = receiver.requests
    assert "X-Baton-Signature" not in req.headers


async def send_and_catch(url: str, n: Notification | None = None) -> ApplicationError:
    notifier = WebhookNotifier(url, timeout=2.0)
    try:
        with pytest.raises(ApplicationError) as caught:
            await notifier.send(n or notification())
    finally:
        await notifier.aclose()
    return caught.value


async def test_429_with_retry_after_is_retryable_after_that_delay(receiver: Receiver) -> None:
    receiver.answer(Answer(429, {"Retry-After": "1"}, "slow down"))
    err = await send_and_catch(receiver.url)
    assert err.type == "NotificationUnavailable" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=1)
    assert "HTTP 429: slow down" in err.message


async def test_503_is_retryable_with_the_policy_backoff(receiver: Receiver) -> None:
    receiver.answer(Answer(503, body="<html>maintenance</html>"))
    err = await send_and_catch(receiver.url)
    assert err.type == "NotificationUnavailable" and not err.non_retryable
    assert err.next_retry_delay is None


async def test_other_4xx_is_rejected_naming_status_and_body(receiver: Receiver) -> None:
    receiver.answer(Answer(400, body='{"error": "unknown field \'recipients\'"} ' + "x" * 500))
    err = await send_and_catch(receiver.url)
    assert err.type == "NotificationRejected" and err.non_retryable
    assert 'answered HTTP 400: {"error": "unknown field \'recipients\'"}' in err.message
    assert err.message.endswith("...") and len(err.message) < 320
    assert "/hooks/baton" not in err.message  # the host only: paths and queries may hold tokens


async def test_unreachable_receiver_is_retryable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = await send_and_catch(f"http://127.0.0.1:{port}/hook")
    assert err.type == "NotificationUnavailable" and not err.non_retryable
    assert "unreachable or timed out" in err.message


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2101, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Sat, 01 Jan 2101 12:00:05 GMT", now) == 5.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# --------------------------------------------------------------------------------------------
# Temporal owns the retries: the notify activity run by a workflow with the notification preset
# --------------------------------------------------------------------------------------------


@workflow.defn(name="NotifyTestWorkflow")
class NotifyTestWorkflow:
    @workflow.run
    async def run(self, n: Notification) -> NotifyResult:
        preset = PRESETS["notification"]
        return await workflow.execute_activity_method(
            NotifyActivities.notify,
            n,
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
            summary=f"notify {n.kind}",
        )


async def run_notify(client: Client, notifier: WebhookNotifier, n: Notification) -> NotifyResult:
    task_queue = f"tq-notify-{uuid.uuid4().hex[:12]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[NotifyTestWorkflow],
        activities=[NotifyActivities(notifier).notify],
    ):
        async with asyncio.timeout(60):
            return await client.execute_workflow(
                NotifyTestWorkflow.run, n, id=n.workflow_id, task_queue=task_queue
            )


async def test_temporal_retries_503_until_the_webhook_accepts(
    temporal_client: Client, receiver: Receiver, ledger: AuditLedger
) -> None:
    receiver.answer(Answer(503, body="down"), Answer(503, body="down"))
    notifier = WebhookNotifier(receiver.url, secret="s3cret", ledger=ledger)
    n = notification(f"notify-{uuid.uuid4().hex[:10]}")
    try:
        result = await run_notify(temporal_client, notifier, n)
    finally:
        await notifier.aclose()

    assert result.delivered and result.channel == "webhook"
    assert len(receiver.requests) == 3
    assert {r.headers["Idempotency-Key"] for r in receiver.requests} == {n.idempotency_key}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes, the same signature
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.8  # the preset's backoff: 1 s, then 2 s
    [sent] = ledger.trail(n.workflow_id)  # one audit row, written after the successful attempt
    assert sent.action == "notification.sent"
    assert json.loads(sent.detail_json)["status"] == 200


async def test_temporal_waits_the_retry_after_of_a_429(
    temporal_client: Client, receiver: Receiver, ledger: AuditLedger
) -> None:
    # Retry-After 2 s is longer than the preset's first interval (1 s): the header wins
    receiver.answer(Answer(429, {"Retry-After": "2"}, "slow down"))
    notifier = WebhookNotifier(receiver.url, ledger=ledger)
    n = notification(f"notify-{uuid.uuid4().hex[:10]}")
    try:
        result = await run_notify(temporal_client, notifier, n)
    finally:
        await notifier.aclose()
    assert result.delivered
    first, second = receiver.requests
    assert second.at - first.at >= 1.9


async def test_a_rejected_notification_fails_at_once(
    temporal_client: Client, receiver: Receiver, ledger: AuditLedger
) -> None:
    receiver.answer(Answer(400, body="recipients: unknown user 'dave'"))
    notifier = WebhookNotifier(receiver.url, ledger=ledger)
    n = notification(f"notify-{uuid.uuid4().hex[:10]}")
    try:
        with pytest.raises(WorkflowFailureError) as caught:
            await run_notify(temporal_client, notifier, n)
    finally:
        await notifier.aclose()

    activity_error = caught.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "NotificationRejected" and cause.non_retryable
    assert "HTTP 400: recipients: unknown user 'dave'" in cause.message
    assert len(receiver.requests) == 1
    assert actions(ledger, n.workflow_id) == []


# --------------------------------------------------------------------------------------------
# Settings and wiring
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/baton", "hooks.example.com/baton", "https://", "http://h:0x/"]
)
def test_a_bad_webhook_url_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ValueError, match="BATON_NOTIFY_WEBHOOK_URL"):
        Settings.from_env({"BATON_NOTIFY_WEBHOOK_URL": url})


def test_a_secret_without_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="BATON_NOTIFY_WEBHOOK_SECRET is set but"):
        Settings.from_env({"BATON_NOTIFY_WEBHOOK_SECRET": "s3cret"})


def test_webhook_settings_are_read_and_the_secret_is_never_printed() -> None:
    settings = Settings.from_env(
        {
            "BATON_NOTIFY_WEBHOOK_URL": "https://hooks.example.com/baton?token=abc",
            "BATON_NOTIFY_WEBHOOK_SECRET": "s3cret",
        }  # fmt: skip
    )
    assert settings.notify_webhook_url == "https://hooks.example.com/baton?token=abc"
    assert settings.notify_webhook_secret == "s3cret"
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({}).notify_webhook_url is None


async def test_build_notifier_picks_the_webhook_only_when_configured(ledger: AuditLedger) -> None:
    assert isinstance(build_notifier(Settings(), ledger.db, ledger), OutboxNotifier)
    settings = replace(Settings(), notify_webhook_url="http://127.0.0.1:9/hook")
    webhook = build_notifier(settings, ledger.db, ledger)
    assert isinstance(webhook, WebhookNotifier) and webhook.ledger is ledger
    await webhook.aclose()
    assert webhook.client.is_closed
