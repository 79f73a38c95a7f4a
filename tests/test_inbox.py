"""The approver inbox below the browser: comments and delegation in a real workflow (the
Updates comment_approval and delegate_approval, policy baton/base/delegation), their history
replaying, the amend form generated from the amendment schema, notification deep links, and the
inbox's settings. The pages themselves are tested in Chromium (tests/test_inbox_browser.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from activities.database import NotificationOutbox
from activities.notify import with_link
from baton.inbox.auth import Viewer
from baton.inbox.backend import InboxBackend, refusal_for
from baton.inbox.forms import parse_amendments, schema_fields
from baton.settings import Settings
from tests.conftest import Harness
from tests.support import golden
from tests.support.approvals import fee_request
from tests.test_approvals import script_entries
from workflows.contracts import (
    ApprovalRequest,
    ApprovalRequirement,
    Notification,
    PendingApproval,
)
from workflows.finance_close import FinanceCloseWorkflow
from workflows.signed_approval import VerifiedIdentity

GOLDEN = golden.GOLDEN / "finance_close_commented_delegated.json"
BIG = ("ADJ-BIG", "6100-bank-fees", "-1500.00")


def viewer(name: str, *roles: str) -> Viewer:
    return Viewer(VerifiedIdentity(subject=name, roles=roles, key_id="k", token_id=None), "")


#: the close's requester, two finance-controllers and an accountant who may not approve
ALICE = viewer("alice", "accountant")
CAROL = viewer("carol", "finance-controller")
FRANK = viewer("frank", "finance-controller")
ERIN = viewer("erin", "accountant")


async def comment_delegate_approve(h: Harness, backend: InboxBackend) -> str:
    """A close where the requester comments, carol delegates to frank, frank approves."""
    script_entries(h, BIG)
    handle, request = await h.start_close_awaiting_approval()
    ids = {"request_id": request.request_id, "action_digest": request.action_digest}
    said = await backend.comment(ALICE, handle.id, text="urgent", **ids)
    assert said.accepted, said.message
    handed = await backend.delegate(CAROL, handle.id, delegate="frank", rationale="on leave", **ids)
    assert handed.accepted, handed.message
    done = await backend.decide(FRANK, handle.id, verdict="approve", rationale="checked", **ids)
    assert done.accepted, done.message
    await handle.result()
    return handle.id


async def test_comments_and_delegation_in_a_run(harness: Harness) -> None:
    h = harness
    backend = InboxBackend(h.temporal, trust=None, tokens=None, task_queue=h.client.task_queue)
    script_entries(h, BIG)
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        ids = {"request_id": request.request_id, "action_digest": request.action_digest}

        stranger = await backend.comment(viewer("mallory"), handle.id, text="hi", **ids)
        assert not stranger.accepted
        assert "mallory may not comment on" in stranger.message
        ok = await backend.comment(CAROL, handle.id, text="which vendor?", **ids)
        assert ok.accepted
        stale = await backend.comment(
            CAROL, handle.id, text="x", request_id=request.request_id, action_digest="0" * 64
        )
        assert "action digest mismatch" in stale.message

        # who may receive a delegation is policy's answer, audited
        to_requester = await backend.delegate(
            CAROL, handle.id, delegate="alice", rationale="r", **ids
        )
        assert not to_requester.accepted
        assert "segregation of duties: alice requested this action" in to_requester.message
        by_stranger = await backend.delegate(
            ERIN, handle.id, delegate="frank", rationale="r", **ids
        )
        assert "erin may not delegate" in by_stranger.message

        handed = await backend.delegate(CAROL, handle.id, delegate="frank", rationale="away", **ids)
        assert handed.accepted and "carol delegated" in handed.message
        [pending] = await h.client.pending_approvals(handle.id)
        assert [c.text for c in pending.comments] == ["which vendor?"]
        assert [(d.from_approver, d.to) for d in pending.delegations] == [("carol", "frank")]
        assert "carol" not in pending.eligible_approvers
        [item] = await backend.pending()
        assert item.line.comments == 1 and item.line.delegated_to == {"frank": "carol"}
        assert refusal_for(CAROL, item.line) == "you delegated this request to frank"
        assert refusal_for(FRANK, item.line) is None

        refused = await backend.decide(CAROL, handle.id, verdict="approve", rationale="r", **ids)
        assert not refused.accepted
        assert "carol delegated" in refused.message and "no longer decides" in refused.message
        approved = await backend.decide(
            FRANK, handle.id, verdict="approve", rationale="vendor known", **ids
        )
        assert approved.accepted
        result = await handle.result()
    assert result.approvals[0].approvers == ["frank"]
    trail = h.runtime.ledger.trail(handle.id)
    actions = [r.action for r in trail]
    assert actions.count("approval.comment") == 1
    assert actions.count("approval.delegation_refused") == 1
    assert actions.count("approval.delegated") == 1
    delegated = next(r for r in trail if r.action == "approval.delegated")
    detail = json.loads(delegated.detail_json)
    assert detail["delegate"] == "frank" and detail["policy_decision"]
    # the delegate is notified; every notification links to the request's inbox page
    with h.db.session() as session:
        outbox = session.exec(
            select(NotificationOutbox).where(NotificationOutbox.workflow_id == handle.id)
        ).all()
    by_kind = {n.kind: n for n in outbox}
    assert by_kind["approval.delegated"].recipients == ["frank"]
    page = f"{h.settings.inbox_url}/requests/{request.request_id}?workflow="
    assert all(str(n.payload["link"]).startswith(page) for n in outbox)
    assert await backend.pending() == []


async def test_history_with_comments_and_a_delegation_replays(harness: Harness) -> None:
    """A committed history of a close with a comment, a delegation and an approval from the
    inbox replays on the current code (regenerate with BATON_REGENERATE_GOLDEN=1)."""
    h = harness
    if golden.regenerating():
        backend = InboxBackend(h.temporal, trust=None, tokens=None)
        async with h.worker():
            workflow_id = await comment_delegate_approve(h, backend)
        await golden.record(GOLDEN, h.temporal.get_workflow_handle(workflow_id))
    history = golden.load(GOLDEN, "golden-commented-delegated")
    events = json.loads(GOLDEN.read_text())["events"]
    updates = [
        e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["name"]
        for e in events
        if "workflowExecutionUpdateAcceptedEventAttributes" in e
    ]
    assert updates == ["comment_approval", "delegate_approval", "decide_approval"]
    await golden.assert_replays(history, FinanceCloseWorkflow)


# -- the amend form --------------------------------------------------------------------------


def entry_request() -> ApprovalRequest:
    return fee_request(
        "ADJ-A",
        "-1500.00",
        "A",
        requirements=[ApprovalRequirement(role="finance-controller")],
        approver_roles=["finance-controller"],
        eligible_approvers=["carol"],
    )


def test_the_amend_form_follows_the_amendment_schema() -> None:
    fields = {f.name: f for f in schema_fields()}
    assert set(fields) == {"amount", "account"}
    assert fields["amount"].input_type == "number"
    assert fields["account"].input_type == "text" and fields["account"].max_length


def test_amendments_are_validated_before_anything_is_sent() -> None:
    request = entry_request()
    changes, errors = parse_amendments(request, {"amend.ADJ-A.amount": ["-900.00"]})
    assert changes == [{"entry_id": "ADJ-A", "amount": "-900.00"}] and errors == {}
    _, errors = parse_amendments(request, {"amend.ADJ-A.amount": ["lots"]})
    assert list(errors) == ["amend.ADJ-A.amount"]
    assert errors["amend.ADJ-A.amount"].startswith("ADJ-A amount:")
    _, errors = parse_amendments(
        request, {"amend.ADJ-A.amount": ["-1500"], "amend.ADJ-A.account": ["6100-bank-fees"]}
    )
    assert "nothing differs" in errors["amend"]
    _, errors = parse_amendments(request, {"amend.ADJ-A.account": ["x" * 500]})
    assert "ADJ-A account:" in errors["amend.ADJ-A.account"]


# -- read-only reasons, deep links, settings ---------------------------------------------------


def line(**overrides: object) -> PendingApproval:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "workflow_id": "finance-close/acme/2026-10",
        "process": "finance_close",
        "request_id": "apr-1",
        "summary": "s",
        "total_amount": "1500",
        "requested_by": "alice",
        "requested_at": now,
        "deadline": now,
        "approver_roles": ["finance-controller"],
        "eligible_approvers": ["carol", "frank"],
        "still_needed": [{"role": "finance-controller", "count": 1}],
        "approved_by": [],
        "escalation_level": 0,
        "action_digest": "d" * 64,
    }
    return PendingApproval.model_validate(fields | overrides)


def test_read_only_reasons_mirror_the_validator() -> None:
    assert refusal_for(CAROL, line()) is None
    assert "you requested this action" in str(refusal_for(ALICE, line()))
    assert "policy does not allow you" in str(refusal_for(ERIN, line()))
    done = line(approved_by=["carol"])
    assert "already approved" in str(refusal_for(CAROL, done))


def test_notifications_carry_the_request_page() -> None:
    note = Notification(
        kind="approval.requested",
        workflow_id="finance-close/acme/2026-10",
        request_id="apr-1",
        process="finance_close",
        summary="s",
        roles=["finance-controller"],
        recipients=["carol"],
        idempotency_key="k",
    )
    linked = with_link(note, "http://inbox.example:8240/")
    assert linked.link == (
        "http://inbox.example:8240/requests/apr-1?workflow=finance-close%2Facme%2F2026-10"
    )
    assert with_link(note, None).link is None
    alert = note.model_copy(update={"kind": "supervisor.alert"})
    assert with_link(alert, "http://inbox.example:8240").link is None


def test_inbox_settings_are_checked() -> None:
    settings = Settings.from_env({"BATON_INBOX_PORT": "9100"})
    assert settings.inbox_port == 9100 and settings.inbox_url == "http://localhost:9100"
    with pytest.raises(ValueError, match="BATON_INBOX_PORT must be a port number"):
        Settings.from_env({"BATON_INBOX_PORT": "many"})
    with pytest.raises(ValueError, match="BATON_INBOX_URL"):
        Settings.from_env({"BATON_INBOX_URL": "inbox.example"})


async def test_the_interactive_demo_waits_for_a_person_in_the_inbox(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """`baton demo --interactive`: a step prints the request's inbox page and waits; the
    person's decision from the inbox finishes the run (the demo approves nothing itself)."""
    from baton.demo import PEOPLE_DECIDE, finish_run
    from tests.test_hr_onboarding import new_hire, start, wait_for_pending

    h = harness
    backend = InboxBackend(h.temporal, trust=None, tokens=None)
    hire = new_hire(h)
    async with h.worker():
        handle = await h.client.start_onboarding(start(h, hire))
        context = PEOPLE_DECIDE.set("http://localhost:8240")
        try:
            finishing = asyncio.create_task(
                finish_run(h.client, h.settings, handle.id, approver="maya", rationale="r")
            )
            request = await wait_for_pending(h, handle.id)
            async with asyncio.timeout(10):
                while f"/requests/{request.request_id}?workflow=" not in capsys.readouterr().out:
                    await asyncio.sleep(0.1)
            assert not finishing.done()
            decided = await backend.decide(
                viewer("maya", "engineering-manager"),
                handle.id,
                request_id=request.request_id,
                verdict="approve",
                rationale="from the inbox",
                action_digest=request.action_digest,
            )
            assert decided.accepted
            lines = await asyncio.wait_for(finishing, 60)
        finally:
            PEOPLE_DECIDE.reset(context)
        result = await handle.result()
    assert lines == [f"{request.request_id} decided by a person"]
    assert any(g.approved_by == ["maya"] for g in result.granted)


def test_overdue_requests_come_first_then_the_least_sla_left() -> None:
    from datetime import timedelta

    from baton.inbox.backend import InboxItem, sort_key

    now = datetime.now(UTC)
    items = [
        InboxItem(line(request_id=rid, deadline=now + timedelta(hours=h)), "acme", "", "r")
        for rid, h in [("later", 30), ("overdue-1h", -1), ("soon", 2), ("overdue-2d", -48)]
    ]
    ordered = [i.line.request_id for i in sorted(items, key=lambda i: sort_key(i, now))]
    assert ordered == ["overdue-2d", "overdue-1h", "soon", "later"]
