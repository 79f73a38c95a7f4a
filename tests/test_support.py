"""Customer-support escalation against the real dev server: cases routed over the model catalogue
(the scripted model server stands in for the endpoints), the ticket policy in front of the
ticketing system, support-lead approvals, budgets that go to a human, SLA breaches, and the
durable priority-queue coordinator (Updates, continue-as-new)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import spend
from activities.audit import AuditRecord
from activities.knowledge import Embedder, KnowledgeBase
from activities.support import SupportTicket, support_articles, ticket_of, ticket_updates
from tests.conftest import Harness, _harness
from tests.support.approvals import pending_approvals
from tests.support.scripted_model import ScriptedModelServer
from tests.test_router import catalogue
from workflows.contracts import ApprovalRequest
from workflows.contracts.support import (
    ENQUEUE_CASE_SIGNAL,
    SupportCase,
    SupportCaseInput,
    SupportCoordinatorInput,
    TicketUpdateInput,
)
from workflows.support import case_workflow_id
from workflows.support_client import CaseRefused, SupportClient


@pytest.fixture
async def h(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    model_server.reset()
    path = tmp_path / "models.json"
    path.write_text(json.dumps(support_catalogue(model_server)))
    async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as hh:
        # The researcher reads the knowledge layer (real embeddings from the model server).
        await knowledge_base(hh).ingest(support_articles(hh.settings.support_articles, hh.tenant))
        yield hh
    model_server.reset()


def support_catalogue(server: ScriptedModelServer) -> dict[str, Any]:
    """The router test's catalogue, whose models also serve the turns of an agent that acts
    (task class ``act``: the L2 researcher acts by default)."""
    spec = catalogue(server)
    for m in spec["models"]:
        m["capabilities"] = [*m["capabilities"], "tool_use"]
    spec["task_classes"]["act"] = {"capability": "tool_use"}
    return spec


def knowledge_base(h: Harness) -> KnowledgeBase:
    return KnowledgeBase(
        h.db, h.runtime.ledger, Embedder(h.runtime.openai, h.settings.embedding_model)
    )


def case(h: Harness, **overrides: Any) -> SupportCase:
    return SupportCase.model_validate(
        {
            "case_id": f"C-{uuid.uuid4().hex[:8]}",
            "tenant": h.tenant,
            "customer": "Initech",
            "customer_value_usd": 1200,
            "subject": "Refund",
            "body": "Please refund invoice 4411, I was charged twice this month",
            "priority": "P3",
            **overrides,
        }
    )


async def pending(h: Harness, workflow_id: str) -> ApprovalRequest:
    return (await pending_approvals(h, workflow_id))[0]


def audit_actions(h: Harness, workflow_id: str) -> list[str]:
    with h.db.read_session() as s:
        rows = s.exec(select(AuditRecord).where(AuditRecord.workflow_id == workflow_id)).all()
        return [r.action for r in rows]


async def test_an_ordinary_case_is_triaged_for_free_and_updated(h: Harness) -> None:
    """The routed L2 researcher (``l2_agent=False``: one answer, no tools)."""
    support = SupportClient(h.client)
    c = case(h)
    async with h.worker():
        handle = await support.start_case(SupportCaseInput(case=c, l2_agent=False))
        result = await handle.result()
        desc = await handle.describe()
    assert result.category == "billing" and not result.escalated
    assert result.model_tiers["triage"].startswith("tier0")
    assert result.model_tiers["research"].startswith("cheap")
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and ticket.version == 1 and ticket.status == "resolved"
    assert "refund" in ticket.reply.lower()
    charged = spend.charges_of(h.db, handle.id)
    assert (
        result.cost_usd == pytest.approx(sum(x.cost_usd for x in charged)) and result.cost_usd > 0
    )
    assert result.tokens == sum(x.prompt_tokens + x.completion_tokens for x in charged)
    attrs = {k: v for k, v in desc.search_attributes.items()}
    assert attrs["BatonTokens"] == [result.tokens]
    assert attrs["BatonCostUsd"] == [pytest.approx(result.cost_usd)]
    actions = audit_actions(h, handle.id)
    assert "knowledge.retrieved" in actions and "ticket.updated" in actions
    research = await h.temporal.get_workflow_handle(handle.id).fetch_history()
    assert "KB-billing-refund" in json.dumps(
        [e.activity_task_completed_event_attributes.result.payloads[0].data.decode()
         for e in research.events if e.HasField("activity_task_completed_event_attributes")]
    )  # fmt: skip
    assert actions.count("model.routed") == 4


async def test_a_high_value_case_escalates_to_strong_models_and_a_support_lead(
    h: Harness,
) -> None:
    support = SupportClient(h.client)
    c = case(h, customer_value_usd=50000)
    async with h.worker():  # the routed researcher: every routed step on a strong model
        handle = await support.start_case(SupportCaseInput(case=c, l2_agent=False))
        request = await pending(h, handle.id)
        assert request.approver_roles == ["support-lead"]
        assert ticket_of(h.db, h.tenant, c.case_id) is None  # nothing written before approval
        await h.client.approve(handle.id, approver="sam", rationale="reply checked")
        result = await handle.result()
    assert result.escalated
    assert all(v.startswith("strong") for v in result.model_tiers.values())
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and ticket.approved_by == "sam"
    assert [a.outcome for a in result.approvals] == ["approved"]


async def test_a_refused_budget_goes_to_a_human_and_resumes(h: Harness) -> None:
    support = SupportClient(h.client)
    c = case(h)
    async with h.worker():
        handle = await support.start_case(
            SupportCaseInput(case=c, budget={"run_usd": 0.0000001})  # type: ignore[arg-type]
        )
        request = await pending(h, handle.id)
        assert request.action == "raise_model_budget"
        assert spend.charges_of(h.db, handle.id) == []  # refused before anything was sent
        await h.client.approve(handle.id, approver="sam", rationale="worth it")
        result = await handle.result()
    assert result.status == "resolved" and result.cost_usd > 0
    assert "support.budget_refused" in audit_actions(h, handle.id)


async def test_an_sla_breach_is_audited(h: Harness) -> None:
    support = SupportClient(h.client)
    c = case(h, customer_value_usd=50000, priority="P1")
    async with h.worker():
        handle = await support.start_case(SupportCaseInput(case=c, sla_seconds=1))
        await pending(h, handle.id)
        await asyncio.sleep(1.5)  # the lead is slow
        await h.client.approve(handle.id, approver="sam", rationale="late but fine")
        result = await handle.result()
    assert result.sla_breached
    assert "support.sla_breached" in audit_actions(h, handle.id)
    desc = await handle.describe()
    assert desc.search_attributes["BatonRisk"] == ["sla_breached"]


def ticket_update(h: Harness) -> tuple[Any, TicketUpdateInput]:
    """The worker's ``apply_ticket_update`` activity and a fresh update of a new case."""
    apply = next(
        a for a in h.runtime.activities if getattr(a, "__name__", "") == "apply_ticket_update"
    )
    update = TicketUpdateInput(
        case=case(h),
        category="billing",
        status="resolved",
        reply="Refunded.",
        requested_by="support-queue",
        idempotency_key=f"k-{uuid.uuid4().hex}",
    )
    return apply, update


async def test_ticket_updates_are_idempotent(h: Harness) -> None:
    apply, update = ticket_update(h)
    env = ActivityEnvironment()
    first = await env.run(apply, update)
    again = await env.run(apply, update)
    assert first == again and first.applied and first.ticket_version == 1
    assert ticket_updates(h.db, update.case.case_id) == 1
    with h.db.read_session() as s:
        assert len(s.exec(select(SupportTicket)).all()) == 1


async def test_an_engaged_kill_switch_stops_the_ticket_update_until_cleared(h: Harness) -> None:
    apply, update = ticket_update(h)
    env = ActivityEnvironment()
    switch = h.runtime.switch
    scope = "agent:ticketing_integrator"
    switch.engage(scope, reason="ticketing system migration", by="ops")
    try:
        with pytest.raises(ApplicationError) as stopped:
            await env.run(apply, update)
        # the workflow's step runner holds on this error until the switch is cleared
        assert stopped.value.type == "KillSwitchEngaged"
        assert "ticketing system migration" in str(stopped.value)
        assert ticket_of(h.db, h.tenant, update.case.case_id) is None  # nothing written
        assert ticket_updates(h.db, update.case.case_id) == 0
    finally:
        switch.clear(scope, reason="migration done", by="ops")
    outcome = await env.run(apply, update)
    assert outcome.applied and outcome.ticket_version == 1


async def test_the_coordinator_runs_cases_by_priority_and_continues_as_new(h: Harness) -> None:
    support = SupportClient(h.client)
    cases = [case(h, priority=p) for p in ("P4", "P3", "P1")]
    q = f"q{uuid.uuid4().hex[:8]}"
    async with h.worker():
        handle = await support.start_queue(
            SupportCoordinatorInput(tenant=h.tenant, name=q, max_parallel=1, continue_after=2)
        )
        first_run = (await handle.describe()).run_id
        acks = [await support.enqueue(c, queue=q) for c in cases[:2]]
        assert all(a.accepted for a in acks)
        await handle.signal(ENQUEUE_CASE_SIGNAL, cases[2])  # the Signal path enqueues too
        ids = [a.workflow_id for a in acks] + [case_workflow_id(cases[2])]
        with pytest.raises(CaseRefused, match="already enqueued"):
            await support.enqueue(cases[0], queue=q)
        with pytest.raises(CaseRefused, match="this queue serves"):
            await support.enqueue(case(h, tenant="globex"), queue=q, tenant=h.tenant)
        async with asyncio.timeout(30):
            while (status := await support.queue_status(h.tenant, q)).handled < 3:
                await asyncio.sleep(0.2)
        results = [await support.case_result(wid) for wid in ids]
        assert all(r.status == "resolved" for r in results)
        assert (await handle.describe()).run_id != first_run  # continued as new after 2
        await handle.terminate("test done")
    assert sorted(status.done) == sorted(c.case_id for c in cases)
    # The first case started at once; of the two that waited, P1 ran before P3.
    starts = {}
    for c, wid in zip(cases, ids, strict=True):
        starts[c.case_id] = (await h.temporal.get_workflow_handle(wid).describe()).start_time
    assert starts[cases[2].case_id] < starts[cases[1].case_id]
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.TERMINATED


async def test_a_rejected_update_leaves_the_ticket_untouched(h: Harness) -> None:
    support = SupportClient(h.client)
    c = case(h, subject="Cancel", body="Please cancel my subscription now")
    async with h.worker():
        handle = await support.start_case(SupportCaseInput(case=c))
        request = await pending(h, handle.id)
        assert "cancellation" in request.summary
        await h.client.reject(handle.id, approver="sam", rationale="call the customer first")
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert getattr(err.value.cause, "type", None) == "ApprovalRejected"
    assert ticket_of(h.db, h.tenant, c.case_id) is None
    assert "support.case_failed" in audit_actions(h, handle.id)


async def test_the_cli_drives_the_queue(h: Harness) -> None:
    from tests.test_operations import run_cli

    q = f"q{uuid.uuid4().hex[:8]}"
    case_id = f"C-{uuid.uuid4().hex[:8]}"
    async with h.worker():
        started = await run_cli(h, "support", "start", "--tenant", h.tenant, "--queue", q)
        assert started.returncode == 0, started.stderr
        enq = await run_cli(
            h, "support", "enqueue", "--tenant", h.tenant, "--queue", q, "--case-id", case_id,
            "--customer", "Initech", "--subject", "Invoice", "--body", "Please send the invoice",
        )  # fmt: skip
        assert enq.returncode == 0, enq.stderr
        assert f"support-{h.tenant}-{case_id}" in enq.stdout
        again = await run_cli(
            h, "support", "enqueue", "--tenant", h.tenant, "--queue", q, "--case-id", case_id,
            "--customer", "Initech", "--subject", "Invoice", "--body", "Please send the invoice",
        )  # fmt: skip
        assert again.returncode != 0 and "already enqueued" in again.stderr
        result = await run_cli(h, "support", "case", f"support-{h.tenant}-{case_id}", "--wait")
        assert result.returncode == 0, result.stderr
        assert '"category": "billing"' in result.stdout
        status = await run_cli(h, "support", "queue", "--tenant", h.tenant, "--queue", q)
        assert status.returncode == 0 and case_id in status.stdout
        await h.temporal.get_workflow_handle(f"support-queue-{h.tenant}-{q}").terminate("done")
