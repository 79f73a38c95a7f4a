"""Customer onboarding's plan carried out by an agent that acts (the onboarding executor): the
entitlement API and the email sender as governed tools (activities/customer_tools.py), on the
real dev server, OPA's evaluator, a real database and the scripted model server over HTTP.

Unscripted turns of the executor are answered by the stand-in model's rules (carry out each
planned action once, in order); a scripted turn writes ``"$task.plan_id"`` for the plan's id.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from activities.customer import commits
from activities.tools import tool_calls_of
from tests.conftest import Harness
from tests.support import golden
from tests.support.scripted_model import Fault
from tests.test_customer_onboarding import customer_like, event
from tests.test_finance_close import failure_type
from workflows.contracts.customer import CustomerOnboardingInput
from workflows.customer_onboarding import CustomerOnboardingWorkflow

AGENT = "onboarding_executor"
MATCH = f"agent: {AGENT}"


def grant(key: str) -> tuple[str, dict[str, Any]]:
    return ("grant_customer_entitlement", {"plan_id": "$task.plan_id", "action_key": key})


def welcome() -> tuple[str, dict[str, Any]]:
    return ("send_welcome_email", {"plan_id": "$task.plan_id", "action_key": "intro_email"})


def told(h: Harness, turn: int) -> list[str]:
    """The tool messages the executor was shown on its ``turn``-th request (1-based)."""
    messages = h.model.turns(AGENT)[turn - 1]
    return [str(m.get("content")) for m in messages if m.get("role") == "tool"]


def audit(h: Harness, wid: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.action, json.loads(r.detail_json)) for r in h.runtime.ledger.trail(wid)]


async def onboard(h: Harness, template: str = "cust-umbrella", **overrides: Any) -> Any:
    customer = await customer_like(h, template)
    inp = CustomerOnboardingInput.from_event(event(h, customer)).model_copy(update=overrides)
    handle, _ = await h.client.start_customer_onboarding(inp)
    return customer, handle


async def test_the_plan_is_carried_out_through_governed_tool_calls(harness: Harness) -> None:
    """No script: the executor grants each entitlement and sends the welcome email through
    tools, every call allowed by tool policy and audited with its decision; the run's result is
    read from the CRM, not taken from the agent's word."""
    h = harness
    async with h.worker():
        customer, handle = await onboard(h)
        result = await handle.result()

    rows = commits(h.db, customer)
    assert [c.commit_id for c in result.committed] == [r.commit_id for r in rows]
    assert [r.kind for r in rows][:2] == ["discount", "intro_email"]
    calls = tool_calls_of(h.db, handle.id)
    assert sorted(c.tool for c in calls) == sorted(
        "send_welcome_email" if r.kind == "intro_email" else "grant_customer_entitlement"
        for r in rows
    )
    assert {c.verdict for c in calls} == {"allow"}
    trail = audit(h, handle.id)
    decided = [d["subject"] for a, d in trail if a == "policy.allow" and "call_id" in d]
    called = [d["tool"] for a, d in trail if a == "tool.called"]
    assert sorted(decided) == sorted(called) == sorted(c.tool for c in calls)
    # the customer policy is asked again inside each tool's transaction
    assert [d["subject"] for a, d in trail if a == "policy.allow" and "customer_id" in d][
        -len(rows) :
    ] == [r.action_key for r in rows]
    [done] = [d for a, d in trail if a == "customer_onboarding.carried_out"]
    assert done["committed"] == [r.action_key for r in rows] and done["missing"] == []
    assert done["tool_calls"] == len(rows) and done["denials"] == 0
    # each call is a named activity in the run's history (the Web UI shows the summary)
    summaries = [
        e.user_metadata.summary.data.decode()
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "call_tool"
    ]
    assert len(summaries) == len(rows)
    assert all("tool grant_customer_entitlement" in s or "tool send_welcome_email" in s
               for s in summaries)  # fmt: skip


async def test_a_call_policy_denies_is_told_to_the_model_which_adapts(harness: Harness) -> None:
    """The model sends the welcome email twice and asks for an entitlement the plan does not
    hold: policy denies the second email (one per run), the tool refuses the unknown action;
    the model reads both reasons and carries out the rest of the plan, each action once."""
    h = harness
    h.model.script(Fault.tool_calls(welcome(), welcome(), grant("discount-50")), match=MATCH)
    async with h.worker():
        customer, handle = await onboard(h)
        result = await handle.result()

    reasons = told(h, 2)
    assert any(
        r.startswith("policy denied the call of send_welcome_email: call limit") for r in reasons
    ), reasons
    assert any("'discount-50' is not an action of the plan" in r for r in reasons), reasons
    rows = commits(h.db, customer)
    assert sorted(r.action_key for r in rows) == sorted(c.key for c in result.committed)
    assert [r.kind for r in rows].count("intro_email") == 1
    verdicts = sorted(
        c.verdict for c in tool_calls_of(h.db, handle.id) if c.tool.startswith("send")
    )
    assert verdicts == ["allow", "deny"]
    trail = audit(h, handle.id)
    assert [d["subject"] for a, d in trail if a == "policy.deny"] == ["send_welcome_email"]
    [done] = [d for a, d in trail if a == "customer_onboarding.carried_out"]
    assert done["denials"] == 1 and done["missing"] == []


async def test_a_plan_left_unfinished_revokes_the_grants_in_reverse(harness: Harness) -> None:
    """The model grants two entitlements, then finishes without the rest: the run fails with
    PlanNotCarriedOut and the saga revokes the grants, the last one first, through the tools'
    compensations (revoke_customer_entitlement)."""
    h = harness
    h.model.script(
        Fault.tool_calls(grant("discount")),
        Fault.tool_calls(grant("task/1")),
        Fault.tool_calls(("final_answer", {"summary": "done", "carried_out": ["discount"]})),
        match=MATCH,
    )
    async with h.worker():
        customer, handle = await onboard(h)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await h.client.customer_onboarding_status(handle.id)

    assert failure_type(failed.value) == "PlanNotCarriedOut"
    rows = commits(h.db, customer)
    assert [r.action_key for r in rows] == ["discount", "task/1"]
    assert all(r.reverted_at is not None for r in rows)
    assert len(status.compensated) == 2
    trail = audit(h, handle.id)
    undone = [d for a, d in trail if a == "tool.compensated"]
    assert [u["tool"] for u in undone] == ["revoke_customer_entitlement"] * 2
    keys = {c.idempotency_key: c for c in tool_calls_of(h.db, handle.id)}
    assert [u["call_key"] for u in undone] == [r.idempotency_key for r in reversed(rows)] and set(
        keys
    ) >= {u["call_key"] for u in undone}
    assert [d["key"] for a, d in trail if a.startswith("crm.reverted.")] == ["task/1", "discount"]
    [carried] = [d for a, d in trail if a == "customer_onboarding.carried_out"]
    assert "intro_email" in carried["missing"]


async def test_runs_asking_for_the_old_path_commit_without_the_agent(harness: Harness) -> None:
    """plan_by_agent=False: the workflow commits each action itself (the path of runs started
    before the agent): no tool call, no executor turn."""
    h = harness
    async with h.worker():
        customer, handle = await onboard(h, plan_by_agent=False)
        result = await handle.result()
    assert tool_calls_of(h.db, handle.id) == []
    assert h.model.turns(AGENT) == []
    assert [r.commit_id for r in commits(h.db, customer)] == [c.commit_id for c in result.committed]


GOLDEN = golden.GOLDEN / "customer_onboarding_approved_by_agent.json"


async def test_a_recorded_agent_run_replays(harness: Harness) -> None:
    """A run of the agent path (the 15% discount approved, the plan carried out by the
    executor) recorded once, replayed on today's code: a change to the path's commands must be
    patched. Regenerate with BATON_REGENERATE_GOLDEN=1."""
    from tests.test_governed import _customer_run

    if golden.regenerating():
        async with harness.worker():
            handle = await _customer_run(harness)
        await golden.record(GOLDEN, handle)
    history = golden.load(GOLDEN, "golden-customer-agent")
    names = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert {"record_customer_plan", "agent_turn", "call_tool"} <= names
    assert "commit_customer_action" not in names
    await golden.assert_replays(history, CustomerOnboardingWorkflow)
