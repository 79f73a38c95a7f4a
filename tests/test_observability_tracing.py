"""OpenTelemetry tracing of a real finance close: Temporal's TracingInterceptor spans, Baton's
agent-call spans (GenAI semantic conventions), policy-decision spans and approval spans, all
in one trace, captured by an in-memory exporter; and the OTLP exporter chosen by configuration
really POSTs spans to a collector endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from temporalio.client import Client

from activities import audit_facts
from baton.settings import Settings
from baton.telemetry import tracer_provider, traces_endpoint, tracing_interceptor
from tests.conftest import _harness
from tests.support.tracing import memory_exporter
from workflows.plugin import BatonPlugin


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_close_is_one_trace_with_agent_policy_and_approval_spans(
    temporal_client: Client, model_server: Any, database_url: str
) -> None:
    exporter = memory_exporter()
    exporter.clear()
    client = await Client.connect(
        temporal_client.service_client.config.target_host,
        namespace=temporal_client.namespace,
        plugins=[BatonPlugin()],
        interceptors=[tracing_interceptor()],
    )
    async with _harness(client, model_server, database_url) as h:
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            await h.approve_close(handle.id)
            await handle.result()
        trail = h.runtime.ledger.trail(handle.id)

    spans = exporter.get_finished_spans()
    [start] = [
        s
        for s in spans
        if s.name == "StartWorkflow:FinanceClose"
        and attrs(s).get("temporalWorkflowID") == handle.id
    ]
    trace_id = start.context.trace_id
    mine = [s for s in spans if s.context.trace_id == trace_id]
    names = {s.name for s in mine}
    assert {"RunWorkflow:FinanceClose", "StartActivity:propose_adjustments"} <= names
    by_id = {s.context.span_id: s for s in mine}

    # agent calls: GenAI attributes, children of their activity's RunActivity span
    chats = [s for s in mine if attrs(s).get("gen_ai.operation.name") == "chat"]
    agents = {attrs(s)["gen_ai.agent.name"] for s in chats}
    assert {"reconciler", "compliance_checker", "close_memo_writer"} <= agents
    for chat in chats:
        a = attrs(chat)
        # the catalogue (config/models.json) routes them: the cheap model answers
        assert chat.name == "chat baton-rules-small" and a["baton.tier"] == "cheap"
        assert a["gen_ai.request.model"] == "baton-rules-small"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["baton.cost_usd"] > 0
        assert chat.parent is not None
        assert by_id[chat.parent.span_id].name.startswith("RunActivity:")
    ledger_tokens = sum(
        u.tokens
        for r in trail
        if (u := audit_facts.agent_usage(r.actor, r.action, r.model, r.tokens, r.cost_usd))
    )
    assert ledger_tokens == sum(
        attrs(s)["gen_ai.usage.input_tokens"] + attrs(s)["gen_ai.usage.output_tokens"]
        for s in chats
    )

    # policy decisions: one span each, with the verdict the ledger recorded
    policies = [s for s in mine if s.name.startswith("policy ")]
    verdicts = sorted(
        (attrs(s)["baton.policy.name"], attrs(s)["baton.policy.verdict"]) for s in policies
    )
    audited = sorted(
        (v.policy, v.verdict) for r in trail if (v := audit_facts.policy_verdict(r.actor, r.action))
    )
    assert verdicts == audited
    assert ("baton/finance/posting", "require_approval") in verdicts

    # approvals: requested and closed in the run's trace, with the outcome and the wait
    [requested] = [s for s in mine if s.name == "baton.approval.requested"]
    [closed] = [s for s in mine if s.name == "baton.approval.closed"]
    assert attrs(requested)["baton.process"] == "finance_close"
    assert attrs(closed)["baton.approval.outcome"] == "approved"
    assert attrs(closed)["baton.approval.wait_seconds"] > 0
    assert attrs(closed)["baton.request_id"] == attrs(requested)["baton.request_id"]


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_otlp_exporter_is_chosen_by_the_environment(collector: str) -> None:
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": collector})
    assert traces_endpoint(settings) == f"{collector}/v1/traces"
    assert traces_endpoint(Settings()) is None  # nothing configured: no tracing
    provider = tracer_provider(replace(settings, otel_service_name="baton-test"))
    with provider.get_tracer("t").start_as_current_span("baton-otlp-probe"):
        pass
    provider.shutdown()  # flushes the batch
    [(path, content_type, body)] = _Collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"baton-otlp-probe" in body and b"baton-test" in body


def test_bad_otlp_endpoint_names_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT must be an http"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
