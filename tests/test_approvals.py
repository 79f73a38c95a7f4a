"""Human approvals through a real workflow: N-of-M, refusals, amendments, requested changes,
the approver inbox, escalation and SLA expiry (hours and days, on the time-skipping server),
notifications, and approvals that outlive a worker.

The reconciler's answer is scripted per test (the model server is shared), so each test chooses
the entries and hence what policy asks for: below 1,000 posts at once, from 1,000 a
finance-controller approves, from 50,000 a controller AND a CFO (two different people).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError

from activities.database import JournalPosting, NotificationOutbox, from_cents
from activities.seed import seed_period
from baton.devstack import local
from tests.conftest import Harness, _harness
from tests.support.approvals import decision, request_of_round
from tests.support.scripted_model import Fault
from tests.test_finance_close import actions, failure_type, net_by_entry, postings
from workflows import visibility
from workflows.client import ApprovalRefused, BatonClient
from workflows.contracts import (
    SEARCH_ATTRIBUTES,
    ApprovalAck,
    ApprovalRequest,
    PendingApproval,
)
from workflows.plugin import BatonPlugin

FEE = ("ADJ-FEE", "6100-bank-fees", "-25.00")  # posts without approval
#: two fees that need a finance-controller; ``amend_partly_refunded`` amends both
TWO_FEES = (("ADJ-A", "6100-bank-fees", "-1500.00"), ("ADJ-B", "6100-bank-fees", "-2500.00"))


def script_entries(h: Harness, *entries: tuple[str, str, str], period: str | None = None) -> None:
    """The reconciler of this test's period answers with exactly these entries (and waives
    the period's other items: a complete answer)."""
    h.model.script(
        Fault.reconciled(
            {
                "entries": [
                    {
                        "entry_id": entry_id,
                        "account": account,
                        "amount": amount,
                        "source_ids": [entry_id.removeprefix("ADJ-")],
                        "rationale": f"scripted {entry_id}",
                    }
                    for entry_id, account, amount in entries
                ]
            }
        ),
        match=f'"period":"{period or h.period}"',
    )


async def amend_partly_refunded(
    client: BatonClient, workflow_id: str, request: ApprovalRequest
) -> ApprovalAck:
    """carol amends ``request`` (of a close with ``TWO_FEES``): ADJ-A to -900.00, now below the
    threshold, and ADJ-B to -1200.00, which still needs an approver."""
    return await client.amend(
        workflow_id,
        approver="carol",
        rationale="fees were partly refunded",
        amendments=[
            {"entry_id": "ADJ-A", "amount": "-900.00"},  # now below the threshold
            {"entry_id": "ADJ-B", "amount": "-1200.00"},  # still needs an approver
        ],
        action_digest=request.action_digest,
    )


def posted(h: Harness, period: str | None = None) -> dict[str, JournalPosting]:
    """Postings still in force, by entry id (reversals and what they reverse left out)."""
    rows = [r for r in postings(h) if period is None or r.period == period]
    reversed_ids = {r.reverses_posting_id for r in rows if r.reverses_posting_id}
    return {
        r.entry_id: r
        for r in rows
        if r.reverses_posting_id is None and r.posting_id not in reversed_ids
    }


def detail(row: Any) -> dict[str, Any]:
    return dict(json.loads(row.detail_json))


# -- N-of-M ------------------------------------------------------------------------------------


async def test_cfo_level_entry_needs_a_controller_and_a_cfo_and_survives_a_worker_restart(
    harness: Harness,
) -> None:
    h = harness
    script_entries(
        h,
        FEE,
        ("ADJ-BIG", "6900-suspense", "60000.00"),
        ("ADJ-MID", "6100-bank-fees", "-1500.00"),
    )
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        assert [(r.role, r.count) for r in request.requirements] == [
            ("cfo", 1),
            ("finance-controller", 1),
        ]
        assert "alice" not in request.eligible_approvers  # she requested the close
        assert {"carol", "dave", "frank"} <= set(request.eligible_approvers)

        ack = await h.client.decide(handle.id, decision(request, "carol"))
        assert ack.accepted and not ack.duplicate
        assert [(r.role, r.count) for r in ack.still_needed] == [("cfo", 1)]
        assert "ADJ-BIG" not in posted(h)  # one of two approvals posts nothing

        # the identical decision again (a client retry) changes nothing
        again = await h.client.decide(handle.id, decision(request, "carol"))
        assert again.duplicate and [r.role for r in again.still_needed] == ["cfo"]
        # carol cannot count twice, frank cannot take the cfo's place
        with pytest.raises(ApprovalRefused, match="carol has already approved"):
            await h.client.decide(handle.id, decision(request, "carol", rationale="twice"))
        with pytest.raises(ApprovalRefused, match="frank's roles are already covered.*cfo"):
            await h.client.decide(handle.id, decision(request, "frank"))

        waiting = (await h.client.status(handle.id)).pending[0]
        assert [(v.approver, v.role) for v in waiting.approvals] == [
            ("carol", "finance-controller")
        ]

    # no worker now: dave approves by signal (the stock CLI / Web UI path), twice
    for _ in range(2):
        await h.client.handle(handle.id).signal("submit_approval", decision(request, "dave"))
    async with h.worker():
        result = await handle.result()

    in_force = posted(h)
    assert set(in_force) == {"ADJ-FEE", "ADJ-BIG", "ADJ-MID"}
    assert in_force["ADJ-BIG"].approved_by == "carol, dave"
    assert in_force["ADJ-FEE"].approved_by is None
    (outcome,) = result.approvals
    assert outcome.outcome == "approved" and outcome.approvers == ["carol", "dave"]
    big = next(p for p in result.posted if p.entry_id == "ADJ-BIG")
    assert big.approved_by == ["carol", "dave"]

    trail = h.runtime.ledger.trail(handle.id)
    votes = [
        (r.actor, json.loads(r.detail_json)["via"]) for r in trail if r.action == "approval.vote"
    ]
    assert votes == [("carol", "update"), ("dave", "signal")]  # the duplicate signal was no vote
    assert [r.actor for r in trail if r.action == "approval.approved"] == ["dave"]
    assert h.runtime.ledger.verify().ok


async def test_refused_signals_are_audited_and_ignored(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        wf = h.client.handle(handle.id)
        await wf.signal("submit_approval", decision(request, "alice"))  # requester
        await wf.signal("submit_approval", decision(request, "erin"))  # no approver role
        stale = decision(request, "carol", action_digest="0" * 64)
        await wf.signal("submit_approval", stale)  # reviewed another version
        await wf.signal("submit_approval", decision(request, "frank"))
        result = await handle.result()

    assert result.approvals[0].approvers == ["frank"]
    refused = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "approval.refused"]
    # the name in a refused signal is only a claim: the workflow writes the row
    assert {r.actor for r in refused} == {"baton:workflow"}
    assert [r.rationale.split(":")[:2] for r in refused] == [
        ["claimed by alice (unverified)", " segregation of duties"],
        ["claimed by erin (unverified)", " erin may not decide on this request"],
        ["claimed by carol (unverified)", " action digest mismatch"],
    ]


# -- amend and request changes -------------------------------------------------------------------


async def test_amendment_reruns_policy_and_posts_the_amended_values(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, *TWO_FEES)
    async with h.worker():
        handle, first = await h.start_close_awaiting_approval()
        ack = await amend_partly_refunded(h.client, handle.id, first)
        assert ack.accepted
        second = await request_of_round(h.client, handle.id, 2)
        assert [e.entry_id for e in second.entries] == ["ADJ-B"]
        assert second.entries[0].amount == Decimal("-1200.00")
        assert second.action_digest != first.action_digest
        assert "carol" not in second.eligible_approvers
        # the amended entry A posted without an approval, with its amended amount
        assert from_cents(posted(h)["ADJ-A"].amount_cents) == Decimal("-900.00")
        # carol changed B, so she may not approve it (segregation of duties)
        with pytest.raises(ApprovalRefused, match="segregation of duties: carol .*amended"):
            await h.client.decide(handle.id, decision(second, "carol"))
        # the first request is closed
        with pytest.raises(ApprovalRefused, match="already closed: amended by carol"):
            await h.client.decide(handle.id, decision(first, "frank"))
        await h.client.decide(handle.id, decision(second, "frank"))
        result = await handle.result()

    in_force = posted(h)
    assert {k: from_cents(v.amount_cents) for k, v in in_force.items()} == {
        "ADJ-FEE": Decimal("-25.00"),
        "ADJ-A": Decimal("-900.00"),
        "ADJ-B": Decimal("-1200.00"),
    }
    assert [o.outcome for o in result.approvals] == ["amended", "approved"]
    by_entry = {p.entry_id: p for p in result.posted}
    assert by_entry["ADJ-B"].amended_by == "carol" and by_entry["ADJ-B"].approved_by == ["frank"]
    assert by_entry["ADJ-A"].amended_by == "carol" and by_entry["ADJ-A"].approved_by == []
    trail = h.runtime.ledger.trail(handle.id)
    amended = [r for r in trail if r.action == "approval.amended"]
    assert len(amended) == 1 and amended[0].rationale == "fees were partly refunded"
    assert detail(amended[0])["amendments"][0]["amount"] == "-900.00"


async def test_request_changes_sends_entries_back_to_the_agent(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-X", "6900-suspense", "1500.00"))
    async with h.worker():
        handle, first = await h.start_close_awaiting_approval()
        await h.client.request_changes(
            handle.id,
            approver="carol",
            comment="this is a fee refund, book it to 1200-accounts-receivable",
            action_digest=first.action_digest,
        )
        second = await request_of_round(h.client, handle.id, 2)
        (revised,) = second.entries
        assert revised.account == "1200-accounts-receivable"  # the reviser agent's change
        assert "Revised after review" in revised.rationale
        await h.client.decide(handle.id, decision(second, "carol"))  # she may approve this one
        result = await handle.result()

    assert posted(h)["ADJ-X"].account == "1200-accounts-receivable"
    assert [o.outcome for o in result.approvals] == ["changes_requested", "approved"]
    assert h.model.attempts(agent="reviser", match=h.period) == 1
    trail = actions(h, handle.id)
    assert trail.index("approval.changes_requested") < trail.index("agent.revised_adjustments")


# -- the approver inbox --------------------------------------------------------------------------


async def test_inbox_lists_exactly_the_pending_approvals_after_a_mix_of_decisions(
    harness: Harness,
) -> None:
    h = harness
    year = h.period[:4]
    periods = {
        name: f"{year}-{m}" for name, m in [("a", "06"), ("b", "07"), ("c", "08"), ("d", "09")]
    }
    for name, period in periods.items():
        seed_period(h.db, h.tenant, period)
        big = "60000.00" if name == "d" else "1500.00"
        script_entries(h, FEE, ("ADJ-Q", "6100-bank-fees", big), period=period)
    async with h.worker():
        handles = {
            name: await h.client.start_finance_close(h.start_input(period=period))
            for name, period in periods.items()
        }
        requests = {
            name: (await h.wait_for_pending(handle.id)).pending[0]
            for name, handle in handles.items()
        }
        await h.client.decide(handles["a"].id, decision(requests["a"], "carol"))
        await h.client.reject(handles["b"].id, approver="frank", rationale="not this month")
        await h.client.decide(handles["d"].id, decision(requests["d"], "carol"))  # cfo missing

        async def inbox(**filters: str) -> list[PendingApproval]:
            return await h.client.inbox(task_queue=h.client.task_queue, **filters)

        async def settled(**filters: str) -> dict[str, PendingApproval]:
            # visibility is eventually consistent: wait until it shows the decisions
            expected = {
                "": {"c", "d"},
                "finance-controller": {"c"},
                "cfo": {"d"},
            }[filters.get("role", "")]
            wanted = {handles[n].id for n in expected}
            async with asyncio.timeout(20):
                while True:
                    items = {i.workflow_id: i for i in await inbox(**filters)}
                    # d was pending before carol's vote too: also wait for the memo to show it
                    d_voted = handles["d"].id not in items or items[handles["d"].id].approved_by
                    if set(items) == wanted and d_voted:
                        return items
                    await asyncio.sleep(0.2)

        everything = await settled()
        c, d = everything[handles["c"].id], everything[handles["d"].id]
        assert c.total_amount == Decimal("1500.00") and c.requested_by == "alice"
        assert [(r.role, r.count) for r in c.still_needed] == [("finance-controller", 1)]
        assert d.approved_by == ["carol"]
        assert [(r.role, r.count) for r in d.still_needed] == [("cfo", 1)]
        assert c.deadline > c.requested_at and c.request_id == requests["c"].request_id
        assert set(await settled(role="cfo")) == {handles["d"].id}
        assert set(await settled(role="finance-controller")) == {handles["c"].id}
        assert await inbox(process="hr_onboarding") == []

        await h.client.decide(handles["c"].id, decision(requests["c"], "carol"))
        await h.client.decide(handles["d"].id, decision(requests["d"], "dave"))
        for name in ("a", "c", "d"):
            await handles[name].result()
        async with asyncio.timeout(20):
            while await inbox():
                await asyncio.sleep(0.2)


async def test_web_ui_shows_what_is_pending_for_whom_and_since_when(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        details = await current_details(h, handle.id)
        assert f"Waiting for approval** `{request.request_id}`" in details
        assert "needs: 1 x finance-controller" in details
        assert "carol, dave, frank" in details and "requested by alice" in details
        assert "SLA deadline" in details and request.action_digest in details
        attrs = (await handle.describe()).typed_search_attributes
        assert attrs.get(visibility.APPROVAL_STATE) == "pending"
        assert attrs.get(visibility.PENDING_ROLES) == ["finance-controller"]

        await h.client.decide(handle.id, decision(request, "carol"))
        await handle.result()
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(visibility.APPROVAL_STATE) == "approved"
    assert attrs.get(visibility.PENDING_ROLES) is None


async def current_details(h: Harness, workflow_id: str) -> str:
    """What the Web UI shows as the run's current details (it asks this built-in query)."""
    metadata = await h.client.handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return metadata.current_details


# -- SLA, escalation and notifications (time-skipping server) -------------------------------------


class Webhook:
    """A local HTTP receiver for the webhook notifier: records every POST, answers 503 to the
    first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.delay = delay
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(json.loads(body))
                time.sleep(hook.delay)
                status = 503 if len(hook.received) <= hook.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/approvals"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[tuple[str, int]]:
        """(kind, escalation level) of each distinct notification delivered."""
        seen: dict[str, tuple[str, int]] = {}
        for n in self.received[self.fail_first :]:
            seen.setdefault(n["idempotency_key"], (n["kind"], n["escalation_level"]))
        return list(seen.values())


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(fail_first=1)
    yield hook
    hook.server.shutdown()


async def test_sla_breach_escalates_and_the_next_tier_approves(
    time_skipping_env: Any, model_server: Any, database_url: str, webhook: Webhook
) -> None:
    async with _harness(
        time_skipping_env.client, model_server, database_url, notify_webhook_url=webhook.url
    ) as h:
        env = time_skipping_env
        script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
        async with h.worker():
            handle = await h.client.start_finance_close(
                h.start_input(approval_timeout_seconds=3600)
            )
            request = (await h.wait_for_pending(handle.id)).pending[0]
            assert "ivan" not in request.eligible_approvers  # a cfo, not a controller
            with pytest.raises(ApprovalRefused, match="ivan may not decide"):
                await h.client.decide(handle.id, decision(request, "ivan"))

            await env.sleep(timedelta(hours=1, minutes=1))  # the 1 h SLA passes: tier 1 (cfo)
            escalated = await wait_for_level(h, handle.id, 1)
            assert "cfo" in escalated.approver_roles and "ivan" in escalated.eligible_approvers
            assert escalated.deadline - escalated.requested_at > timedelta(hours=4)
            ack = await h.client.decide(handle.id, decision(escalated, "ivan"))
            assert ack.accepted
            result = await handle.result()

        assert posted(h)["ADJ-MID"].approved_by == "ivan"
        assert result.approvals[0].request.escalation_level == 1
        trail = h.runtime.ledger.trail(handle.id)
        names = [r.action for r in trail]
        assert names.index("approval.sla_breached") < names.index("approval.escalated")
        escalation = json.loads(
            next(r for r in trail if r.action == "approval.escalated").detail_json
        )
        assert escalation["notified_roles"] == ["cfo"]
        # the webhook heard of the request and of the escalation (the first POST failed: retried)
        assert webhook.kinds() == [("approval.requested", 0), ("approval.escalated", 1)]
        escalated_note = webhook.received[-1]
        assert "ivan" in escalated_note["recipients"] and escalated_note["roles"] == ["cfo"]


async def test_cancel_while_the_approvers_are_being_notified_compensates(
    temporal_client: Any, model_server: Any, database_url: str
) -> None:
    """A cancellation that lands while the notify activity runs is a cancellation, not a failed
    notification: the run must not go on waiting for an approver."""
    slow = Webhook(delay=3.0)
    try:
        async with _harness(
            temporal_client, model_server, database_url, notify_webhook_url=slow.url
        ) as h:
            script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
            async with h.worker():
                handle = await h.client.start_finance_close(h.start_input())
                await h.wait_for_pending(handle.id)
                async with asyncio.timeout(10):
                    while not slow.received:  # the notification is in flight now
                        await asyncio.sleep(0.05)
                await h.client.cancel(handle.id)
                with pytest.raises(WorkflowFailureError) as failed:
                    await asyncio.wait_for(handle.result(), 30)
            assert isinstance(failed.value.cause, CancelledError)
            assert all(net == 0 for net in net_by_entry(postings(h)).values())
            assert "notification.failed" not in actions(h, handle.id)
    finally:
        slow.server.shutdown()


async def wait_for_level(h: Harness, workflow_id: str, level: int) -> ApprovalRequest:
    async with asyncio.timeout(30):
        while True:
            pending = (await h.client.status(workflow_id)).pending
            if pending and pending[0].escalation_level == level:
                return pending[0]
            await asyncio.sleep(0.05)


async def test_final_sla_breach_rejects_and_compensates_after_days(ts_harness: Harness) -> None:
    h = ts_harness
    script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input(approval_timeout_seconds=3600))
        await h.wait_for_pending(handle.id)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()  # waiting on the result lets the server skip 1 h + 4 h + 1 d
    assert failure_type(failed.value) == "ApprovalExpired"
    rows = postings(h)
    assert rows and all(net == 0 for net in net_by_entry(rows).values())  # ADJ-FEE reversed
    trail = h.runtime.ledger.trail(handle.id)
    breaches = [detail(r) for r in trail if r.action == "approval.sla_breached"]
    assert [(b["escalation_level"], b["final"]) for b in breaches] == [
        (0, False),
        (1, False),
        (2, True),
    ]
    assert "approval.expired" in [r.action for r in trail]
    with h.db.session() as s:
        outbox = s.exec(
            select(NotificationOutbox).where(NotificationOutbox.workflow_id == handle.id)
        ).all()
    assert sorted((n.kind, n.payload["escalation_level"]) for n in outbox) == [
        ("approval.escalated", 1),
        ("approval.escalated", 2),
        ("approval.expired", 2),
        ("approval.requested", 0),
    ]
    expired = next(n for n in outbox if n.kind == "approval.expired")
    assert "alice" in expired.recipients  # the requester hears that it failed safe


# -- durability across a server restart ---------------------------------------------------------


class RestartableServer:
    """A Temporal dev server of its own on a persistent database file, killed and restarted."""

    def __init__(self, db_file: Path) -> None:
        self.port = local.free_port()
        self.argv = [
            local.temporal_binary() or "temporal",
            "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(self.port), "--db-filename", str(db_file), "--log-level", "error",
            *[
                arg
                for name, kind in SEARCH_ATTRIBUTES.items()
                for arg in ("--search-attribute", f"{name}={kind}")
            ],
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Client:
        self.process = await asyncio.to_thread(
            subprocess.Popen, self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        async with asyncio.timeout(60):
            while True:
                try:
                    return await Client.connect(self.address, plugins=[BatonPlugin()])
                except RuntimeError:
                    await asyncio.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no graceful shutdown
        self.process.wait(10)


async def test_a_pending_approval_and_its_votes_survive_a_server_kill(
    model_server: Any, database_url: str, tmp_path: Path
) -> None:
    server = RestartableServer(tmp_path / "temporal.db")
    client = await server.start()
    try:
        async with _harness(client, model_server, database_url) as h:
            script_entries(h, FEE, ("ADJ-BIG", "6900-suspense", "60000.00"))
            async with h.worker():
                handle, request = await h.start_close_awaiting_approval()
                await h.client.decide(handle.id, decision(request, "carol"))  # 1 of 2
            server.kill()
            client = await server.start()
            h.client = BatonClient(client, task_queue=h.client.task_queue)
            h.temporal = client
            async with h.worker():
                waiting = (await h.client.status(handle.id)).pending[0]
                assert [v.approver for v in waiting.approvals] == ["carol"]  # the vote survived
                await h.client.decide(handle.id, decision(request, "ivan"))
                result = await h.client.result(handle.id)
        assert result.approvals[0].approvers == ["carol", "ivan"]
        assert set(posted(h)) == {"ADJ-FEE", "ADJ-BIG"}
        assert len(postings(h)) == 2  # nothing posted twice across the restart
    finally:
        server.kill()
