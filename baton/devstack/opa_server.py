"""OPA-REST-compatible local server over OPA's own evaluator (embedded through ``opa_bindings``).

Owns: the subset of OPA's REST API that ``opa-python-client`` and Baton's policy activity use,
so the remote-OPA code path runs end to end without an OPA binary:

- ``GET /health``; ``GET /v1/policies``; ``GET|PUT|DELETE /v1/policies/{id}`` (PUT body: Rego);
- ``GET|PUT|PATCH|DELETE /v1/data/{path}``; ``POST /v1/data/{path}`` with ``{"input": ...}``
  (also ``POST /v1/data``), with OPA's ``provenance``, ``metrics`` and ``pretty`` parameters;
  ``POST /v1/query`` (ad-hoc query, used by ``bulk_query_rule``);
- ``GET /v1/config``, ``GET /v1/status``, ``GET /metrics`` (Prometheus text) and
  ``POST /v1/compile`` (partial evaluation): route handlers in baton/devstack/opa_api.py.

Every request's body is read (or discarded) before any answer, error answers included, so the
next request on a kept-alive connection starts where it should.

Builtin errors: the embedded evaluator always runs with strict builtin errors, so a failing
builtin is a 500 ``internal_error`` here whatever ``strict-builtin-errors`` says (a default OPA
server answers undefined; Baton asks every OPA server for strict, see docs/policy-engine.md).

As in OPA, an undefined document answers 200 with no ``result`` key, and errors are
``{"code": "invalid_parameter" | "resource_not_found" | "internal_error", "message": ...}``.
Every change (policy or data) compiles a fresh engine from the stored modules and data before
it is accepted, so a bad module is refused with a 400 and never breaks the running policies.

At start it loads a policy directory: every ``*.rego`` but ``*_test.rego`` (id = path relative
to the directory) and every ``data/**/*.json`` merged at the root of ``data``.

Run: ``python -m baton.devstack.opa_server --port 8181 --policy-dir policy``.

Guard (:meth:`OpaRequestHandler.refusal`, checked before any route): the ``Host`` header must
name a loopback host (``localhost``, ``127.0.0.1``, ``::1``; more with ``--allow-host``), so a
web page cannot reach it by DNS rebinding; and every write (``PUT``, ``PATCH``, ``DELETE``:
policy replacement, data changes) needs ``Authorization: Bearer <write token>``. The token is
generated at start into ``--write-token-file`` (default ``.baton/opa-write-token``, mode 0600)
or reused from it; ``opa-python-client`` sends it with ``AsyncOpaClient(token=...)``.

Must not: be used in production (use a real OPA there); be imported by workflows.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from opa_bindings import OpaEngine, OpaError

from baton.devstack import opa_api
from baton.devstack.jsonhttp import BackgroundHTTPServer, JsonRequestHandler, server_arguments
from baton.devstack.opa_api import StoreError
from baton.settings import DEFAULT_OPA_PORT, REPO_ROOT

#: Host names the server answers to without --allow-host (DNS-rebinding guard)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Methods that change policies or data: they need the write token
WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE"})

_ERROR_LINE = re.compile(r"(?P<file>[^\s:]+):(?P<row>\d+): (?P<code>rego_\w+): (?P<message>.*)")


def _compile_errors(err: OpaError) -> list[dict[str, Any]]:
    """OPA-style ``errors`` entries from the evaluator's message (one per reported line)."""
    found = [
        {
            "code": m["code"],
            "message": m["message"],
            "location": {"file": m["file"], "row": int(m["row"]), "col": 0},
        }
        for m in _ERROR_LINE.finditer(err.message)
    ]
    return found or [{"code": err.code, "message": err.message}]


def _ref(segments: list[str]) -> str:
    """A Rego reference to ``data`` at ``segments``; brackets allow any key (e.g. "x-y")."""
    return "data" + "".join(f"[{json.dumps(s)}]" for s in segments)


class PolicyStore:
    """Policy modules and the base data document, and the engine compiled from both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # serialises changes; evaluations read ``_engine``
        self._policies: dict[str, str] = {}
        self._asts: dict[str, Any] = {}
        self._data: dict[str, Any] = {}
        self._engine = OpaEngine()
        self._parser = OpaEngine()  # only for rego.parse_module (the AST OPA's API returns)
        #: The revision of what is loaded: the policy directory's (the same digest the embedded
        #: engine reports) until the API changes something, then a digest of the new content.
        self.revision = _content_revision({}, {})
        self.activated_at = time.time()

    # -- loading ------------------------------------------------------------------------------

    def load_bundle(self, bundle: Path) -> None:
        """Load an OPA bundle file (``.tar.gz``, as activities/policy.py reads it): its modules
        (tests left out), its data, and its manifest revision as this store's revision."""
        from activities.policy import PolicyBundle, PolicyError

        try:
            snapshot = PolicyBundle(bundle, reload_interval=0).current()
        except PolicyError as err:
            raise _bad(str(err)) from None
        self._commit(dict(snapshot.modules), copy.deepcopy(dict(snapshot.data)))
        self.revision = snapshot.revision

    def load_dir(self, policy_dir: Path) -> None:
        """Load every ``*.rego`` (not ``*_test.rego``) and ``data/**/*.json`` of ``policy_dir``;
        a ``.tar.gz``/``.tgz`` file is loaded as an OPA bundle (``load_bundle``)."""
        if policy_dir.is_file() and policy_dir.name.endswith((".tar.gz", ".tgz")):
            self.load_bundle(policy_dir)
            return
        if not policy_dir.is_dir():
            raise _bad(f"{policy_dir} is not a directory")
        policies = dict(self._policies)
        data = copy.deepcopy(self._data)
        for path in sorted(policy_dir.rglob("*.rego")):
            if not path.name.endswith("_test.rego"):
                policies[path.relative_to(policy_dir).as_posix()] = path.read_text("utf-8")
        for path in sorted((policy_dir / "data").rglob("*.json")):
            try:
                _merge(data, json.loads(path.read_text("utf-8")), str(path))
            except json.JSONDecodeError as err:
                raise _bad(f"{path}: invalid JSON ({err})") from None
        self._commit(policies, data)
        self.revision = _directory_revision(policy_dir) or self.revision

    # -- policies -----------------------------------------------------------------------------

    def policies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._policy_doc(pid) for pid in self._policies]

    def policy(self, policy_id: str) -> dict[str, Any]:
        with self._lock:
            if policy_id not in self._policies:
                raise _not_found(f"policy id {policy_id!r}")
            return self._policy_doc(policy_id)

    def put_policy(self, policy_id: str, source: str) -> None:
        with self._lock:
            self._commit({**self._policies, policy_id: source}, self._data)

    def delete_policy(self, policy_id: str) -> None:
        with self._lock:
            if policy_id not in self._policies:
                raise _not_found(f"policy id {policy_id!r}")
            rest = {k: v for k, v in self._policies.items() if k != policy_id}
            self._commit(rest, self._data)

    # -- data ---------------------------------------------------------------------------------

    def put_data(self, segments: list[str], value: Any) -> None:
        with self._lock:
            if not segments:
                if not isinstance(value, dict):
                    raise _bad("the root document must be an object")
                self._commit(self._policies, copy.deepcopy(value))
                return
            data = copy.deepcopy(self._data)
            parent = _container(data, segments[:-1], create=True)
            parent[segments[-1]] = value
            self._commit(self._policies, data)

    def delete_data(self, segments: list[str]) -> None:
        with self._lock:
            data = copy.deepcopy(self._data)
            if not segments:
                self._commit(self._policies, {})
                return
            parent = _container(data, segments[:-1], create=False)
            if segments[-1] not in parent:
                raise _not_found(f"document {'/'.join(segments)!r}")
            del parent[segments[-1]]
            self._commit(self._policies, data)

    def patch_data(self, segments: list[str], patches: Any) -> None:
        """JSON Patch ``add``/``replace``/``remove`` relative to ``segments`` (objects only)."""
        if not isinstance(patches, list):
            raise _bad("a JSON Patch document must be a list")
        with self._lock:
            data = copy.deepcopy(self._data)
            for patch in patches:
                op = patch.get("op") if isinstance(patch, dict) else None
                if op not in ("add", "replace", "remove"):
                    raise _bad(f"unsupported patch {patch!r}")
                pointer = [p for p in str(patch.get("path", "")).split("/") if p]
                path = segments + [p.replace("~1", "/").replace("~0", "~") for p in pointer]
                if not path:
                    if op == "remove" or not isinstance(patch.get("value"), dict):
                        raise _bad("a patch of the root must add or replace an object")
                    data = copy.deepcopy(patch["value"])
                    continue
                parent = _container(data, path[:-1], create=op == "add")
                if op != "add" and path[-1] not in parent:
                    raise _not_found(f"document {'/'.join(path)!r}")
                if op == "remove":
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = patch.get("value")
            self._commit(self._policies, data)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, segments: list[str], input_doc: Any = None) -> tuple[bool, Any]:
        """(defined, value) of ``data.<segments>``; OPA's engine decides everything."""
        rows = self.query(f"result := {_ref(segments)}", input_doc)
        return (True, rows[0]["result"]) if rows else (False, None)

    def compile_filters(
        self, query: str, input_doc: Any, unknowns: list[str], *, target: str, dialect: str
    ) -> Any:
        """Partial evaluation of ``query`` by OPA (the Compile API's engine), as a filter."""
        engine = self._engine
        try:
            return engine.compile_filters(
                query, input_doc, unknowns=unknowns, target=target, dialect=dialect
            )
        except OpaError as err:
            if err.code in ("parse_error", "prepare_error", "compile_error", "invalid_argument"):
                raise StoreError(
                    400, "invalid_parameter", err.message, _compile_errors(err)
                ) from None
            raise StoreError(500, "internal_error", err.message) from None

    def query(self, query: str, input_doc: Any = None) -> list[dict[str, Any]]:
        engine = self._engine  # an engine is never changed once published
        try:
            return engine.eval_query(query, input_doc)
        except OpaError as err:
            if err.code in ("parse_error", "prepare_error", "compile_error"):
                raise StoreError(
                    400, "invalid_parameter", err.message, _compile_errors(err)
                ) from None
            raise StoreError(500, "internal_error", err.message) from None

    # -- internals ----------------------------------------------------------------------------

    def _commit(self, policies: dict[str, str], data: dict[str, Any]) -> None:
        """Compile ``policies`` + ``data`` into a new engine; publish it only if that works."""
        engine = OpaEngine()
        try:
            for policy_id, source in policies.items():
                engine.add_policy(policy_id, source)
            if data:
                engine.add_data(data)
            # Modules are compiled lazily at the first evaluation: force it now, so an unsafe
            # variable or a conflict is this request's 400 and not every later query's 500.
            engine.eval_query("true", None)
        except OpaError as err:
            engine.close()
            raise StoreError(
                400,
                "invalid_parameter",
                "error(s) occurred while compiling module(s)",
                _compile_errors(err),
            ) from None
        asts = {
            pid: self._asts[pid] if self._policies.get(pid) == src else self._parse(pid, src)
            for pid, src in policies.items()
        }
        self._policies, self._data, self._asts = dict(policies), data, asts
        self.revision = _content_revision(self._policies, self._data)
        self.activated_at = time.time()
        # The old engine is not closed here: a request may still be evaluating on it; it is
        # released when the last reference goes.
        self._engine = engine

    def _parse(self, policy_id: str, source: str) -> Any:
        try:
            rows = self._parser.eval_query(
                "ast := rego.parse_module(input.id, input.source)",
                {"id": policy_id, "source": source},
            )
        except OpaError:
            return {}
        return rows[0]["ast"] if rows else {}

    def _policy_doc(self, policy_id: str) -> dict[str, Any]:
        return {
            "id": policy_id,
            "raw": self._policies[policy_id],
            "ast": self._asts.get(policy_id) or {},
        }


def _content_revision(policies: dict[str, str], data: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([sorted(policies.items()), data], sort_keys=True).encode())
    return "api-" + digest.hexdigest()[:12]


def _directory_revision(policy_dir: Path) -> str | None:
    """The revision the embedded engine reports for the same directory (None if it has none)."""
    from activities.policy import PolicyBundle, PolicyError

    try:
        return PolicyBundle(policy_dir, reload_interval=0).current().revision
    except PolicyError:
        return None


def _bad(message: str) -> StoreError:
    return StoreError(400, "invalid_parameter", message)


def _not_found(what: str) -> StoreError:
    return StoreError(404, "resource_not_found", f"storage_not_found_error: {what} not found")


def _container(data: dict[str, Any], segments: list[str], *, create: bool) -> dict[str, Any]:
    node: Any = data
    for i, key in enumerate(segments):
        if create and key not in node:
            node[key] = {}
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            where = "/".join(segments[: i + 1])
            if node is None:
                raise _not_found(f"document {where!r}")
            raise _bad(f"document {where!r} is not an object")
    return node


def _merge(into: dict[str, Any], value: Any, source: str) -> None:
    if not isinstance(value, dict):
        raise _bad(f"{source}: a data file must hold an object")
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item, source)
        elif key in into:
            raise _bad(f"{source}: {key!r} is defined twice")
        else:
            into[key] = copy.deepcopy(item)


def _flag(params: dict[str, list[str]], name: str) -> bool:
    """An OPA boolean query parameter: present without a value, or "true"."""
    values = params.get(name)
    return values is not None and values[-1].lower() in ("", "true", "1")


class OpaRequestHandler(JsonRequestHandler):
    """The REST front of a PolicyStore, in OPA's URL layout and response shapes."""

    @property
    def store(self) -> PolicyStore:
        return self.owner.store

    def refusal(self, method: str) -> tuple[int, str] | None:
        """Why this request is refused before routing (status, message), or None: a Host that
        is not a loopback name, or a write without the write token."""
        host = _host_name(self.headers.get("Host", ""))
        if host not in LOOPBACK_HOSTS | self.owner.allowed_hosts:
            return 403, (
                f"Host {host or '(none)'!r} is not allowed: this local server answers to "
                "localhost, 127.0.0.1 and ::1 only (start it with --allow-host to add a name)"
            )
        if method in WRITE_METHODS:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not given or not hmac.compare_digest(given, self.owner.write_token):
                return 401, (
                    f"{method} changes policies or data and needs 'Authorization: Bearer "
                    "<write token>' (the token is in the server's --write-token-file)"
                )
        return None

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        self._status = 0
        # Read the whole body before any answer (errors included): left unread, it would be
        # taken for the next request on this kept-alive connection.
        # (The handler object lives as long as the connection: never reuse the last body.)
        self._body: bytes | None = None
        self._body = super().read_body()
        refused = self.refusal(method)
        if refused is not None:
            self.send_json(refused[0], {"code": "unauthorized", "message": refused[1]})
            return
        try:
            self._route(method)
        except StoreError as err:
            self.send_json(err.status, err.document)
        except json.JSONDecodeError as err:
            self.send_json(
                400, {"code": "invalid_parameter", "message": f"body is not valid JSON: {err}"}
            )
        finally:
            self.owner.metrics.observe(
                opa_api.handler_label(self.route),
                method,
                self._status,
                time.perf_counter() - started,
            )

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def read_body(self) -> bytes:
        body = getattr(self, "_body", None)
        return body if body is not None else super().read_body()

    def json_body_or_none(self) -> Any:
        return self._json_body()

    def _route(self, method: str) -> None:
        route = self.route.rstrip("/") if self.route != "/" else self.route
        if route == "/health" and method == "GET":
            self.send_json(200, {})
        elif route == "/v1/policies" and method == "GET":
            self.send_json(200, {"result": self.store.policies()})
        elif route.startswith("/v1/policies/"):
            self._policy(method, unquote(route.removeprefix("/v1/policies/")))
        elif route == "/v1/data" or route.startswith("/v1/data/"):
            segments = [unquote(s) for s in route.removeprefix("/v1/data").split("/") if s]
            self._data(method, segments)
        elif route == "/v1/query" and method == "POST":
            body = self._json_body() or {}
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise _bad("the body needs a 'query' string")
            rows = self.store.query(body["query"], body.get("input"))
            self.send_json(200, {"result": rows} if rows else {})
        elif (handler := opa_api.EXTRA_ROUTES.get((method, route))) is not None:
            handler(self)
        else:
            raise StoreError(404, "resource_not_found", f"no route {method} {self.route}")

    def _policy(self, method: str, policy_id: str) -> None:
        self.log_note = f"policy={policy_id}"
        if method == "GET":
            self.send_json(200, {"result": self.store.policy(policy_id)})
        elif method == "PUT":
            self.store.put_policy(policy_id, self.read_body().decode("utf-8"))
            self.send_json(200, {})
        elif method == "DELETE":
            self.store.delete_policy(policy_id)
            self.send_json(200, {})
        else:
            raise StoreError(405, "invalid_parameter", f"{method} is not allowed on policies")

    def _data(self, method: str, segments: list[str]) -> None:
        self.log_note = f"data={'/'.join(segments) or '<root>'}"
        if method in ("GET", "POST"):
            body = self._json_body() if method == "POST" else None
            if body is not None and not isinstance(body, dict):
                raise _bad("the body must be {'input': ...}")
            started = time.perf_counter_ns()
            defined, value = self.store.evaluate(segments, (body or {}).get("input"))
            elapsed = time.perf_counter_ns() - started
            self.owner.decisions += 1
            # Undefined is 200 without "result", exactly as OPA answers it.
            answer: dict[str, Any] = {"result": value} if defined else {}
            params = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
            if _flag(params, "provenance"):
                answer["provenance"] = {
                    "version": opa_api.OPA_VERSION,
                    "bundles": {"baton": {"revision": self.store.revision}},
                }
            if _flag(params, "metrics"):
                answer["metrics"] = {"timer_rego_query_eval_ns": elapsed}
            if _flag(params, "pretty"):
                self.send_bytes(200, json.dumps(answer, indent=2).encode())
            else:
                self.send_json(200, answer)
        elif method == "PUT":
            self.store.put_data(segments, self._json_body())
            self.send_empty(204)
        elif method == "PATCH":
            self.store.patch_data(segments, self._json_body())
            self.send_empty(204)
        elif method == "DELETE":
            self.store.delete_data(segments)
            self.send_empty(204)
        else:
            raise StoreError(405, "invalid_parameter", f"{method} is not allowed on data")

    def _json_body(self) -> Any:
        raw = self.read_body()
        return json.loads(raw) if raw.strip() else None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class OpaCompatibleServer(BackgroundHTTPServer):
    """OPA's REST API (the subset above) on a background thread, over a ``PolicyStore``."""

    handler_class: type[JsonRequestHandler] = OpaRequestHandler

    def __init__(
        self,
        policy_dir: Path | str | None = None,
        *,
        log_requests: bool = False,
        write_token: str | None = None,
        allowed_hosts: frozenset[str] = frozenset(),
    ):
        """``write_token``: what writes must present (a fresh random one when None: read it
        from ``.write_token``); ``allowed_hosts``: Host names accepted besides loopback."""
        super().__init__(log_requests=log_requests)
        self.write_token = write_token or secrets.token_urlsafe(32)
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.store = PolicyStore()
        self.source = policy_dir
        self.metrics = opa_api.RequestMetrics()
        self.decisions = 0
        if policy_dir is not None:
            self.store.load_dir(Path(policy_dir))

    def decision_log_config(self) -> dict[str, Any]:
        """What /v1/config reports under decision_logs (this server keeps none)."""
        return {}

    @property
    def url(self) -> str:
        """What OPA_URL should be set to."""
        return self.base_url


def _host_name(header: str) -> str:
    """The host of a Host header, lower-cased, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def write_token_from(path: Path) -> str:
    """The write token kept in ``path`` (mode 0600), made when the file does not exist."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(
        "python -m baton.devstack.opa_server",
        "OPA-REST-compatible server over OPA's embedded evaluator (for local use).",
        DEFAULT_OPA_PORT,
    )
    parser.add_argument(
        "--policy-dir", type=Path, default=None, help="a policy directory or an OPA bundle .tar.gz"
    )
    parser.add_argument(
        "--write-token-file",
        type=Path,
        default=REPO_ROOT / ".baton" / "opa-write-token",
        help="the bearer token writes need (made, mode 0600, when missing)",
    )
    parser.add_argument(
        "--allow-host", action="append", default=[], help="a Host name to accept besides loopback"
    )
    args = parser.parse_args(argv)
    try:
        server = OpaCompatibleServer(
            args.policy_dir,
            log_requests=True,
            write_token=write_token_from(args.write_token_file),
            allowed_hosts=frozenset(args.allow_host),
        )
    except StoreError as err:
        parser.exit(1, f"cannot load {args.policy_dir}: {json.dumps(err.document)}\n")
    loaded = len(server.store.policies())
    banner = (
        f"OPA-compatible server at {{url}} ({loaded} modules from {args.policy_dir}; writes "
        f"need the bearer token in {args.write_token_file})"
    )
    server.serve_until_signalled(args.host, args.port, banner)


if __name__ == "__main__":
    main()
