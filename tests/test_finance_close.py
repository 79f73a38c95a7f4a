"""The finance close end to end: real dev server, real openai SDK over HTTP, real OPA evaluator,
real database. Each test asserts what a controller would notice: what was posted, what was
reversed, what the audit trail says."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from sqlmodel import select
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from activities import spend
from activities.database import AccountingPeriod, JournalPosting, from_cents
from activities.seed import seed_period
from baton.settings import REPO_ROOT
from tests.conftest import Harness
from tests.support.approvals import decision
from tests.support.scripted_model import Fault
from workflows import visibility
from workflows.client import ApprovalRefused, ProcessAlreadyStarted
from workflows.contracts import ApprovalDecision


def postings(h: Harness) -> list[JournalPosting]:
    with h.db.session() as s:
        return list(s.exec(select(JournalPosting).where(JournalPosting.period == h.period)).all())


def period_status(h: Harness) -> str:
    with h.db.session() as s:
        row = s.get(AccountingPeriod, (h.tenant, h.period))
        assert row is not None
        return row.status


def net_by_entry(rows: list[JournalPosting]) -> dict[str, Decimal]:
    net: Counter[str] = Counter()
    for r in rows:
        net[r.entry_id] += r.amount_cents
    return {k: from_cents(v) for k, v in net.items()}


def actions(h: Harness, workflow_id: str) -> list[str]:
    return [r.action for r in h.runtime.ledger.trail(workflow_id)]


def failure_type(err: WorkflowFailureError) -> str | None:
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    return cause.type if cause else None


async def test_happy_path_with_approval(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, status = await h.start_close_until_pending()
        request = status.pending[0]
        # entries below the threshold were posted before the approval; big ones wait
        auto_posted = {p.entry_id for p in status.posted}
        assert auto_posted and all(abs(p.amount) < 1000 for p in status.posted)
        flagged = {f.entry_id for f in request.compliance_findings}
        assert all(abs(e.amount) >= 1000 or e.entry_id in flagged for e in request.entries)
        assert any(abs(e.amount) >= 1000 for e in request.entries)
        assert request.eligible_approvers and "alice" not in request.eligible_approvers
        assert (await h.client.execution_status(handle.id)).name == "RUNNING"

        ack = await h.client.approve(
            handle.id,
            approver="carol",
            rationale="checked vs bank",
            action_digest=request.action_digest,
        )
        assert ack.accepted
        result = await handle.result()

    rows = postings(h)
    assert len(rows) == len(result.posted) == len(auto_posted) + len(request.entries)
    assert len({r.idempotency_key for r in rows}) == len(rows)  # nothing posted twice
    assert {r.entry_id for r in rows if r.approved_by == "carol"} == {
        e.entry_id for e in request.entries
    }
    assert period_status(h) == "closed"
    assert result.tokens > 0 and result.cost_usd > 0
    assert "Close memo" in result.memo or h.period in result.memo

    trail = h.runtime.ledger.trail(handle.id)
    approved = [r for r in trail if r.action == "approval.approved"]
    assert len(approved) == 1 and approved[0].actor == "carol"
    # the rationale is written once, on the vote (the approval row points to it)
    [vote] = [r for r in trail if r.action == "approval.vote"]
    assert vote.rationale == "checked vs bank" and approved[0].rationale == ""
    assert sum(r.action == "ledger.posted" for r in trail) == len(rows)
    assert [r for r in trail if r.model and r.tokens > 0]  # tokens recorded per agent call
    assert h.runtime.ledger.verify().ok

    # the approval's audit rows ride with the first approved posting: written in its
    # transaction, just before it, with no audit activity between the decision and the posting
    # (the request's notification to its approvers runs on its own and may be scheduled in the
    # same workflow task as the decision, when the decision comes first: it is no audit step)
    first_approved = next(
        r.position
        for r in trail
        if r.action == "ledger.posted" and json.loads(r.detail_json)["approved_by"] == "carol"
    )
    assert approved[0].position < first_approved
    history = await handle.fetch_history()
    after_update = False
    scheduled = []
    for event in history.events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            after_update = True
        elif after_update and event.HasField("activity_task_scheduled_event_attributes"):
            scheduled.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    assert [name for name in scheduled if name != "notify"][0] == "post_journal_entry", scheduled


async def test_rejection_reverses_postings_and_audit_says_why(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, status = await h.start_close_until_pending()
        assert status.posted, "small entries are posted before the approval"
        await h.client.reject(
            handle.id, approver="carol", rationale="suspense items need an explanation first"
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "ApprovalRejected"
    rows = postings(h)
    assert rows and all(net == 0 for net in net_by_entry(rows).values())  # all reversed
    assert sum(r.reverses_posting_id is not None for r in rows) == len(status.posted)
    assert period_status(h) == "open"
    trail = h.runtime.ledger.trail(handle.id)
    rejected = [r for r in trail if r.action == "approval.rejected"]
    assert rejected and rejected[0].rationale == "suspense items need an explanation first"
    assert sum(r.action == "ledger.reversed" for r in trail) == len(status.posted)
    assert trail[-1].action == "close.failed"


async def test_policy_deny_posts_nothing(harness: Harness) -> None:
    """Issue 16 changed this deliberately: a denied entry no longer fails the close. It is held
    as an exception (never posted, listed in the result); below the close-exceptions threshold
    the period closes with it listed (tests/test_close_exceptions.py has the other outcomes)."""
    h = harness
    bad = {
        "entries": [
            {
                "entry_id": "ADJ-X1",
                "account": "9999-crypto-wallet",
                "amount": "-250.00",
                "source_ids": ["B0001"],
                "rationale": "move cash to a wallet",
            }
        ]
    }
    # a complete answer (every other item waived with a reason), with one forbidden account
    h.model.script(Fault.reconciled(bad), match=h.period)
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        result = await handle.result()
    [held] = result.exceptions
    assert held.entry_id == "ADJ-X1" and "9999-crypto-wallet" in " ".join(held.reasons)
    assert result.posted == []
    assert postings(h) == []
    assert "policy.deny" in actions(h, handle.id)


async def test_cancel_while_waiting_for_approval_compensates(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, status = await h.start_close_until_pending()
        await h.client.cancel(handle.id)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, CancelledError)
    rows = postings(h)
    assert len(rows) == 2 * len(status.posted)
    assert all(net == 0 for net in net_by_entry(rows).values())
    assert actions(h, handle.id)[-1] == "close.cancelled"
    assert "approval.withdrawn" in actions(h, handle.id)
    # the Web UI's "pending approvals" filter no longer lists the cancelled run
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(visibility.APPROVAL_STATE) == "withdrawn"
    assert attrs.get(visibility.PENDING_ROLES) is None


async def test_search_attributes_are_written_only_when_they_change(harness: Harness) -> None:
    """The Web UI list shows a client-started close as low risk with nothing spent from its
    first second, and the run's history records a search-attribute event only for a value that
    changed: process, tenant, version and shadow were set at start and are never written again."""
    h = harness
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        first = (await handle.describe()).typed_search_attributes
        await h.wait_for_pending(handle.id)
        waiting = (await handle.describe()).typed_search_attributes
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        result = await handle.result()
    assert first.get(visibility.RISK) == "low"
    assert first.get(visibility.COST_USD) == 0.0 and first.get(visibility.TOKENS) == 0
    assert waiting.get(visibility.RISK) == "medium"
    assert waiting.get(visibility.APPROVAL_STATE) == "pending"
    assert waiting.get(visibility.TOKENS) > 0  # the reconciler's call is already counted
    final = (await handle.describe()).typed_search_attributes
    assert final.get(visibility.TOKENS) == result.tokens

    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    values = dict(started.search_attributes.indexed_fields)
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert upserts, "the approval state and the cost do change"
    for fields in upserts:
        for name, payload in fields.items():
            assert values.get(name) != payload, f"{name} written again unchanged"
            values[name] = payload
    written = {name for fields in upserts for name in fields}
    assert not written & {"BatonProcess", "BatonTenant", "BatonVersion", "BatonShadow"}


async def test_llm_429_is_retried_and_posts_once(harness: Harness) -> None:
    h = harness
    h.model.script(Fault.status(429, retry_after=0.2), match=h.period)
    async with h.worker():
        handle, status = await h.start_close_until_pending()
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        result = await handle.result()
    calls = [r for r in h.model.requests if h.period in r["raw"]]
    reconciler = [r for r in calls if r["agent"] == "reconciler"]
    assert len(reconciler) == 2 and reconciler[0]["fault"] is not None
    rows = postings(h)
    assert len(rows) == len(result.posted) == len(status.posted) + len(status.pending[0].entries)


async def test_malformed_llm_output_fails_clearly_after_bounded_retries(harness: Harness) -> None:
    h = harness
    # the cheap model answers garbage, then garbage again in its repair turn; the strong one
    # (config/models.json routes the reconciler) too: the step fails at once, non-retryable
    # (another attempt would ask the same models the same thing)
    h.model.script(*[Fault.malformed()] * 4, match=h.period)
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "AgentOutputInvalid"
    assert "reconciler" in str(failed.value.cause.cause)
    asked = [r for r in h.model.requests if h.period in r["raw"]]
    assert [r["body"]["model"] for r in asked] == [
        "baton-rules-small", "baton-rules-small", "baton-rules-large", "baton-rules-large",
    ]  # fmt: skip
    assert postings(h) == []
    # every request that was made is charged, at the price of the model that answered
    charges = spend.charges_of(h.db, handle.id)
    assert [(c.attempt, c.model, c.outcome) for c in charges] == [
        (1, model, "invalid_output")
        for model in ("baton-rules-small", "baton-rules-small")
        + ("baton-rules-large", "baton-rules-large")
    ]


async def test_the_runs_cost_counts_every_charged_request_of_a_retried_agent_call(
    harness: Harness,
) -> None:
    h = harness
    # the cheap model answers garbage twice (its answer and its repair turn, both charged);
    # the strong model's answer is good
    h.model.script(Fault.malformed(), Fault.malformed(), match="agent: reconciler")
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        result = await handle.result()
        described = await handle.describe()
    charges = spend.charges_of(h.db, handle.id)
    assert [(c.attempt, c.model, c.outcome) for c in charges if c.agent == "reconciler"] == [
        (1, "baton-rules-small", "invalid_output"),
        (1, "baton-rules-small", "invalid_output"),
        (1, "baton-rules-large", "ok"),
    ]
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in charges)
    cost = sum(c.cost_usd for c in charges)
    assert charges[0].cost_usd > 0  # the garbage was paid for, and the run says so
    assert result.tokens == tokens and result.cost_usd == pytest.approx(cost)
    attributes = described.typed_search_attributes
    assert attributes.get(visibility.TOKENS) == tokens
    assert attributes.get(visibility.COST_USD) == pytest.approx(cost)


async def test_approval_validator_refuses_bad_decisions(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()

        def decision(**kw: str) -> ApprovalDecision:
            base = {
                "request_id": request.request_id,
                "approver": "carol",
                "verdict": "approve",
                "rationale": "ok",
                "action_digest": request.action_digest,
            }
            return ApprovalDecision.model_validate({**base, **kw})

        cases = {
            "digest mismatch": decision(action_digest="0" * 64),
            "segregation of duties": decision(approver="alice"),
            "may not decide": decision(approver="erin"),
            "unknown approval request": decision(request_id="apr-nope"),
        }
        for expected, bad in cases.items():
            with pytest.raises(ApprovalRefused, match=expected):
                await h.client.decide(handle.id, bad)
        # a refused signal is recorded, never acted on
        await h.client.handle(handle.id).signal("submit_approval", decision(approver="erin"))
        await h.client.approve(handle.id, approver="carol", rationale="fine")
        with pytest.raises(ApprovalRefused, match="already closed"):
            await h.client.decide(handle.id, decision(approver="frank"))
        await handle.result()
    every_refusal = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "approval.refused"]
    # refused Updates are audited too (issue 16), by the worker: they never enter history
    by_update = [r for r in every_refusal if json.loads(r.detail_json)["via"] == "update"]
    assert len(by_update) >= len(cases)
    assert all(r.actor == "baton:workflow" for r in by_update)
    refused = [r for r in every_refusal if json.loads(r.detail_json)["via"] == "signal"]
    assert len(refused) == 1 and refused[0].actor == "baton:workflow"  # a name is only a claim
    assert refused[0].rationale.startswith("claimed by erin (unverified): ")


async def test_signal_approval_works_like_the_update(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, request = await h.start_close_awaiting_approval()
        await handle.signal(
            "submit_approval",
            decision(request, "dave", rationale="signed off"),
        )
        result = await handle.result()
    assert result.approvals[0].approvers == ["dave"]


async def test_invalid_start_input_names_the_field_and_starts_nothing(harness: Harness) -> None:
    h = harness
    with pytest.raises(ValidationError) as err:
        await h.client.start_finance_close(h.start_input(period="2026-13"))
    assert "period" in str(err.value) and "YYYY-MM" in str(err.value)
    with pytest.raises(ValidationError, match="tenant"):
        await h.client.start_finance_close(h.start_input(tenant="Not A Name!"))
    ids = [w.id async for w in h.temporal.list_workflows(f"TaskQueue = '{h.client.task_queue}'")]
    assert ids == []


async def test_second_start_of_the_same_period_is_refused_or_joined(harness: Harness) -> None:
    h = harness
    async with h.worker():
        first = await h.client.start_finance_close(h.start_input())
        with pytest.raises(ProcessAlreadyStarted, match=first.id):
            await h.client.start_finance_close(h.start_input(requested_by="bob"))
        joined = await h.client.start_finance_close(h.start_input(), join_existing=True)
        assert joined.result_run_id == first.result_run_id
        await h.wait_for_pending(first.id)
        await h.client.approve(first.id, approver="carol", rationale="ok")
        await first.result()
        # a completed close cannot be started again
        with pytest.raises(ProcessAlreadyStarted):
            await h.client.start_finance_close(h.start_input())
    assert len({r.idempotency_key for r in postings(h)}) == len(postings(h))


async def test_failure_after_posting_reverses_everything(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, _ = await h.start_close_awaiting_approval(fail_after_posting=True)
        await h.client.approve(handle.id, approver="carol", rationale="ok")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "InjectedFailure"
    rows = postings(h)
    assert rows and all(net == 0 for net in net_by_entry(rows).values())
    assert period_status(h) == "open"


async def test_close_through_opa_rest_server_and_postgres(
    temporal_client: Any, model_server: Any, pg_database: str
) -> None:
    """The production shape: a real OPA REST API (opa-python-client) and PostgreSQL."""
    from baton.devstack.opa_server import OpaCompatibleServer
    from tests.conftest import make_settings
    from worker import build_runtime, build_worker
    from workflows.client import BatonClient

    opa = OpaCompatibleServer(REPO_ROOT / "policy")
    port = opa.start("127.0.0.1", 0)
    settings = make_settings(pg_database, model_server, opa_url=f"http://127.0.0.1:{port}")
    runtime = build_runtime(settings)
    period = "2999-10"
    seed_period(runtime.db, "globex", period)
    client = BatonClient(temporal_client, task_queue=f"tq-{uuid.uuid4().hex[:12]}")
    try:
        async with build_worker(temporal_client, runtime, task_queue=client.task_queue):
            handle = await client.start_finance_close(
                {"tenant": "globex", "period": period, "requested_by": "alice"}
            )
            async with asyncio.timeout(30):
                while not (await client.status(handle.id)).pending:
                    await asyncio.sleep(0.1)
            await client.approve(handle.id, approver="frank", rationale="ok")
            result = await handle.result()
        trail = runtime.ledger.trail(handle.id)
        engines = {
            json.loads(r.detail_json)["engine"] for r in trail if r.action.startswith("policy.")
        }
        assert engines == {"opa-rest"}
        with runtime.db.session() as s:
            rows = s.exec(select(JournalPosting).where(JournalPosting.period == period)).all()
        assert len(rows) == len(result.posted) and rows
        assert runtime.ledger.verify().ok
    finally:
        await runtime.close()
        opa.stop()
