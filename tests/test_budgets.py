"""A run's model budget in the governed processes (finance close, HR and customer onboarding):
the router refuses a call the run's budget cannot pay for, and a person holding the process's
budget role (policy/base/budget_raise.rego, policy/data/budget.json) decides. Real worker, dev
server, OPA evaluator, SQLite and the `openai` SDK against the scripted model server."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import select
from temporalio.client import WorkflowFailureError

from activities import spend
from activities.database import JournalPosting
from tests.conftest import Harness
from workflows.client import ApprovalRefused

#: Less than any model request costs: the first agent call is refused before it is sent.
TINY = {"run_usd": 0.000001}


def actions(h: Harness, workflow_id: str) -> list[str]:
    return [r.action for r in h.runtime.ledger.trail(workflow_id)]


def period_requests(h: Harness) -> list[dict[str, object]]:
    return [r for r in h.model.requests if h.period in str(r["raw"])]


async def test_a_refused_call_asks_the_budget_role_and_an_approval_lets_the_close_finish(
    harness: Harness,
) -> None:
    h = harness
    async with h.worker():
        handle, status = await h.start_close_until_pending(budget=TINY)
        [request] = status.pending
        assert request.action == "raise_model_budget"
        assert request.approver_roles == ["finance-controller"]
        assert "reconciler: budget exceeded" in request.summary
        assert "run budget 1e-06 USD, 0.0 spent" in request.summary
        assert period_requests(h) == []  # refused before anything was sent
        # the requester may not raise her own budget; a controller may
        with pytest.raises(ApprovalRefused, match="segregation of duties"):
            await h.client.approve(handle.id, approver="alice", rationale="mine")
        await h.client.approve(handle.id, approver="carol", rationale="month-end, go ahead")
        # the close goes on: the reconciler is asked now, and the big entry waits as usual
        status = await h.wait_for_pending(handle.id)
        while status.pending[0].action == "raise_model_budget":  # until the gate closes it
            await asyncio.sleep(0.1)
            status = await h.wait_for_pending(handle.id)
        await h.client.approve(handle.id, approver="carol", rationale="checked vs bank")
        result = await handle.result()
    assert result.posted
    assert {c.agent for c in spend.charges_of(h.db, handle.id)} >= {"reconciler"}
    trail = actions(h, handle.id)
    assert trail.count("budget.refused") == 1
    refused = next(r for r in h.runtime.ledger.trail(handle.id) if r.action == "budget.refused")
    assert json.loads(refused.detail_json)["step"] == "propose_adjustments"
    policy_rows = [r for r in h.runtime.ledger.trail(handle.id) if r.actor.endswith("budget_raise")]
    assert [r.action for r in policy_rows] == ["policy.require_approval"]
    assert trail.count("approval.approved") == 2  # the budget, then the entries


async def test_a_rejected_budget_fails_the_close_and_nothing_is_posted(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle, _ = await h.start_close_awaiting_approval(budget=TINY)
        await h.client.reject(handle.id, approver="frank", rationale="not worth it this month")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert getattr(cause, "type", None) == "ApprovalRejected"
    assert "raise the model budget" in str(cause)
    assert period_requests(h) == []
    with h.db.session() as s:
        assert s.exec(select(JournalPosting).where(JournalPosting.period == h.period)).all() == []
    assert "approval.rejected" in actions(h, handle.id)


async def test_each_process_asks_its_own_budget_role(harness: Harness) -> None:
    """HR onboarding's budget goes to an hr-partner (policy/data/budget.json)."""
    from tests.test_hr_onboarding import new_hire, start

    h = harness
    hire = new_hire(h)
    async with h.worker():
        handle = await h.client.start_onboarding(
            {**start(h, hire), "requested_by": "hr-portal", "budget": TINY}
        )
        async with asyncio.timeout(30):
            while not (pending := await h.client.pending_approvals(handle.id)):
                await asyncio.sleep(0.1)
        [request] = pending
        assert (request.action, request.approver_roles) == ("raise_model_budget", ["hr-partner"])
        assert request.eligible_approvers == ["hana"]  # one request for the 3 parallel agents
        await h.client.approve(handle.id, approver="hana", rationale="new hire, go ahead")
        async with asyncio.timeout(30):  # the agents ran: the manager's approval is next
            while not [
                p for p in await h.client.pending_approvals(handle.id) if p.action != request.action
            ]:
                await asyncio.sleep(0.1)
        await h.client.cancel(handle.id)
    assert actions(h, handle.id).count("budget.refused") == 1


async def test_the_cli_starts_a_close_with_a_run_budget_and_refuses_a_negative_one(
    harness: Harness,
) -> None:
    from tests.test_operations import run_cli

    h = harness
    common = [
        "close",
        "start",
        "--tenant",
        h.tenant,
        "--period",
        h.period,
        "--requested-by",
        "alice",
    ]
    bad = await run_cli(h, *common, "--run-budget", "-1")
    assert bad.returncode != 0
    assert "budget.run_usd" in bad.stderr and "greater than or equal to 0" in bad.stderr
    async with h.worker():
        started = await run_cli(h, *common, "--run-budget", "0.000001")
        assert started.returncode == 0, started.stderr
        workflow_id = f"finance-close/{h.tenant}/{h.period}"
        [request] = (await h.wait_for_pending(workflow_id)).pending
        assert request.action == "raise_model_budget"
        await h.client.cancel(workflow_id)
