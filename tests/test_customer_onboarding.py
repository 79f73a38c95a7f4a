"""Customer onboarding (the brief's blueprint) on the real dev server: a CRM event starts the run
through the idempotent trigger, the dossier comes from the knowledge layer and the relation
store (real embeddings), the planner and specialists are agents over the openai SDK (the local
model server's rules), policy/customer/onboarding.rego decides residency, legal constraints and
discount limits on OPA's evaluator, a discount above the limit waits for a sales manager, and
every commit to the CRM is reverted when the run fails."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from activities.customer import CrmEventRow, commits, record_crm_event
from activities.knowledge import Embedder, KnowledgeBase
from baton.cli_customer import copy_seed_customer
from baton.crm_trigger import dispatch_new_customers
from tests.conftest import Harness
from tests.support import approvals, golden
from tests.support.approvals import first_pending
from tests.test_finance_close import failure_type
from workflows.client import ApprovalRefused
from workflows.contracts import ApprovalDecision, ApprovalRequest
from workflows.contracts.customer import CrmEvent, CustomerOnboardingInput
from workflows.customer_onboarding import CustomerOnboardingWorkflow


async def customer_like(h: Harness, template: str) -> str:
    """A copy of seed customer ``template`` (entities and CRM notes) under a fresh id, so each
    test has its own business key on the shared dev server (as `baton demo` does)."""
    kb = KnowledgeBase(h.db, h.runtime.ledger, Embedder(h.runtime.openai, "all-MiniLM-L6-v2"))
    return await copy_seed_customer(kb, h.tenant, template, uuid.uuid4().hex[:6])


def event(h: Harness, customer_id: str, **overrides: Any) -> CrmEvent:
    return CrmEvent.model_validate(
        {
            "event_id": f"crm-{uuid.uuid4().hex[:10]}",
            "tenant": h.tenant,
            "customer_id": customer_id,
            "hosting_region": "eu",
            "sanctions_screened": True,
            "occurred_at": datetime.now(UTC),
            **overrides,
        }
    )


async def wait_for_pending(h: Harness, workflow_id: str) -> ApprovalRequest:
    return await first_pending(lambda: h.client.customer_onboarding_status(workflow_id), 60)


def trail(h: Harness, workflow_id: str) -> list[tuple[str, dict[str, Any], str]]:
    return [
        (r.action, json.loads(r.detail_json), r.rationale)
        for r in h.runtime.ledger.trail(workflow_id)
    ]


def decision(request: ApprovalRequest, approver: str, **overrides: Any) -> ApprovalDecision:
    rationale = f"{approver}: the three-year commitment justifies it"
    return approvals.decision(request, approver, **{"rationale": rationale, **overrides})


async def test_happy_path_from_crm_event_to_commits_with_rationale_and_sources(
    harness: Harness,
) -> None:
    h = harness
    customer = await customer_like(h, "cust-umbrella")  # FR, eu, 5% requested: no exception
    assert record_crm_event(h.db, event(h, customer))
    async with h.worker():
        [started] = await dispatch_new_customers(h.client, h.db)
        assert started.started and started.workflow_id == f"customer-onboarding/acme/{customer}"
        result = await h.client.customer_onboarding(started.workflow_id).result()

    assert [s.kind for s in result.plan.steps] == [
        "intro_email",
        "discount_check",
        "onboarding_sequence",
    ]
    kinds = [c.kind for c in result.committed]
    assert kinds[:2] == ["discount", "intro_email"] and set(kinds[2:]) == {"onboarding_task"}
    assert not result.approvals and all(not c.approved_by for c in result.committed)
    rows = commits(h.db, customer)
    assert [r.commit_id for r in rows] == [c.commit_id for c in result.committed]
    assert all(r.reverted_at is None for r in rows)
    email = next(r for r in rows if r.kind == "intro_email")
    assert email.payload["to"] == "it@umbrella.example"  # the CRM contact, not the model's
    assert email.payload["subject"].startswith("Bienvenue chez Acme Insights")
    assert next(r for r in rows if r.kind == "discount").payload["pct"] == 5.0
    # the dossier: the customer's own CRM notes and the policies, with provenance in the trail
    assert {f"note-umbrella-outage-{customer[-6:]}", "pol-discounts"} <= set(result.sources)
    audit = trail(h, started.workflow_id)
    actions = [a for a, _, _ in audit]
    retrievals = [d for a, d, _ in audit if a == "knowledge.retrieved"]
    assert len(retrievals) == 2
    assert {s["doc_id"] for r in retrievals for s in r["sources"]} == set(result.sources)
    assert all(s["source"] and s["author"] for r in retrievals for s in r["sources"])
    [planned] = [(d, why) for a, d, why in audit if a == "customer_onboarding.planned"]
    assert "Umbrella SAS" in planned[1] and planned[0]["sources"] == result.sources
    assert actions.count("crm.committed.onboarding_task") == len(kinds) - 2
    # the plan check: the governed preflight audited policy's decision on every planned action
    checked = [d["subject"] for a, d, _ in audit if a == "policy.allow" and d.get("preflight")]
    assert sorted(checked) == sorted(c.key for c in result.committed)
    assert "customer_onboarding.completed" in actions
    assert {"agent.planned_customer_onboarding", "agent.assessed_discount"} <= set(actions)
    assert h.runtime.ledger.verify().ok
    with h.db.read_session() as s:
        row = s.get(CrmEventRow, started.event_id)
        assert row is not None and row.workflow_id == started.workflow_id


async def test_a_discount_above_the_limit_waits_for_a_sales_manager(harness: Harness) -> None:
    h = harness
    customer = await customer_like(h, "cust-globex")  # DE, eu, 15% for three years
    inp = CustomerOnboardingInput.from_event(event(h, customer))
    async with h.worker():
        handle, started = await h.client.start_customer_onboarding(inp)
        assert started
        request = await wait_for_pending(h, handle.id)
        assert [(r.role, r.count) for r in request.requirements] == [("sales-manager", 1)]
        assert request.candidates == {"sales-manager": ["oscar"]}
        assert "15% discount" in request.summary
        assert commits(h.db, customer) == []  # nothing is committed before the approval
        with pytest.raises(ApprovalRefused):
            await h.client.decide(handle.id, decision(request, "maya"))
        await h.client.decide(handle.id, decision(request, "oscar"))
        result = await handle.result()

    [approval] = result.approvals
    assert approval.outcome == "approved" and approval.approvers == ["oscar"]
    discount = next(c for c in result.committed if c.kind == "discount")
    assert discount.approved_by == ["oscar"]
    assert all(c.approved_by == [] for c in result.committed if c.kind != "discount")
    rows = commits(h.db, customer)
    assert next(r for r in rows if r.kind == "discount").approved_by == "oscar"
    email = next(r for r in rows if r.kind == "intro_email")
    assert email.payload["subject"].startswith("Willkommen bei Acme Insights")
    actions = [a for a, _, _ in trail(h, handle.id)]
    assert "approval.requested" in actions and "policy.require_approval" in actions


async def test_hosting_outside_the_customers_region_is_denied_before_any_commit(
    harness: Harness,
) -> None:
    h = harness
    customer = await customer_like(h, "cust-globex")
    inp = CustomerOnboardingInput.from_event(event(h, customer, hosting_region="us"))
    async with h.worker():
        handle, _ = await h.client.start_customer_onboarding(inp)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()

    assert failure_type(failed.value) == "PolicyDenied"
    assert "data residency" in str(failed.value.cause)
    assert commits(h.db, customer) == []
    denials = [d for a, d, _ in trail(h, handle.id) if a == "policy.deny"]
    assert denials and all(
        any(
            r.startswith(f"data residency: customer {customer} is in region 'eu'")
            for r in d["reasons"]
        )
        for d in denials
    )
    [failure] = [d for a, d, _ in trail(h, handle.id) if a == "customer_onboarding.failed"]
    assert failure["compensated"] == []


async def test_a_failure_after_committing_reverts_every_commit(harness: Harness) -> None:
    h = harness
    customer = await customer_like(h, "cust-umbrella")
    inp = CustomerOnboardingInput.from_event(event(h, customer)).model_copy(
        update={"fail_after_commits": True}
    )
    async with h.worker():
        handle, _ = await h.client.start_customer_onboarding(inp)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await h.client.customer_onboarding_status(handle.id)

    assert failure_type(failed.value) == "InjectedFailure"
    rows = commits(h.db, customer)
    assert len(rows) >= 3 and all(r.reverted_at is not None for r in rows)
    assert len(status.compensated) == len(rows)
    audit = trail(h, handle.id)
    reverted = [d["key"] for a, d, _ in audit if a.startswith("crm.reverted.")]
    assert sorted(reverted) == sorted(r.action_key for r in rows)
    [failure] = [d for a, d, _ in audit if a == "customer_onboarding.failed"]
    assert len(failure["compensated"]) == len(rows)


async def test_the_trigger_never_starts_a_second_run_for_a_customer(harness: Harness) -> None:
    h = harness
    customer = await customer_like(h, "cust-umbrella")
    first = event(h, customer)
    assert record_crm_event(h.db, first)
    assert not record_crm_event(h.db, first)  # the CRM delivered it again
    async with h.worker():
        [one] = await dispatch_new_customers(h.client, h.db)
        assert one.started
        assert await dispatch_new_customers(h.client, h.db) == []  # handled already
        # another event for the same customer (e.g. the CRM re-sent it under a new id)
        assert record_crm_event(h.db, event(h, customer))
        [two] = await dispatch_new_customers(h.client, h.db)
        assert not two.started and two.workflow_id == one.workflow_id
        result = await h.client.customer_onboarding(one.workflow_id).result()
        # ... also once the run has completed
        assert record_crm_event(h.db, event(h, customer))
        [three] = await dispatch_new_customers(h.client, h.db)
        assert not three.started and three.run_id == one.run_id

    runs = [w async for w in h.temporal.list_workflows(f"WorkflowId = '{one.workflow_id}'")]
    assert len(runs) == 1
    assert len(commits(h.db, customer)) == len(result.committed)
    with h.db.read_session() as s:
        stored = s.get(CrmEventRow, first.event_id)
        assert stored is not None and stored.deliveries == 2


async def test_bad_input_names_the_field(harness: Harness) -> None:
    h = harness
    with pytest.raises(ValueError, match="customer_id"):
        await h.client.start_customer_onboarding(
            {"tenant": h.tenant, "customer_id": "bad id!", "event_id": "e",
             "hosting_region": "eu", "sanctions_screened": True}
        )  # fmt: skip
    with pytest.raises(ValueError, match="sanctions_screened"):
        CrmEvent.model_validate(
            {"event_id": "e", "tenant": "acme", "customer_id": "c", "hosting_region": "eu",
             "occurred_at": datetime.now(UTC)}
        )  # fmt: skip


async def test_a_rejected_exception_commits_nothing(harness: Harness) -> None:
    h = harness
    customer = await customer_like(h, "cust-globex")
    inp = CustomerOnboardingInput.from_event(event(h, customer))
    async with h.worker():
        handle, _ = await h.client.start_customer_onboarding(inp)
        request = await wait_for_pending(h, handle.id)
        await h.client.decide(
            handle.id, decision(request, "oscar", verdict="reject", rationale="10% at most")
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()

    assert failure_type(failed.value) == "ApprovalRejected"
    assert commits(h.db, customer) == []
    [failure] = [d for a, d, _ in trail(h, handle.id) if a == "customer_onboarding.failed"]
    assert "10% at most" in failure["error"]


async def test_cli_records_an_event_triggers_and_approves(harness: Harness) -> None:
    from tests.test_operations import approve_by_cli, run_cli

    h = harness
    customer = await customer_like(h, "cust-globex")
    workflow_id = f"customer-onboarding/{h.tenant}/{customer}"
    recorded = await run_cli(h, "customer", "event", "--customer", customer, "--event-id", "e-1")
    assert recorded.returncode == 0 and "recorded CRM event e-1" in recorded.stdout
    again = await run_cli(h, "customer", "event", "--customer", customer, "--event-id", "e-1")
    assert "re-delivered" in again.stdout
    async with h.worker():
        triggered = await run_cli(h, "customer", "trigger")
        assert triggered.returncode == 0, triggered.stderr
        assert f"e-1: {workflow_id}: started" in triggered.stdout
        await wait_for_pending(h, workflow_id)
        status = await run_cli(h, "customer", "status", workflow_id)
        assert status.returncode == 0 and '"sales-manager"' in status.stdout
        await approve_by_cli(h, workflow_id, "oscar", "3-year deal")
        result = await run_cli(h, "customer", "result", workflow_id)
    assert result.returncode == 0, result.stderr
    assert "discount: 15% discount on ctr-globex-2026" in result.stdout
    assert "(approved by oscar)" in result.stdout and "sources: note-globex" in result.stdout


async def test_the_kill_switch_holds_commits_until_cleared(harness: Harness) -> None:
    """agent:intro_email_writer stops the email that agent wrote from being sent; clearing
    resumes the run, which then commits it."""
    import asyncio

    from activities.kill_switch import KillSwitch

    h = harness
    customer = await customer_like(h, "cust-globex")
    switch = KillSwitch(h.db, h.runtime.ledger)
    inp = CustomerOnboardingInput.from_event(event(h, customer))
    async with h.worker():
        handle, _ = await h.client.start_customer_onboarding(inp)
        request = await wait_for_pending(h, handle.id)  # every agent has answered
        switch.engage("agent:intro_email_writer", reason="email template review", by="ops")
        await h.client.decide(handle.id, decision(request, "oscar"))
        async with asyncio.timeout(60):
            while "kill_switch.held" not in [a for a, _, _ in trail(h, handle.id)]:
                await asyncio.sleep(0.2)
        # the discount (another agent's output) is committed; the email waits
        assert [r.kind for r in commits(h.db, customer)] == ["discount"]
        switch.clear("agent:intro_email_writer", reason="template fixed", by="ops")
        assert handle.id in await h.client.release_held()
        result = await handle.result()
    assert "intro_email" in [c.kind for c in result.committed]
    assert "kill_switch.released" in [a for a, _, _ in trail(h, handle.id)]


GOLDEN = golden.GOLDEN / "customer_onboarding_approved_by_preflight.json"


async def test_a_recorded_run_checking_its_plan_by_preflight_replays(harness: Harness) -> None:
    """A run whose plan check is the governed preflight (patch
    ``customer-plan-check-by-preflight``: ``evaluate_policies``, not ``check_customer_plan``;
    the 15% discount approved, the plan carried out by the executor) recorded once, replayed on
    today's code. Regenerate with BATON_REGENERATE_GOLDEN=1."""
    from tests.test_governed import _customer_run

    if golden.regenerating():
        async with harness.worker():
            handle = await _customer_run(harness)
        await golden.record(GOLDEN, handle)
    history = golden.load(GOLDEN, "golden-customer-preflight")
    scheduled = [e.activity_task_scheduled_event_attributes for e in history.events]
    names = {s.activity_type.name for s in scheduled}
    assert "evaluate_policies" in names and "check_customer_plan" not in names
    await golden.assert_replays(history, CustomerOnboardingWorkflow)
