"""temporal-dev/stack.py as `make up`/`make down` run it: real processes, free ports, temp state.

The tests of this module run in order against one stack: up, up again, status, a port held by a
stranger, down, down again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from baton.settings import REPO_ROOT
from workflows.contracts import SEARCH_ATTRIBUTES

STACK = REPO_ROOT / "temporal-dev" / "stack.py"


def load_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baton_stack_script", STACK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stack = load_stack()


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Stack:
    state_dir: Path
    env: dict[str, str]
    grpc: int
    ui: int
    model: int
    inbox: int

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STACK), *args, "--state-dir", str(self.state_dir)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def pids(self) -> dict[str, int]:
        return {
            p.stem: json.loads(p.read_text())["pid"] for p in sorted(self.state_dir.glob("*.pid"))
        }


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    grpc, ui, model, inbox = free_ports(4)
    state_dir = tmp_path_factory.mktemp("stack") / ".baton"
    env = {
        **os.environ,
        "BATON_TEMPORAL_PORT": str(grpc),
        "BATON_UI_PORT": str(ui),
        "BATON_MODEL_PORT": str(model),
        "BATON_INBOX_PORT": str(inbox),
        "BATON_ISSUER_DIR": str(state_dir / "issuer"),
        "DATABASE_URL": f"sqlite:///{state_dir / 'inbox.db'}",
    }
    s = Stack(state_dir, env, grpc, ui, model, inbox)
    yield s
    leftovers = s.pids() if s.state_dir.exists() else {}
    s.run("down")
    for pid in leftovers.values():  # only if `down` itself failed
        if stack.pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


async def test_up_starts_temporal_and_the_model_server(local_stack: Stack) -> None:
    done = local_stack.run("up")
    assert done.returncode == 0, done.stderr
    assert f"Temporal Web UI: http://localhost:{local_stack.ui}" in done.stdout
    assert set(local_stack.pids()) == {"temporal", "model-server", "inbox"}
    assert (local_stack.state_dir / "temporal.db").exists()
    # Baton's database (DATABASE_URL) is migrated too (docs/operations/integrity.md): by `up`
    # itself, or already by the inbox, which opens it as it starts
    assert "database: schema " in done.stdout
    from activities import schema
    from activities.database import Database

    db = Database(local_stack.env["DATABASE_URL"])
    try:
        assert schema.current(db) == schema.head()
    finally:
        db.dispose()

    client = await Client.connect(f"127.0.0.1:{local_stack.grpc}")
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    registered = {
        name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_")
        for name, kind in listed.custom_attributes.items()
    }
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert registered.get(name, "").replace("_", "") == kind.upper()

    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{local_stack.model}/health")
        ui = await http.get(f"http://127.0.0.1:{local_stack.ui}/")
        # every agent's rules are registered when the server runs as `python -m` too
        plan = await http.post(
            f"http://127.0.0.1:{local_stack.model}/v1/chat/completions",
            json={
                "model": "m",
                "messages": [
                    {"role": "system", "content": "agent: customer_planner"},
                    {"role": "user", "content": json.dumps({"customer": {"customer_id": "c1"}})},
                ],
            },
        )
        inbox = await http.get(f"http://127.0.0.1:{local_stack.inbox}/sign-in")
    assert health.status_code == 200
    assert ui.status_code == 200
    assert inbox.status_code == 200 and "Sign in" in inbox.text
    assert plan.status_code == 200, plan.text


def test_up_again_is_a_no_op(local_stack: Stack) -> None:
    before = local_stack.pids()
    done = local_stack.run("up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already running") == 3
    assert "database: schema at " in done.stdout and "(up to date)" in done.stdout
    assert local_stack.pids() == before


def test_up_registers_search_attributes_missing_from_an_existing_database(
    local_stack: Stack,
) -> None:
    # `start-dev --search-attribute` is ignored for a database that already exists, so an
    # attribute added to the contracts later must be registered by `up` itself.
    temporal = str(stack.temporal_binary())
    address = f"127.0.0.1:{local_stack.grpc}"
    subprocess.run(
        [temporal, "operator", "search-attribute", "remove", "--name", "BatonShadow", "--yes"]
        + ["--address", address, "--disable-config-env", "--disable-config-file"],
        check=True,
        capture_output=True,
    )
    done = local_stack.run("up")
    assert done.returncode == 0, done.stderr
    assert "registered search attributes BatonShadow" in done.stdout

    check = local_stack.run("search-attributes", "--address", address)
    assert check.returncode == 0, check.stderr
    assert "all search attributes present" in check.stdout


def test_status_names_each_component(local_stack: Stack) -> None:
    done = local_stack.run("status")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert "running" in lines["temporal"] and f"127.0.0.1:{local_stack.grpc}" in lines["temporal"]
    assert f"http://127.0.0.1:{local_stack.model}/v1" in lines["model-server"]
    assert "stopped" in lines["opa-server"]


def test_up_with_opa_adds_only_the_policy_server(local_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "gate.rego").write_text('package gate\n\nallow if input.user == "alice"\n')
    [opa_port] = free_ports(1)
    done = local_stack.run(
        "up", "--with-opa", BATON_OPA_PORT=str(opa_port), BATON_POLICY_DIR=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already running") == 3
    assert "opa-server    started" in done.stdout
    answer = httpx.post(
        f"http://127.0.0.1:{opa_port}/v1/data/gate/allow", json={"input": {"user": "alice"}}
    )
    assert answer.json() == {"result": True}


@pytest.mark.real_model
def test_up_with_llm_local_serves_the_local_models_and_env_points_at_them(
    local_stack: Stack,
) -> None:
    """`make up LLM=local`: llama.cpp's server on a free port (kept in its pid file), the models
    assembled into the state directory, and `env` prints the settings that point Baton at it."""
    from tests.conftest import require_local_llm

    require_local_llm()
    base = local_stack.run("up")  # the stack without the model (other tests may have started it)
    assert base.returncode == 0, base.stderr
    missing = local_stack.run("env", "--llm", "local")
    assert missing.returncode == 1 and "make up LLM=local" in missing.stderr
    done = local_stack.run("up", "--llm", "local")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("already running") == 3  # the rest of the stack is untouched
    assert "llm-server    started" in done.stdout
    port = json.loads((local_stack.state_dir / "llm-server.pid").read_text())["port"]
    env = local_stack.run("env", "--llm", "local")
    assert env.returncode == 0, env.stderr
    settings = dict(line.split("=", 1) for line in env.stdout.split())
    assert settings == {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "BATON_MODEL_CATALOGUE": str(REPO_ROOT / "config" / "models.llama-cpp.json"),
        "BATON_EMBEDDINGS_BASE_URL": f"http://127.0.0.1:{local_stack.model}/v1",
    }
    assert "settings for a worker on the local model:" in done.stdout
    catalogue = json.loads((REPO_ROOT / "config" / "models.llama-cpp.json").read_text())
    for entry in catalogue["models"]:  # every model the catalogue names answers
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": entry["name"],
                "messages": [{"role": "user", "content": 'Reply with {"ok": true}'}],
                "response_format": {"type": "json_object"},
                "max_tokens": 8,
            },
            timeout=300,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].strip()
    status = local_stack.run("status")
    assert "llm-server    running" in status.stdout
    again = local_stack.run("up", "--llm", "local")
    assert again.returncode == 0 and again.stdout.count("already running") == 4


def test_llm_must_name_a_known_model_server() -> None:
    done = subprocess.run(
        ["make", "-n", "up", "LLM=gpt"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "LLM must be empty (the rule-based stand-in) or `local`" in done.stderr


def test_a_port_held_by_another_process_is_a_clear_error(
    local_stack: Stack, tmp_path: Path
) -> None:
    other_grpc, other_ui, other_model, other_inbox = free_ports(4)
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", other_grpc))
        stranger.listen()
        other = Stack(
            tmp_path / ".baton", local_stack.env, other_grpc, other_ui, other_model, other_inbox
        )
        done = other.run(
            "up",
            BATON_TEMPORAL_PORT=str(other_grpc),
            BATON_UI_PORT=str(other_ui),
            BATON_MODEL_PORT=str(other_model),
            BATON_INBOX_PORT=str(other_inbox),
        )
    assert done.returncode == 1
    assert (
        f"port {other_grpc} is in use by another process; stop it or set BATON_TEMPORAL_PORT"
        in done.stderr
    )
    assert other.pids() == {}  # nothing half-started


def test_down_stops_everything_and_is_idempotent(local_stack: Stack) -> None:
    pids = local_stack.pids()
    done = local_stack.run("down")
    assert done.returncode == 0, done.stderr
    assert "temporal      stopped" in done.stdout
    assert all(not stack.pid_alive(pid) for pid in pids.values())
    assert local_stack.pids() == {}
    for port in (local_stack.grpc, local_stack.ui, local_stack.model):
        assert not stack.port_in_use(port)

    again = local_stack.run("down")
    assert again.returncode == 0, again.stderr
    assert "nothing to stop" in again.stdout
