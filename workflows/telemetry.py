"""Baton's metric names, and what workflow code records: metrics and trace spans.

Workflow-side metrics go through ``workflow.metric_meter()``: Temporal drops them while a
workflow replays, so a run counts each approval or compensation once however often it is
replayed. The meter carries ``namespace``, ``task_queue`` and ``workflow_type`` already.
Activity-side metrics (agent calls, tokens, cost, policy decisions) and the gauges read from
state are in activities/metrics.py, under the names below.

Everything lands on the worker's Temporal runtime: with ``BATON_METRICS_BIND`` set, the
Prometheus endpoint ``http://<bind>/metrics`` next to the SDK's own ``temporal_*`` metrics.

Spans: when the worker traces (Temporal's ``TracingInterceptor``, baton/telemetry.py), each
approval step is also a span in the run's trace (``baton.approval.requested`` / ``.escalated`` /
``.closed``), made by the contrib's replay-safe ``completed_span`` (zero-length: workflow code
has no wall clock; the wait is an attribute). Without tracing nothing is made.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.opentelemetry import TracingWorkflowInboundInterceptor
    from temporalio.contrib.opentelemetry import workflow as otel_workflow

AGENT_CALLS = "baton_agent_calls"
AGENT_TOKENS = "baton_agent_tokens"
AGENT_COST_USD = "baton_agent_cost_usd"
POLICY_DECISIONS = "baton_policy_decisions"
POLICY_DENIES = "baton_policy_denies"
APPROVALS_REQUESTED = "baton_approvals_requested"
APPROVALS_CLOSED = "baton_approvals_closed"
APPROVAL_WAIT_SECONDS = "baton_approval_wait_seconds"
APPROVAL_ESCALATIONS = "baton_approval_escalations"
COMPENSATIONS = "baton_compensations"
APPROVALS_PENDING = "baton_approvals_pending"
APPROVAL_OLDEST_PENDING_SECONDS = "baton_approval_oldest_pending_seconds"
KILL_SWITCH_ENGAGED = "baton_kill_switch_engaged"


def _span(name: str, attributes: dict[str, str | int | float]) -> None:
    # the interceptor is found through the SDK's context lookup (private in temporalio 1.35,
    # which pyproject pins); calling completed_span without it only warns and makes nothing
    if TracingWorkflowInboundInterceptor._from_context() is not None:
        otel_workflow.completed_span(name, attributes=attributes)


def approval_requested(process: str, request_id: str = "") -> None:
    workflow.metric_meter().create_counter(APPROVALS_REQUESTED, "approval requests opened").add(
        1, {"process": process}
    )
    _span("baton.approval.requested", {"baton.process": process, "baton.request_id": request_id})


def approval_closed(process: str, outcome: str, waited: timedelta, request_id: str = "") -> None:
    _span(
        "baton.approval.closed",
        {
            "baton.process": process,
            "baton.request_id": request_id,
            "baton.approval.outcome": outcome,
            "baton.approval.wait_seconds": max(waited.total_seconds(), 0.0),
        },
    )
    attributes = {"process": process, "outcome": outcome}
    meter = workflow.metric_meter()
    meter.create_counter(APPROVALS_CLOSED, "approval requests closed, by outcome").add(
        1, attributes
    )
    meter.create_histogram_float(
        APPROVAL_WAIT_SECONDS, "time from an approval request to its outcome", "s"
    ).record(max(waited.total_seconds(), 0.0), attributes)


def approval_escalated(process: str, level: int, request_id: str = "") -> None:
    _span(
        "baton.approval.escalated",
        {"baton.process": process, "baton.request_id": request_id, "baton.approval.level": level},
    )
    workflow.metric_meter().create_counter(
        APPROVAL_ESCALATIONS, "approval requests escalated to the next tier (SLA passed)"
    ).add(1, {"process": process, "level": str(level)})


def compensation_ran(ok: bool) -> None:
    workflow.metric_meter().create_counter(
        COMPENSATIONS, "compensations (saga steps) run, by result"
    ).add(1, {"result": "ok" if ok else "failed"})


__all__ = [
    "AGENT_CALLS",
    "AGENT_COST_USD",
    "AGENT_TOKENS",
    "APPROVALS_CLOSED",
    "APPROVALS_PENDING",
    "APPROVALS_REQUESTED",
    "APPROVAL_ESCALATIONS",
    "APPROVAL_OLDEST_PENDING_SECONDS",
    "APPROVAL_WAIT_SECONDS",
    "COMPENSATIONS",
    "KILL_SWITCH_ENGAGED",
    "POLICY_DECISIONS",
    "POLICY_DENIES",
    "approval_closed",
    "approval_escalated",
    "approval_requested",
    "compensation_ran",
]
