"""Operating Baton as its users do: a separate worker process (killed and restarted), the `baton`
CLI, the stock `temporal` CLI, and replay of a committed golden history."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from sqlmodel import select, text
from temporalio.client import WorkflowHistory

from activities.database import JournalPosting
from baton.settings import REPO_ROOT
from tests.conftest import Harness, temporal_binary
from tests.support import golden
from tests.support.paths import BATON
from workflows.finance_close import FinanceCloseWorkflow

GOLDEN = golden.GOLDEN / "finance_close_approved.json"


def stack_env(h: Harness) -> dict[str, str]:
    """Environment that points a Baton process at this test's server, queue, DB and model."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": h.temporal.service_client.config.target_host,
        "BATON_TASK_QUEUE": h.client.task_queue,
        "DATABASE_URL": h.settings.database_url,
        "OPENAI_BASE_URL": h.settings.openai_base_url,
        "BATON_POLICY_DIR": str(h.settings.policy_dir),
    }


async def run(
    cmd: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a thread: the in-process worker must keep answering meanwhile."""
    return await asyncio.to_thread(
        subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60
    )


async def run_cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return await run([BATON, *args], env=stack_env(h))


async def approve_by_cli(h: Harness, workflow_id: str, approver: str, rationale: str) -> None:
    """``approver`` approves the request ``workflow_id`` waits on with `baton approve`."""
    approved = await run_cli(
        h, "approve", workflow_id, "--approver", approver, "--rationale", rationale
    )
    assert approved.returncode == 0, approved.stderr


def start_worker_process(h: Harness, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
    """``python worker.py`` by default; ``argv`` runs another entry point (``baton worker``)."""
    return subprocess.Popen(
        argv or [sys.executable, str(REPO_ROOT / "worker.py")],
        env=stack_env(h),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def posted_keys(h: Harness) -> list[str]:
    with h.db.session() as s:
        rows = s.exec(select(JournalPosting).where(JournalPosting.period == h.period)).all()
        return [r.idempotency_key for r in rows]


async def test_worker_killed_mid_run_then_restarted_completes_without_double_posting(
    harness: Harness,
) -> None:
    h = harness
    worker = start_worker_process(h)
    try:
        handle, status = await h.start_close_until_pending(timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        # the approval lands while no worker runs at all: it is durable in the server
        await handle.signal(
            "submit_approval",
            {
                "request_id": status.pending[0].request_id,
                "approver": "carol",
                "verdict": "approve",
                "rationale": "ok",
                "action_digest": status.pending[0].action_digest,
            },
        )
        worker = start_worker_process(h)
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        worker.kill()
        worker.wait(10)
    keys = posted_keys(h)
    assert len(keys) == len(set(keys)) == len(result.posted)
    assert len(result.posted) == len(status.posted) + len(status.pending[0].entries)
    assert h.runtime.ledger.verify().ok


async def wait_until_polling(worker: subprocess.Popen[bytes]) -> list[str]:
    """The worker's log lines up to "worker polling" (its signal handlers are set by then)."""
    seen: list[str] = []

    def wait_polling() -> None:  # the log line says it polls (signal handlers are set by then)
        assert worker.stderr is not None
        for raw in worker.stderr:
            seen.append(raw.decode(errors="replace"))
            if "worker polling" in seen[-1]:
                return

    await asyncio.wait_for(asyncio.to_thread(wait_polling), 60)
    assert worker.poll() is None, "".join(seen)
    return seen


async def test_worker_stops_cleanly_on_sigterm(harness: Harness) -> None:
    worker = start_worker_process(harness)
    await wait_until_polling(worker)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0


async def test_baton_worker_command_runs_a_close_and_stops_on_sigterm(harness: Harness) -> None:
    """`baton worker` (the README's worker command) serves on the CLI's own event loop: it
    used to crash at once with "asyncio.run() cannot be called from a running event loop"."""
    h = harness
    worker = start_worker_process(h, [BATON, "worker"])
    try:
        await wait_until_polling(worker)
        handle, status = await h.start_close_until_pending(timeout=60)
        await h.client.approve(handle.id, approver="carol", rationale="reviewed")
        result = await asyncio.wait_for(handle.result(), 90)
        assert len(result.posted) == len(status.posted) + len(status.pending[0].entries) > 0
        assert posted_keys(h) and len(posted_keys(h)) == len(result.posted)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        worker.kill()
        worker.wait(10)


async def test_cli_and_stock_temporal_cli_drive_an_approval(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()

        # the CLI exits 0, run after run (sdk-python#300 exit crash guard)
        for _ in range(30):
            listed = await run_cli(h, "approvals", "list", handle.id)
            assert listed.returncode == 0, listed.stderr
            assert request.request_id in listed.stdout

        refused = await run_cli(h, "approve", handle.id, "--approver", "erin", "--rationale", "x")
        assert refused.returncode == 1 and "erin may not decide" in refused.stderr

        # the copy-paste example from docs/governance/approvals.md, with the stock temporal CLI
        payload = {
            "request_id": request.request_id,
            "approver": "carol",
            "verdict": "approve",
            "rationale": "approved from the temporal CLI",
            "action_digest": request.action_digest,
        }
        update = await run(
            [
                temporal_binary(),
                "workflow",
                "update",
                "execute",
                "--address",
                h.temporal.service_client.config.target_host,
                "--workflow-id",
                handle.id,
                "--name",
                "decide_approval",
                "--input",
                json.dumps(payload),
            ]
        )
        assert update.returncode == 0, update.stderr
        result = await handle.result()
    assert result.approvals[0].rationale == "approved from the temporal CLI"

    shown = await run_cli(h, "audit", "show", handle.id)
    assert shown.returncode == 0 and "approval.approved" in shown.stdout
    ok = await run_cli(h, "audit", "verify")
    assert ok.returncode == 0 and "audit chain OK" in ok.stdout
    with h.db.session() as s:
        s.exec(
            text(
                "UPDATE audit_record SET actor = 'mallory' "  # type: ignore[call-overload]
                "WHERE action = 'approval.approved'"
            )
        )
    broken = await run_cli(h, "audit", "verify")
    assert broken.returncode == 1
    assert "approval.approved): content does not match its hash (edited)" in broken.stdout


async def test_cli_inbox_amend_and_request_changes(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        entry = next(e for e in request.entries if abs(e.amount) >= 1000)

        # the inbox across runs (other tests' runs may be listed too; this one must be)
        async with asyncio.timeout(20):
            while (
                request.request_id
                not in (
                    inbox := await run_cli(h, "approvals", "list", "--role", "finance-controller")
                ).stdout
            ):
                await asyncio.sleep(0.2)
        assert inbox.returncode == 0 and "REQUESTER" in inbox.stdout
        line = next(x for x in inbox.stdout.splitlines() if request.request_id in x)
        assert handle.id in line and "alice" in line and "1 x finance-controller" in line
        as_cfo = await run_cli(h, "approvals", "list", "--role", "cfo", "--json")
        assert as_cfo.returncode == 0 and request.request_id not in as_cfo.stdout

        bad = await run_cli(
            h, "amend", handle.id, "--approver", "carol", "--rationale", "x",
            "--change", f"{entry.entry_id} amont=5",
        )  # fmt: skip
        assert bad.returncode == 2 and "expected 'ENTRY_ID amount=X'" in bad.stderr

        amended = await run_cli(
            h, "amend", handle.id, "--approver", "carol", "--rationale", "half was refunded",
            "--change", f"{entry.entry_id} amount={entry.amount / 2:.2f}",
        )  # fmt: skip
        assert amended.returncode == 0, amended.stderr
        assert "amended by carol recorded" in amended.stdout

        async with asyncio.timeout(30):
            while not (pending := (await h.client.status(handle.id)).pending) or (
                pending[0].round != 2
            ):
                await asyncio.sleep(0.1)
        changes = await run_cli(
            h, "request-changes", handle.id, "--approver", "frank",
            "--comment", "book the rest to 6900-suspense",
        )  # fmt: skip
        assert changes.returncode == 0, changes.stderr
        await h.client.cancel(handle.id)
    shown = await run_cli(h, "audit", "show", handle.id)
    assert "approval.amended" in shown.stdout and "approval.changes_requested" in shown.stdout


async def test_cli_rejects_bad_input_naming_the_field(harness: Harness) -> None:
    bad = await run_cli(
        harness,
        "close",
        "start",
        "--tenant",
        "acme",
        "--period",
        "2026-13",
        "--requested-by",
        "alice",
    )
    assert bad.returncode == 2
    assert "period" in bad.stderr and "YYYY-MM" in bad.stderr
    helped = await run([BATON, "--help"])
    assert helped.returncode == 0
    for command in ("demo", "worker", "close", "approve", "reject", "audit", "policy"):
        assert command in helped.stdout


async def test_golden_history_replays(harness: Harness) -> None:
    """A committed history of an approved close must replay on the current workflow code.

    Regenerate (only when a change is meant to alter the command sequence, behind
    workflow.patched) with BATON_REGENERATE_GOLDEN=1.
    """
    h = harness
    if golden.regenerating():
        async with h.worker():
            handle = await h.client.start_finance_close(h.start_input())
            await h.wait_for_pending(handle.id)
            await h.client.approve(handle.id, approver="carol", rationale="golden")
            await handle.result()
        await golden.record(GOLDEN, handle)
    await golden.load_and_replay(GOLDEN, "golden-finance-close", FinanceCloseWorkflow)


async def test_history_with_unchanged_search_attribute_writes_replays() -> None:
    """A close started before runs stopped re-writing unchanged search attributes (a zero-cost
    close, instant agents, from bench/; its agents' cost upserts changed nothing) still replays:
    workflows/process_base.set_search_attributes keeps the old writes behind a patch."""
    path = GOLDEN.parent / "finance_close_unchanged_upserts.json"
    history = WorkflowHistory.from_json("golden-unchanged-upserts", path.read_text())
    kinds = [e.WhichOneof("attributes") for e in history.events]
    assert kinds.count("upsert_workflow_search_attributes_event_attributes") == 4
    await golden.assert_replays(history, FinanceCloseWorkflow)
