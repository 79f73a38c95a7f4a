"""OpenTelemetry spans for what Temporal's own tracing cannot see inside an activity: the model
call of an agent (GenAI semantic conventions) and each policy decision.

Spans go to the global tracer provider, which the worker configures from the environment
(baton/telemetry.py; none configured = OpenTelemetry's no-op tracer, so this costs next to
nothing). Temporal's ``TracingInterceptor`` (temporalio.contrib.opentelemetry) makes the
activity's ``RunActivity`` span current, so these spans are its children, in the trace that
started with the client's ``StartWorkflow``.

Prompts and answers are never put on spans: the audit ledger is the record (by digest).

Must not: be imported by workflows (the workflows' approval spans are in workflows/telemetry.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from workflows.contracts import PolicyDecision, PolicyQuery, TokenUsage

TRACER = "baton"


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


@contextmanager
def agent_call_span(agent: str, model: str, endpoint: str, **extra: Any) -> Iterator[Span]:
    """A CLIENT span ``chat <model>`` around one model call; an exception marks it failed."""
    server = urlsplit(endpoint)
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",  # the API spoken (any OpenAI-compatible endpoint)
        "gen_ai.system": "openai",  # the older name of the same attribute
        "gen_ai.request.model": model,
        "gen_ai.agent.name": agent,
        "server.address": server.hostname or "",
        "server.port": server.port or (443 if server.scheme == "https" else 80),
        **{f"baton.{k}": v for k, v in extra.items() if v is not None},
    }
    with _tracer().start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=True
    ) as span:
        try:
            yield span
        except BaseException as err:
            span.set_attribute("error.type", getattr(err, "type", None) or type(err).__name__)
            raise


def record_usage(span: Span, usage: TokenUsage) -> None:
    span.set_attributes(
        {
            "gen_ai.response.model": usage.model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "baton.cost_usd": usage.cost_usd,
        }
    )


@contextmanager
def policy_span(query: PolicyQuery, decision_id: str) -> Iterator[Span]:
    """An INTERNAL span ``policy <package>`` around one decision."""
    with _tracer().start_as_current_span(
        f"policy {query.policy}",
        attributes={
            "baton.policy.name": query.policy,
            "baton.policy.subject": query.subject,
            "baton.policy.decision_id": decision_id,
        },
    ) as span:
        yield span


def record_decision(span: Span, decision: PolicyDecision) -> None:
    span.set_attributes(
        {
            "baton.policy.verdict": decision.verdict,
            "baton.policy.revision": decision.revision,
            "baton.policy.engine": decision.engine,
            "baton.policy.reasons": len(decision.reasons),
        }
    )
    if decision.verdict == "deny":
        # a deny is the policy working, not an error: say so on the span, keep status unset
        span.add_event("policy.deny", {"reasons": list(decision.reasons)[:10]})


__all__ = [
    "TRACER",
    "agent_call_span",
    "policy_span",
    "record_decision",
    "record_usage",
]
