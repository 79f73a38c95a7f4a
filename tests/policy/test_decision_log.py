"""Decision logs in OPA's format: every decision (async and in-transaction paths, every
verdict, failures included) becomes a record with OPA's decision-log fields in the ledger's hash
chain, masked as configured; with an endpoint set, batches are POSTed gzip-compressed and
retried; ``baton policy log`` (the real CLI process) shows them."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from activities.audit import AuditLedger
from activities.database import Database
from activities.decision_log import (
    LEDGER_WORKFLOW,
    DecisionLogConfig,
    DecisionLogger,
    read_records,
)
from activities.policy import EmbeddedOpaEngine, decide, decide_sync
from tests.policy.test_parity import TOOL_CALL, refund
from tests.policy.test_rego import BASE
from tests.support.paths import BATON, POLICY_DIR
from workflows.contracts import PolicyQuery

OPA_FIELDS = {
    "decision_id",
    "path",
    "input",
    "result",
    "bundles",
    "labels",
    "timestamp",
    "requested_by",
}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    database.create_tables()
    yield database
    database.dispose()


class CollectorHandler(BaseHTTPRequestHandler):
    """A decision-log service: answers 500 to the first ``fail`` POSTs, then 204."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        collector = self.server.collector  # type: ignore[attr-defined]
        with collector["lock"]:
            collector["posts"] += 1
            failing = collector["posts"] <= collector["fail"]
            if not failing:
                assert self.headers["Content-Encoding"] == "gzip"
                collector["batches"].append(json.loads(gzip.decompress(body)))
        self.send_response(500 if failing else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[dict[str, Any]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CollectorHandler)
    state: dict[str, Any] = {"lock": threading.Lock(), "posts": 0, "fail": 2, "batches": []}
    server.collector = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/logs"
    yield state
    server.shutdown()
    server.server_close()


async def test_every_decision_is_logged_in_opas_format_to_the_ledger(db: Database) -> None:
    ledger = AuditLedger(db)
    engine = EmbeddedOpaEngine(POLICY_DIR)
    config = DecisionLogConfig(
        mask=("/input/arguments/order_id", "/input/nowhere"), labels={"app": "baton-test"}
    )
    engine.decision_log = DecisionLogger(ledger, config)  # type: ignore[attr-defined]
    try:
        allowed = await decide(
            engine,
            PolicyQuery(policy="baton/base/tool_call", input=TOOL_CALL, workflow_id="wf-1"),
            "wf-1/act/1",
        )
        approval = decide_sync(
            engine,
            PolicyQuery(policy="baton/base/tool_call", input=refund(120), workflow_id="wf-1"),
            "wf-1/act/2",
        )
        undefined = await decide(
            engine, PolicyQuery(policy="baton/nothing", input={}, workflow_id="wf-2"), "wf-2/1"
        )
        posting = await decide(
            engine, PolicyQuery(policy="baton/finance/posting", input=BASE), "wf-3/1"
        )
    finally:
        engine.decision_log.close()  # type: ignore[attr-defined]
        engine.close()
    assert [allowed.verdict, approval.verdict, undefined.verdict, posting.verdict] == [
        "allow",
        "require_approval",
        "deny",
        "allow",
    ]

    records = {r["decision_id"]: r for r in read_records(ledger, limit=0)}
    assert sorted(records) == ["wf-1/act/1", "wf-1/act/2", "wf-2/1", "wf-3/1"]
    first = records["wf-1/act/1"]
    assert OPA_FIELDS <= set(first)
    assert first["path"] == "baton/base/tool_call/decision"
    assert first["bundles"] == {"baton": {"revision": allowed.revision}}
    assert first["labels"] == {"app": "baton-test"}
    assert first["requested_by"] == "wf-1"
    assert first["timestamp"].endswith("Z")
    assert first["result"] == {"allow": True, "deny": [], "require_approval": []}
    # masked: the order id is erased, and only what was there is listed as erased
    assert "order_id" not in first["input"]["arguments"]
    assert first["erased"] == ["/input/arguments/order_id"]
    assert records["wf-1/act/2"]["result"]["required_approvals"] == [
        {"role": "support-lead", "count": 1}
    ]
    assert records["wf-1/act/2"]["baton"]["verdict"] == "require_approval"
    # no decision document: no "result" (as OPA logs an undefined decision), Baton's deny noted
    assert "result" not in records["wf-2/1"]
    assert records["wf-2/1"]["baton"]["reasons"] == ["policy returned no decision (undefined)"]
    assert records["wf-3/1"]["requested_by"] == "baton"

    # in the ledger's hash chain, and idempotent per decision id
    trail = ledger.trail(LEDGER_WORKFLOW)
    assert {row.decision_id for row in trail} == set(records)
    again = DecisionLogger(ledger, config)
    again.log(PolicyQuery(policy="baton/base/tool_call", input=TOOL_CALL), allowed, first["result"])
    again.close()
    assert len(ledger.trail(LEDGER_WORKFLOW)) == 4
    assert ledger.verify().ok


async def test_batches_go_to_the_endpoint_gzipped_and_retried(
    db: Database, collector: dict[str, Any]
) -> None:
    engine = EmbeddedOpaEngine(POLICY_DIR)
    config = DecisionLogConfig(
        url=collector["url"], max_batch=3, flush_interval=30, backoff_seconds=0.01
    )
    logger = DecisionLogger(AuditLedger(db), config)
    engine.decision_log = logger  # type: ignore[attr-defined]
    try:
        for i in range(7):
            query = PolicyQuery(policy="baton/base/tool_call", input=TOOL_CALL)
            await decide(engine, query, f"batch-{i}")
    finally:
        logger.close()
        engine.close()
    batches = collector["batches"]
    # two 500s were retried; nothing lost, nothing twice; batches of at most max_batch
    assert collector["posts"] == 2 + len(batches)
    assert all(len(b) <= 3 for b in batches)
    ids = [r["decision_id"] for b in batches for r in b]
    assert sorted(ids) == sorted(f"batch-{i}" for i in range(7))
    assert logger.sent == 7 and logger.failures == 2 and logger.dropped == 0


def test_an_endpoint_that_stays_down_keeps_the_records_for_later(db: Database) -> None:
    calls: list[int] = []

    def down(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        calls.append(len(gzip.decompress(body)))
        return 503

    config = DecisionLogConfig(
        url="http://collector.invalid/logs",
        retries=1,
        backoff_seconds=0,
        buffer_limit=2,
        flush_interval=30,
    )
    logger = DecisionLogger(None, config, post=down)
    engine = EmbeddedOpaEngine(POLICY_DIR)
    engine.decision_log = logger  # type: ignore[attr-defined]
    try:
        for i in range(3):
            decide_sync(
                engine, PolicyQuery(policy="baton/base/tool_call", input=TOOL_CALL), f"d{i}"
            )
        logger.flush()
    finally:
        logger.close()
        engine.close()
    assert len(calls) >= 2  # tried, then retried
    assert logger.dropped == 1  # the buffer keeps the newest two, and counts what it dropped
    assert logger.sent == 0


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValueError, match="under /input or /result"):
        DecisionLogConfig(mask=("/password",))
    with pytest.raises(ValueError, match="BATON_DECISION_LOG_URL must be an http"):
        DecisionLogConfig(url="collector:9000")


def test_baton_policy_log_shows_the_records(db: Database, tmp_path: Path) -> None:
    ledger = AuditLedger(db)
    engine = EmbeddedOpaEngine(POLICY_DIR)
    logger = DecisionLogger(ledger, DecisionLogConfig(mask=("/input/principal",)))
    engine.decision_log = logger  # type: ignore[attr-defined]
    decide_sync(engine, PolicyQuery(policy="baton/base/tool_call", input=refund(9000)), "cli-1")
    decide_sync(engine, PolicyQuery(policy="baton/finance/posting", input=BASE), "cli-2")
    logger.close()
    engine.close()
    env = {**os.environ, "DATABASE_URL": db.url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BATON, "policy", "log", *args], env=env, capture_output=True, text=True, timeout=60
        )

    table = run()
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[-1] == "2 decision(s)"
    assert (
        "deny" in lines[0] and "baton/base/tool_call/decision" in lines[0] and "cli-1" in lines[0]
    )
    assert "exceeds the limit" in lines[0] and "erased /input/principal" in lines[0]
    only = run("--policy", "baton/finance/posting", "--json")
    records = [json.loads(line) for line in only.stdout.splitlines()]
    assert [r["decision_id"] for r in records] == ["cli-2"]
    assert records[0]["result"]["allow"] is True
    bad = run("--day", "yesterday")
    assert bad.returncode == 2 and "--day must be a UTC day" in bad.stderr
