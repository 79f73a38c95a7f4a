"""The Web UI as an operator sees it: a headless Chromium (baton/devstack/webui.py) opens the
dev server's Web UI and finds each run's summary, details and current details on the page, for
a finished close and for one waiting for approval. Skips when Chromium or chromedriver is not
installed (Debian: apt-get install -y chromium chromium-driver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from temporalio.testing import WorkflowEnvironment

from baton.devstack import local
from baton.devstack.webui import Browser, browser_binaries
from tests.conftest import _harness, temporal_binary
from tests.test_kpi import another_period
from workflows import visibility
from workflows.plugin import BatonPlugin

pytestmark = pytest.mark.skipif(
    browser_binaries() is None, reason="chromium + chromedriver not installed"
)


@pytest.fixture
async def ui_env() -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    """A dev server of this test's own, with its Web UI on a free port."""
    ui_port = local.free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        port=local.free_port(),
        ui=True,
        ui_port=ui_port,
        plugins=[BatonPlugin()],
        search_attributes=visibility.ALL,
    )
    yield env, ui_port
    await env.shutdown()


def page(ui_port: int, workflow_id: str, run_id: str, tab: str) -> str:
    return (
        f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/"
        f"{quote(workflow_id, safe='')}/{run_id}/{tab}"
    )


async def test_web_ui_shows_summaries_of_a_finished_and_a_waiting_run(
    ui_env: tuple[WorkflowEnvironment, int], model_server: Any, database_url: str
) -> None:
    env, ui_port = ui_env
    async with _harness(env.client, model_server, database_url) as h:
        async with h.worker():
            done = await h.client.start_finance_close(h.start_input())
            await h.approve_close(done.id)
            await done.result()
            waiting_period = another_period(h)
            waiting, pending = await h.start_close_awaiting_approval(period=waiting_period)

            def look() -> None:
                with Browser() as browser:
                    browser.open(page(ui_port, done.id, done.result_run_id or "", "user-metadata"))
                    browser.wait_for_text(
                        f"Finance close {h.tenant} {h.period}", "requested by alice",
                        "COMPLETED",
                    )  # fmt: skip
                    browser.open(page(ui_port, done.id, done.result_run_id or "", "history"))
                    # activity summaries name the policy behind each posting (newest events)
                    browser.wait_for_text(
                        "(policy baton/finance/posting, approved)", "audit: close.completed"
                    )
                    browser.open(
                        page(ui_port, waiting.id, waiting.result_run_id or "", "user-metadata")
                    )
                    browser.wait_for_text(
                        f"Finance close {h.tenant} {waiting_period}", "RUNNING",
                        pending.request_id,  # Current Details: the pending approval
                    )  # fmt: skip

            await asyncio.to_thread(look)
            await waiting.terminate("test over")
