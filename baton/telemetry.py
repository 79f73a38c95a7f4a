"""Telemetry wiring for the worker: the Temporal runtime that exports metrics, and tracing.

``BATON_METRICS_BIND=host:port`` gives the worker a Temporal ``Runtime`` with a Prometheus
endpoint at ``http://host:port/metrics``: the SDK's own ``temporal_*`` metrics (task latencies,
poll results, activity and workflow outcomes) and Baton's ``baton_*`` metrics
(workflows/telemetry.py, activities/metrics.py) on the same page.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on:
an OpenTelemetry tracer provider exporting over OTLP/HTTP (protobuf) to that collector, service
name ``OTEL_SERVICE_NAME`` (default ``baton-worker``), and Temporal's ``TracingInterceptor``
(temporalio.contrib.opentelemetry) on the worker's client: ``StartWorkflow``/``RunWorkflow``/
``StartActivity``/``RunActivity`` spans in one trace per run, Baton's agent-call spans (GenAI
semantic conventions) and policy-decision spans (activities/tracing.py) under the activities,
approval spans (workflows/telemetry.py) in the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from baton.bind import check_bind_address

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from baton.settings import Settings


def prometheus_runtime(bind: str) -> Runtime:
    """A Temporal runtime serving Prometheus metrics on ``bind`` (host:port).

    Durations are in seconds and counters end in ``_total``, as Prometheus users expect."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=check_bind_address("BATON_METRICS_BIND", bind),
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: the traces endpoint as given, or ``<endpoint>/v1/traces``; None = off."""
    if settings.otlp_traces_endpoint:
        return settings.otlp_traces_endpoint
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def tracer_provider(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A tracer provider batching spans to ``exporter`` (default: OTLP/HTTP to the configured
    endpoint). The caller installs it (``opentelemetry.trace.set_tracer_provider``) and shuts
    it down (which flushes)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = traces_endpoint(settings)
        if endpoint is None:
            raise ValueError(
                "tracing needs OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            )
        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracing_interceptor() -> TracingInterceptor:
    """Temporal's tracing interceptor, on the global tracer provider. Workflow spans are made
    even for runs whose starter did not trace (service teams' clients), so every run has one."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor(always_create_workflow_spans=True)
