"""The OPA-REST-compatible server, driven by the real ``opa-python-client`` and by raw HTTP.

Policies here are tiny modules of this file's own, so the server is tested independently of
Baton's policy/ directory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opa_client.errors import DeletePolicyError, PolicyNotFoundError, RegoParseError
from opa_client.opa_async import AsyncOpaClient

from baton.devstack.opa_server import OpaCompatibleServer, PolicyStore, StoreError
from tests.support.serving import serving

EXAMPLE = """package example

default allow := false

allow if input.user in data.users

# no default: undefined unless the input names a user
greeting := sprintf("hello %s", [input.user]) if input.user
"""

# Would not even compile if it were loaded: proves *_test.rego files are skipped.
EXAMPLE_TEST = """package example
test_alice if allow with input as {"user": "alice"} with data.no_such_thing as undefined_var
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "example.rego").write_text(EXAMPLE)
    (tmp_path / "example_test.rego").write_text(EXAMPLE_TEST)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "users.json").write_text(json.dumps({"users": ["alice"]}))
    (tmp_path / "data" / "limits.json").write_text(json.dumps({"limits": {"max": 10}}))
    return tmp_path


@pytest.fixture
def server(policy_dir: Path) -> Iterator[OpaCompatibleServer]:
    with serving(OpaCompatibleServer(policy_dir)) as srv:
        yield srv


@pytest.fixture
async def opa(server: OpaCompatibleServer) -> AsyncIterator[AsyncOpaClient]:
    async with AsyncOpaClient(
        host="127.0.0.1", port=server.port, timeout=5, token=server.write_token
    ) as client:
        yield client


@pytest.fixture
async def http(server: OpaCompatibleServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {server.write_token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        yield client


async def test_opa_client_connects_and_queries_rules(opa: AsyncOpaClient) -> None:
    assert await opa.check_connection()
    assert await opa.check_health()
    assert await opa.get_policies_list() == ["example.rego"]
    info = await opa.get_policies_info()
    assert info["example.rego"]["path"].endswith("/v1/data/example")
    assert sorted(r.rsplit("/", 1)[1] for r in info["example.rego"]["rules"]) == [
        "allow",
        "greeting",
    ]
    assert await opa.query_rule({"user": "alice"}, "example", "allow") == {"result": True}
    assert await opa.query_rule({"user": "bob"}, "example", "allow") == {"result": False}
    assert await opa.query_rule({"user": "bob"}, "example", "greeting") == {"result": "hello bob"}
    assert await opa.bulk_query_rule([{"user": "alice"}, {"user": "bob"}], "example", "allow") == [
        True,
        False,
    ]


async def test_undefined_answers_without_a_result_key(opa: AsyncOpaClient) -> None:
    # As real OPA: 200 and {} -- a caller that fails closed must look for the key.
    assert await opa.query_rule({}, "example", "greeting") == {}
    assert await opa.query_rule({}, "no.such.package", "allow") == {}


async def test_data_documents_are_loaded_and_editable(
    opa: AsyncOpaClient, http: httpx.AsyncClient
) -> None:
    assert await opa.get_data("users") == {"result": ["alice"]}
    assert await opa.get_data("limits/max") == {"result": 10}
    assert await opa.update_or_create_data({"roles": ["controller"]}, "people/carol")
    assert await opa.patch_data(
        "people/carol",
        [
            {"op": "add", "path": "/team", "value": "finance"},
            {"op": "replace", "path": "/roles", "value": ["approver"]},
        ],
    )
    assert await opa.get_data("people") == {
        "result": {"carol": {"roles": ["approver"], "team": "finance"}}
    }
    # the client only sends objects; OPA (and this server) take any JSON value
    assert (await http.put("/v1/data/users", json=["alice", "bob"])).status_code == 204
    assert await opa.query_rule({"user": "bob"}, "example", "allow") == {"result": True}
    assert await opa.delete_data("people")
    with pytest.raises(PolicyNotFoundError):
        await opa.get_data("people")


async def test_policies_can_be_uploaded_replaced_and_deleted(opa: AsyncOpaClient) -> None:
    v1 = "package other\n\nhello if input.x == 1\n"
    assert await opa.update_policy_from_string(v1, "other")
    assert await opa.query_rule({"x": 1}, "other", "hello") == {"result": True}
    # OPA 0.x syntax: refused like OPA 1.x does, so the client's rego_compat upgrade kicks in.
    v0 = "package other\n\nhello { input.x == 2 }\n"
    assert await opa.update_policy_from_string(v0, "other")
    assert await opa.query_rule({"x": 2}, "other", "hello") == {"result": True}
    assert sorted(await opa.get_policies_list()) == ["example.rego", "other"]
    assert (await opa.get_policy("other"))["result"]["raw"].startswith("package other")
    assert await opa.delete_policy("other")
    assert await opa.query_rule({"x": 2}, "other", "hello") == {}
    with pytest.raises(DeletePolicyError):
        await opa.delete_policy("other")
    with pytest.raises(PolicyNotFoundError):
        await opa.get_policy("other")


async def test_a_bad_module_is_refused_and_the_old_policies_keep_working(
    opa: AsyncOpaClient, http: httpx.AsyncClient
) -> None:
    with pytest.raises(RegoParseError) as caught:
        await opa.update_policy_from_string("package bad\n\nallow if { x }\n", "bad")
    assert "var x is unsafe" in str(caught.value)

    response = await http.put("/v1/policies/bad2", content="package bad2\nallow if {")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_parameter"
    assert body["errors"][0]["code"] == "rego_parse_error"
    assert body["errors"][0]["location"]["file"] == "bad2"

    assert await opa.get_policies_list() == ["example.rego"]
    assert await opa.query_rule({"user": "alice"}, "example", "allow") == {"result": True}


async def test_raw_http_shapes(http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).json() == {}
    root = (await http.post("/v1/data", json={"input": {"user": "alice"}})).json()
    assert root["result"]["example"]["allow"] is True
    assert root["result"]["users"] == ["alice"]
    no_input = await http.post("/v1/data/example/allow")
    assert no_input.json() == {"result": False}
    malformed = await http.post("/v1/data/example/allow", content=b"{nope")
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "invalid_parameter"
    missing = await http.get("/v1/policies/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "resource_not_found"
    delete_missing = await http.delete("/v1/data/nope")
    assert delete_missing.status_code == 404


async def test_evaluation_errors_are_500_internal_error(http: httpx.AsyncClient) -> None:
    conflict = "package clash\n\nx := 1 if input.a\nx := 2 if input.b\n"
    assert (await http.put("/v1/policies/clash", content=conflict)).status_code == 200
    response = await http.post("/v1/data/clash/x", json={"input": {"a": True, "b": True}})
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "eval_conflict_error" in response.json()["message"]


def test_store_loads_a_directory_and_refuses_broken_ones(policy_dir: Path, tmp_path: Path) -> None:
    store = PolicyStore()
    store.load_dir(policy_dir)
    assert [p["id"] for p in store.policies()] == ["example.rego"]
    assert store.evaluate(["example", "allow"], {"user": "alice"}) == (True, True)
    assert store.evaluate(["example", "greeting"], {}) == (False, None)
    assert store.evaluate(["limits"]) == (True, {"max": 10})

    (policy_dir / "data" / "again.json").write_text(json.dumps({"users": ["mallory"]}))
    with pytest.raises(StoreError, match="'users' is defined twice"):
        PolicyStore().load_dir(policy_dir)
    with pytest.raises(StoreError, match="not a directory"):
        PolicyStore().load_dir(tmp_path / "missing")


def test_empty_policy_directory_is_fine(tmp_path: Path) -> None:
    store = PolicyStore()
    store.load_dir(tmp_path)
    assert store.policies() == []
    assert store.evaluate([]) == (True, {})


# ---------------------------------------------------------------------------------------------
# The rest of opa-python-client's API: config, status, metrics, compile, files and URLs, query
# parameters; and keep-alive safety after an error.
# ---------------------------------------------------------------------------------------------

FILTERS = """package filters

import rego.v1

include if {
	input.fruits.colour == "red"
	input.fruits.price < input.max
}

include if input.fruits.name == "apple"
"""


async def test_config_status_and_readiness(opa: AsyncOpaClient) -> None:
    config = await opa.get_config()
    assert config["result"]["labels"]["version"] == "1.20.2"
    assert config["result"]["default_decision"] == "/system/main"
    status = (await opa.get_status())["result"]
    assert status["bundles"]["baton"]["active_revision"]
    assert status["plugins"]["bundle"]["state"] == "OK"
    assert await opa.wait_for_ready(timeout=2, interval=0.05)
    assert await opa.check_health(query={"bundles": True})


async def test_metrics_are_prometheus_text(opa: AsyncOpaClient) -> None:
    await opa.query_rule({"user": "alice"}, "example", "allow")
    with pytest.raises(PolicyNotFoundError):
        await opa.get_policy("nope")
    text = await opa.get_metrics()
    assert "# TYPE http_request_duration_seconds histogram" in text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    data_ok = 'code="200",handler="v1/data",method="post"'
    assert samples[f"http_request_duration_seconds_count{{{data_ok}}}"] >= 1
    assert samples[f'http_request_duration_seconds_bucket{{{data_ok},le="+Inf"}}'] >= 1
    missing = 'code="404",handler="v1/policies",method="get"'
    assert samples[f"http_request_duration_seconds_count{{{missing}}}"] == 1
    assert samples["baton_opa_decisions_total"] >= 1


async def test_query_parameters_provenance_metrics_pretty(
    opa: AsyncOpaClient, http: httpx.AsyncClient
) -> None:
    answer = await opa.query_rule(
        {"user": "alice"}, "example", "allow", query_params={"provenance": True, "metrics": True}
    )
    assert answer["result"] is True
    assert answer["provenance"]["bundles"]["baton"]["revision"]
    assert answer["metrics"]["timer_rego_query_eval_ns"] > 0
    pretty = await http.post("/v1/data/example/allow?pretty=true", json={"input": {}})
    assert pretty.text.startswith("{\n")
    assert (await opa.get_data("users", query_params={"pretty": True}))["result"] == ["alice"]


async def test_ad_hoc_and_bulk_queries(opa: AsyncOpaClient) -> None:
    rows = await opa.ad_hoc_query("x := data.limits.max + 1")
    assert rows == {"result": [{"x": 11}]}
    with_input = await opa.ad_hoc_query("y := input.a", input_data={"a": 2})
    assert with_input == {"result": [{"y": 2}]}
    assert await opa.bulk_query_rule({"a": {"user": "alice"}, "b": {}}, "example", "allow") == {
        "a": True,
        "b": False,
    }


async def test_compile_partially_evaluates(opa: AsyncOpaClient, http: httpx.AsyncClient) -> None:
    assert await opa.update_policy_from_string(FILTERS, "filters")
    answer = await opa.compile_query(
        "data.filters.include == true", input_data={"max": 5}, unknowns=["input.fruits"]
    )
    queries = answer["result"]["queries"]
    as_text = sorted(
        " AND ".join(
            "{}({})".format(
                ".".join(str(t["value"]) for t in e["terms"][0]["value"]),
                ", ".join(
                    ".".join(str(t["value"]) for t in term["value"])
                    if term["type"] == "ref"
                    else json.dumps(term["value"])
                    for term in e["terms"][1:]
                ),
            )
            for e in query
        )
        for query in queries
    )
    assert as_text == [
        'eq(input.fruits.colour, "red") AND lt(input.fruits.price, 5)',
        'eq(input.fruits.name, "apple")',
    ]
    assert all(e["index"] == i for q in queries for i, e in enumerate(q))

    # Fully known: always true is one empty query, never true no queries (as OPA answers).
    always = await opa.compile_query(
        "data.filters.include == true", {"fruits": {"name": "apple"}}, []
    )
    assert always == {"result": {"queries": [[]]}}
    never = await opa.compile_query(
        "data.filters.include == true", {"fruits": {"name": "kiwi"}}, []
    )
    assert never == {"result": {}}

    ucast = await http.post(
        "/v1/compile",
        json={"query": "data.filters.include", "input": {"max": 5}, "unknowns": ["input.fruits"]},
        headers={"Accept": "application/vnd.opa.ucast.all+json"},
    )
    assert ucast.json()["result"]["query"]["operator"] == "or"
    sql = await http.post(
        "/v1/compile",
        json={"query": "data.filters.include", "input": {"max": 5}, "unknowns": ["input.fruits"]},
        headers={"Accept": "application/vnd.opa.sql.postgresql+json"},
    )
    assert sql.json()["result"]["query"].startswith("WHERE ")
    too_deep = await http.post(
        "/v1/compile", json={"query": "input.a.b.c == 1", "unknowns": ["input.a"]}
    )
    assert too_deep.status_code == 400
    assert too_deep.json()["code"] == "invalid_parameter"


async def test_policies_from_files_urls_and_to_files(
    opa: AsyncOpaClient, tmp_path: Path, server: OpaCompatibleServer
) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    source = tmp_path / "served"
    source.mkdir()
    (source / "web.rego").write_text("package web\n\nok if input.x == 1\n")
    (tmp_path / "file.rego").write_text("package filed\n\nok if input.x == 2\n")
    assert await opa.update_policy_from_file(str(tmp_path / "file.rego"), "filed")
    assert await opa.query_rule({"x": 2}, "filed", "ok") == {"result": True}

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(source))
    web = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}/web.rego"
        assert await opa.update_policy_from_url(url, "web")
    finally:
        web.shutdown()
        web.server_close()
    assert await opa.query_rule({"x": 1}, "web", "ok") == {"result": True}
    assert await opa.policy_to_file("web", path=str(tmp_path), filename="back.rego")
    assert (tmp_path / "back.rego").read_text().startswith("package web")


def test_the_sync_client_works_too(server: OpaCompatibleServer) -> None:
    from opa_client.opa import OpaClient

    client = OpaClient(host="127.0.0.1", port=server.port, timeout=5)
    try:
        assert client.check_connection()
        assert client.query_rule({"user": "alice"}, "example", "allow") == {"result": True}
        assert client.get_config()["result"]["labels"]["version"] == "1.20.2"
        assert "http_request_duration_seconds" in client.get_metrics()
        assert client.get_status()["result"]["plugins"]["status"]["state"] == "OK"
    finally:
        client.close_connection()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/nowhere", 404),  # no route
        ("POST", "/v1/query", 400),  # a body without a query
        ("PUT", "/v1/policies/bad", 400),  # a module that does not parse
        ("POST", "/v1/data/example/allow", 400),  # a body that is not JSON
        ("PATCH", "/v1/data/users", 401),  # a write without the write token
    ],
)
def test_an_error_answer_leaves_the_connection_usable(
    server: OpaCompatibleServer, method: str, path: str, status: int
) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        # A body the route never gets to look at: it must still be consumed.
        body = b'{"input": {"user": "alice"}, "padding": "' + b"x" * 5000 + b'"'
        headers = {"Content-Type": "application/json"}
        if status != 401:
            headers["Authorization"] = f"Bearer {server.write_token}"
        connection.request(method, path, body=body, headers=headers)
        first = connection.getresponse()
        assert first.status == status
        first.read()
        connection.request(
            "POST", "/v1/data/example/allow", body=json.dumps({"input": {"user": "alice"}})
        )
        second = connection.getresponse()
        assert (second.status, json.loads(second.read())) == (200, {"result": True})
    finally:
        connection.close()


async def test_a_foreign_host_and_an_unauthenticated_write_are_refused(
    server: OpaCompatibleServer,
) -> None:
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 sends its own Host. And a
    local process without the write token must not replace a policy."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        rebound = await anonymous.get("/v1/policies", headers={"Host": "evil.example:8181"})
        assert rebound.status_code == 403
        assert "Host 'evil.example' is not allowed" in rebound.json()["message"]
        replaced = await anonymous.put("/v1/policies/example.rego", content="package example\n")
        assert replaced.status_code == 401
        assert "needs 'Authorization: Bearer <write token>'" in replaced.json()["message"]
        wrong = await anonymous.delete(
            "/v1/data/users", headers={"Authorization": "Bearer not-the-token"}
        )
        assert wrong.status_code == 401
        # reads from a loopback name still work without a token, and nothing changed
        for host in ("localhost", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
            answer = await anonymous.post(
                "/v1/data/example/allow", json={"input": {"user": "alice"}}, headers={"Host": host}
            )
            assert answer.json() == {"result": True}, host
    assert [p["id"] for p in server.store.policies()] == ["example.rego"]


def test_the_write_token_file_is_private_and_reused(tmp_path: Path) -> None:
    from baton.devstack.opa_server import write_token_from

    path = tmp_path / "state" / "opa-write-token"
    token = write_token_from(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert write_token_from(path) == token and len(token) >= 32
