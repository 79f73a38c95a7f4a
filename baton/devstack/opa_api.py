"""The parts of OPA's REST API beyond policies, data and queries, for the local OPA server.

Owns the answers of ``GET /v1/config``, ``GET /v1/status``, ``GET /metrics`` (Prometheus text
format) and ``POST /v1/compile`` (partial evaluation), plus the request metrics they report, as
route handlers that baton/devstack/opa_server.py looks up in ``EXTRA_ROUTES``: one function per
route, so that server changes elsewhere (authentication, host checks) merge without touching
these.

Compile API: the query is partially evaluated by OPA's own evaluator through the binding's
``compile_filters`` (the engine OPA's data-filtering Compile API uses). The ``Accept`` header
picks the answer, as on OPA: ``application/vnd.opa.ucast.<dialect>+json`` and
``application/vnd.opa.sql.<dialect>+json`` give the filter (``{"result": {"query", "masks"}}``);
plain ``application/json`` gives OPA's classic ``{"result": {"queries": [[expr, ...], ...]}}``,
the same conditions as Rego expressions (AST JSON) in disjunctive normal form. Like that engine,
unknowns are limited to ``input.<table>.<column>``; anything else is a 400 naming the limit.

Must not: be used in production (use a real OPA there); evaluate policies by any other engine.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

#: The server's request handler (baton/devstack/opa_server.py ``OpaRequestHandler``): not
#: imported, because the server imports this module.
OpaRequestHandler = Any


class StoreError(Exception):
    """A request the store refuses; carries the HTTP status and OPA's error document."""

    def __init__(self, status: int, code: str, message: str, errors: list[Any] | None = None):
        super().__init__(message)
        self.status = status
        self.document: dict[str, Any] = {"code": code, "message": message}
        if errors:
            self.document["errors"] = errors


#: The OPA release the embedded evaluator is (opa-golib-python-bindings 0.4: OPA v1.20.2).
OPA_VERSION = "1.20.2"

#: Upper bounds (seconds) of the request-duration histogram, as OPA's default buckets start.
_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)

_UCAST = "application/vnd.opa.ucast."
_SQL = "application/vnd.opa.sql."

# UCAST operators -> the Rego builtin OPA's partial evaluation writes for them.
_OPERATORS = {
    "eq": "eq",
    "ne": "neq",
    "lt": "lt",
    "lte": "lte",
    "gt": "gt",
    "gte": "gte",
    "in": "internal.member_2",
    "startswith": "startswith",
    "endswith": "endswith",
    "contains": "contains",
}


class RequestMetrics:
    """Counts and durations per (handler, method, code): OPA's http_request_duration_seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], list[float]] = defaultdict(
            lambda: [0.0] * (len(_BUCKETS) + 2)  # bucket counts..., count, sum
        )
        self.instance_id = str(uuid.uuid4())
        self.started = time.time()

    def observe(self, handler: str, method: str, code: int, seconds: float) -> None:
        with self._lock:
            series = self._series[(handler, method.lower(), str(code))]
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += seconds

    def prometheus(self, extra: list[str]) -> str:
        lines = [
            "# HELP http_request_duration_seconds A histogram of duration for requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        with self._lock:
            items = sorted(self._series.items())
            for (handler, method, code), series in items:
                labels = f'code="{code}",handler="{handler}",method="{method}"'
                for i, bound in enumerate(_BUCKETS):
                    lines.append(
                        f'http_request_duration_seconds_bucket{{{labels},le="{bound:g}"}} '
                        f"{int(series[i])}"
                    )
                lines.append(
                    f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(series[-2])}'
                )
                lines.append(f"http_request_duration_seconds_sum{{{labels}}} {series[-1]:.9f}")
                lines.append(f"http_request_duration_seconds_count{{{labels}}} {int(series[-2])}")
        lines += extra
        return "\n".join(lines) + "\n"


def handler_label(route: str) -> str:
    """OPA's handler label: the API family, not the full path (bounded cardinality)."""
    parts = [p for p in route.split("/") if p]
    if not parts:
        return "root"
    if parts[0] == "v1" and len(parts) > 1:
        return f"v1/{parts[1]}"
    return parts[0]


# ---------------------------------------------------------------------------------------------
# Route handlers: each takes the request handler (body already read) and answers it.
# ---------------------------------------------------------------------------------------------


def get_config(req: OpaRequestHandler) -> None:
    owner = req.owner
    req.send_json(
        200,
        {
            "result": {
                "labels": {"id": owner.metrics.instance_id, "version": OPA_VERSION},
                "default_decision": "/system/main",
                "default_authorization_decision": "/system/authz/allow",
                "bundles": {"baton": {"resource": str(owner.source or "(none)")}},
                "decision_logs": owner.decision_log_config(),
            }
        },
    )


def get_status(req: OpaRequestHandler) -> None:
    owner = req.owner
    store = owner.store
    req.send_json(
        200,
        {
            "result": {
                "labels": {"id": owner.metrics.instance_id, "version": OPA_VERSION},
                "bundles": {
                    "baton": {
                        "name": "baton",
                        "active_revision": store.revision,
                        "last_successful_activation": _rfc3339(store.activated_at),
                    }
                },
                "plugins": {
                    "bundle": {"state": "OK"},
                    "decision_logs": {"state": "OK"},
                    "status": {"state": "OK"},
                },
            }
        },
    )


def get_metrics(req: OpaRequestHandler) -> None:
    owner = req.owner
    extra = [
        "# HELP baton_opa_policy_revision_info The revision of the loaded policies.",
        "# TYPE baton_opa_policy_revision_info gauge",
        f'baton_opa_policy_revision_info{{revision="{owner.store.revision}"}} 1',
        "# HELP baton_opa_decisions_total Decisions answered by the Data API.",
        "# TYPE baton_opa_decisions_total counter",
        f"baton_opa_decisions_total {owner.decisions}",
    ]
    req.send_bytes(
        200,
        owner.metrics.prometheus(extra).encode(),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )


def post_compile(req: OpaRequestHandler) -> None:
    body = req.json_body_or_none()
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise StoreError(400, "invalid_parameter", "the body needs a 'query' string")
    unknowns = body.get("unknowns", ["input"])
    if not isinstance(unknowns, list) or not all(isinstance(u, str) for u in unknowns):
        raise StoreError(400, "invalid_parameter", "'unknowns' must be a list of references")
    accept = req.headers.get("Accept", "application/json")
    if accept.startswith(_UCAST) or accept.startswith(_SQL):
        target = "ucast" if accept.startswith(_UCAST) else "sql"
        dialect = accept.split(".", 4)[-1].split("+", 1)[0]
        if dialect == "json":  # no dialect given: application/vnd.opa.ucast+json
            dialect = "all"
        result = req.store.compile_filters(
            body["query"], body.get("input"), unknowns, target=target, dialect=dialect
        )
        req.send_json(200, {"result": result}, headers={"Content-Type": accept})
        return
    result = req.store.compile_filters(
        body["query"], body.get("input"), unknowns, target="ucast", dialect="all"
    )
    query = result.get("query") if isinstance(result, dict) else None
    if query is None:  # never true: OPA answers a result without queries
        req.send_json(200, {"result": {}})
        return
    if query == {} or query == []:  # always true: one empty query
        req.send_json(200, {"result": {"queries": [[]]}})
        return
    try:
        queries = [
            [dict(expression, index=i) for i, expression in enumerate(conjunction)]
            for conjunction in _dnf(query)
        ]
    except ValueError as exc:
        raise StoreError(400, "invalid_parameter", str(exc)) from None
    req.send_json(200, {"result": {"queries": queries}})


#: (method, route) -> handler; opa_server.OpaRequestHandler consults it before answering 404.
EXTRA_ROUTES: dict[tuple[str, str], Callable[[OpaRequestHandler], None]] = {
    ("GET", "/v1/config"): get_config,
    ("GET", "/v1/status"): get_status,
    ("GET", "/metrics"): get_metrics,
    ("POST", "/v1/compile"): post_compile,
}


# ---------------------------------------------------------------------------------------------
# UCAST -> Rego expressions
# ---------------------------------------------------------------------------------------------


def _dnf(node: Any) -> list[list[dict[str, Any]]]:
    """A UCAST condition as OR-of-ANDs of Rego expressions (AST JSON)."""
    if not isinstance(node, dict):
        raise ValueError(f"cannot express the partial result {node!r} as Rego")
    kind = node.get("type")
    if kind == "field":
        return [[_expression(node)]]
    if kind == "compound" and node.get("operator") == "or":
        return [conj for child in node.get("value", []) for conj in _dnf(child)]
    if kind == "compound" and node.get("operator") == "and":
        result: list[list[dict[str, Any]]] = [[]]
        for child in node.get("value", []):
            result = [left + right for left in result for right in _dnf(child)]
        return result
    raise ValueError(f"cannot express the partial result {json.dumps(node)} as Rego queries")


def _expression(node: dict[str, Any]) -> dict[str, Any]:
    operator = _OPERATORS.get(str(node.get("operator")))
    if operator is None:
        raise ValueError(f"unsupported operator {node.get('operator')!r} in the partial result")
    field = [p for p in str(node.get("field", "")).split(".") if p]
    ref = [{"type": "var", "value": "input"}] + [{"type": "string", "value": p} for p in field]
    op_ref = [{"type": "var", "value": operator.split(".")[0]}] + [
        {"type": "string", "value": p} for p in operator.split(".")[1:]
    ]
    terms = [{"type": "ref", "value": op_ref}, {"type": "ref", "value": ref}]
    terms.append(_term(node.get("value")))
    return {"terms": terms}


def _term(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, int | float):
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, list):
        return {"type": "array", "value": [_term(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "object", "value": [[_term(k), _term(v)] for k, v in value.items()]}
    raise ValueError(f"cannot express {value!r} as a Rego term")


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
