"""The demo's processes run on a real model, each ending in a verdict a user can trust.

Used by tests/test_real_model.py (each flow must return, never raise) and by
bench/real_model_bench.py (an AssertionError there counts as a WRONG run). Each flow starts one
small run of a process on the harness ``real`` (agents on llama.cpp's server), approves whatever
it asks a human for, waits for its end and returns:

- ``COMPLETED`` when it completed with every item addressed (checked against the systems of
  record and the audit trail, not against the run's own claims), or
- ``FAILED_CLEANLY + ": " + why`` when it failed with a typed error, every side effect
  compensated, and the audit trail saying why;

and raises AssertionError for anything else: "completed" with work silently skipped, a failed
run that left side effects standing, a refused answer whose audit row has no note.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from activities.database import BankStatementLine, JournalPosting, LedgerEntryRow
from activities.seed import seed_period
from baton.settings import REPO_ROOT
from tests.conftest import Harness
from workflows.contracts import BankLine, LedgerLine
from workflows.support_client import SupportClient

_Line = TypeVar("_Line", LedgerLine, BankLine)

LLAMA_CATALOGUE = REPO_ROOT / "config" / "models.llama-cpp.json"
#: a run on a 0.5B model on 2 CPU cores, with repairs and escalations, ends within this
RUN_TIMEOUT = 1200.0
COMPLETED = "completed"
FAILED_CLEANLY = "failed cleanly"
#: side effects and the compensation that undoes each (audit actions)
UNDO = {
    "ledger.posted": "ledger.reversed",
    "idp.granted": "idp.revoked",
    "review.published": "review.retracted",
}

# -- what every run must end in -------------------------------------------------------------


def trail(h: Harness, workflow_id: str) -> list[tuple[str, dict[str, Any], str]]:
    return [
        (r.action, json.loads(r.detail_json), r.rationale)
        for r in h.runtime.ledger.trail(workflow_id)
    ]


async def run_to_end(h: Harness, workflow_id: str, approver: str) -> WorkflowExecutionStatus:
    """Approve what the run asks for (as ``approver`` or another eligible one) until it ends."""
    from baton.demo import finish_run

    await finish_run(
        h.client, h.settings, workflow_id, approver=approver, rationale="ok", timeout=RUN_TIMEOUT
    )
    status = await h.client.execution_status(workflow_id)
    assert status is not None
    return status


def refusals(rows: list[tuple[str, dict[str, Any], str]]) -> list[str]:
    """The notes of the refused model answers in a run's audit trail."""
    return [
        str(detail.get("note") or "")
        for action, detail, _ in rows
        if action in ("model.invalid_output", "agent.answer_refused")
    ]


def assert_refusals_say_why(rows: list[tuple[str, dict[str, Any], str]]) -> None:
    notes = refusals(rows)
    assert all(note.strip() for note in notes), f"a refused answer's audit row has no note: {rows}"


async def assert_failed_cleanly(
    h: Harness,
    workflow_id: str,
    undo: dict[str, str] | None = None,
    failed_event: str | None = None,
) -> str:
    """The run failed with a typed error, every side effect of it is undone, and the audit trail
    says why (``failed_event``: the run's own failure row, naming the error with no
    compensation failed, says it too). Returns the failure for the report."""
    handle = h.temporal.get_workflow_handle(workflow_id)
    try:
        await handle.result()
    except WorkflowFailureError as failed:
        cause: Any = failed.cause
    else:
        raise AssertionError(f"{workflow_id} was expected to have failed")
    chain = []
    while cause is not None:
        chain.append(f"{getattr(cause, 'type', '') or type(cause).__name__}: {cause}")
        cause = getattr(cause, "cause", None)
    assert chain, "the failure carries no cause"
    rows = trail(h, workflow_id)
    actions = Counter(action for action, _, _ in rows)
    for done, undone in (undo or UNDO).items():
        assert actions[done] == actions[undone], (
            f"{workflow_id} failed with {actions[done]} x {done} but {actions[undone]} x {undone}"
        )
    assert_refusals_say_why(rows)
    why = " <- ".join(chain)
    # the audit trail says why: a refused answer or a failed model request with its note, or a
    # policy decision that stopped the run
    explained = [
        action
        for action, detail, _ in rows
        if (action.startswith(("model.", "agent.answer_refused")) and action != "model.ok")
        and str(detail.get("note") or "").strip()
        or action in ("policy.deny", "policy.require_approval")
        or action == failed_event
        and str(detail.get("error") or "").strip()
        and not detail.get("compensation_failures")
    ]
    assert explained, f"{workflow_id} failed and no audit row says why: {rows}"
    return why


# -- finance close ------------------------------------------------------------------------------


def small_period(h: Harness) -> None:
    """A month with three transactions and three items the books must explain: the monthly
    account fee, credit interest and one receipt booked twice (the seed has ~20)."""
    seed_period(h.db, h.tenant, h.period, transactions=3)
    keep_bank = {"FEE-0", "INT-1"}
    with h.db.session() as s:
        for line in s.exec(select(BankStatementLine).where(BankStatementLine.period == h.period)):
            ref = line.reference
            if ref.startswith(("FEE-", "INT-", "UNKNOWN-", "RFD-", "CB-")) or "-MK" in ref:
                if ref not in keep_bank:
                    s.delete(line)
        twice = 0
        for entry in s.exec(select(LedgerEntryRow).where(LedgerEntryRow.period == h.period)):
            if "-MK" in entry.reference:
                s.delete(entry)
            elif entry.description.endswith("(entered twice)"):
                twice += 1
                if twice > 1:
                    s.delete(entry)


async def proposal_from_history(h: Harness, workflow_id: str) -> list[dict[str, Any]]:
    """The reconciler's accepted answer (propose_adjustments' result) from the run's history."""
    history = await h.temporal.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, str] = {}
    results: list[dict[str, Any]] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        if event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if scheduled.get(done.scheduled_event_id) == "propose_adjustments":
                results.append(json.loads(done.result.payloads[0].data))
    return results


def stored_line(model: type[_Line], row: Any, *fields: str) -> _Line:
    """A ``LedgerLine`` or ``BankLine`` from its stored row: the named ``fields`` as they are,
    and ``amount`` from the row's ``amount_cents``."""
    return model(amount=Decimal(row.amount_cents) / 100, **{f: getattr(row, f) for f in fields})


async def finance_close(real: Harness) -> str:
    from activities.finance import reconcile
    from workflows.contracts import PeriodData, ReconcileInput

    h = real
    small_period(h)
    with h.db.session() as s:
        ledger = s.exec(select(LedgerEntryRow).where(LedgerEntryRow.period == h.period)).all()
        bank = s.exec(select(BankStatementLine).where(BankStatementLine.period == h.period)).all()
        data = PeriodData(
            tenant=h.tenant,
            period=h.period,
            period_status="open",
            ledger=[
                stored_line(
                    LedgerLine, e, "entry_id", "booked_on", "account", "reference", "description"
                )
                for e in ledger
            ],
            bank=[
                stored_line(BankLine, b, "line_id", "value_date", "reference", "memo") for b in bank
            ],
        )
    recon = reconcile(ReconcileInput(data=data))
    items = (
        {b.line_id for b in recon.unmatched_bank}
        | {e.entry_id for e in recon.unmatched_ledger}
        | {e.entry_id for e in recon.duplicate_ledger}
    )
    assert len(items) == 3, items  # the fee, the interest, the duplicate

    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        status = await run_to_end(h, handle.id, approver="carol")
        with h.db.session() as s:
            postings = s.exec(
                select(JournalPosting).where(JournalPosting.workflow_id == handle.id)
            ).all()
        reversed_ids = {p.reverses_posting_id for p in postings if p.reverses_posting_id}
        live = [
            p for p in postings if not p.reverses_posting_id and p.posting_id not in reversed_ids
        ]
        rows = trail(h, handle.id)
        assert_refusals_say_why(rows)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await h.client.result(handle.id)
            [proposal] = (await proposal_from_history(h, handle.id))[-1:]
            waived = next(
                d["no_entry_needed"]
                for a, d, _ in reversed(rows)
                if a == "agent.proposed_adjustments"
            )
            cited = {s for e in proposal["entries"] for s in e["source_ids"]}
            assert items <= cited | set(waived), (
                f"completed with items nobody addressed: {items - cited - set(waived)}"
            )
            assert all(str(reason).strip() for reason in waived.values()), waived
            # every proposed entry is posted, once, and the result says so
            assert sorted(p.entry_id for p in live) == sorted(
                e["entry_id"] for e in proposal["entries"]
            )
            assert sorted(p.posting_id for p in result.posted) == sorted(p.posting_id for p in live)
            assert not reversed_ids
            assert str(result.matched) in result.memo  # the memo states what it was given
            return COMPLETED
        assert status == WorkflowExecutionStatus.FAILED, status
        why = await assert_failed_cleanly(h, handle.id)
        assert not live, f"a failed close left postings standing: {live}"
        return f"{FAILED_CLEANLY}: {why}"


# -- HR onboarding ------------------------------------------------------------------------------


async def hr_onboarding(real: Harness) -> str:
    from tests.support.hr import new_hire, start

    h = real
    hire = new_hire(h)
    async with h.worker():
        handle = await h.client.start_onboarding(start(h, hire))
        status = await run_to_end(h, handle.id, approver="maya")
        rows = trail(h, handle.id)
        assert_refusals_say_why(rows)
        actions = Counter(a for a, _, _ in rows)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await h.client.onboarding(handle.id).result()
            assert result.granted, "completed without granting any access"
            assert actions["idp.granted"] == len(result.granted)
            assert actions["idp.revoked"] == 0
            assert result.identity and result.policies
            return COMPLETED
        assert status == WorkflowExecutionStatus.FAILED, status
        return f"{FAILED_CLEANLY}: {await assert_failed_cleanly(h, handle.id)}"


# -- customer onboarding ------------------------------------------------------------------------


async def customer_onboarding(real: Harness) -> str:
    from activities.customer import commits, record_crm_event
    from activities.knowledge import Embedder, KnowledgeBase
    from baton.cli_customer import copy_seed_customer
    from baton.crm_trigger import dispatch_new_customers
    from workflows.contracts.customer import CrmEvent

    h = real
    kb = KnowledgeBase(
        h.db, h.runtime.ledger, Embedder(h.runtime.embeddings_client, h.settings.embedding_model)
    )
    customer = await copy_seed_customer(kb, h.tenant, "cust-globex", uuid.uuid4().hex[:6])
    event = CrmEvent(
        event_id=f"crm-{uuid.uuid4().hex[:10]}",
        tenant=h.tenant,
        customer_id=customer,
        hosting_region="eu",
        sanctions_screened=True,
        requested_by="crm:trigger",
        occurred_at=datetime.now(UTC),
    )
    record_crm_event(h.db, event)
    async with h.worker():
        [mine] = [
            o for o in await dispatch_new_customers(h.client, h.db) if o.event_id == event.event_id
        ]
        assert mine.started, mine
        status = await run_to_end(h, mine.workflow_id, approver="oscar")
        rows = trail(h, mine.workflow_id)
        assert_refusals_say_why(rows)
        standing = commits(h.db, customer)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await h.client.customer_onboarding(mine.workflow_id).result()
            kinds = {c.kind for c in result.committed}
            planned = {step.kind for step in result.plan.steps}
            # the e-mail always, the planned sequence as its tasks: nothing planned is dropped
            assert "intro_email" in kinds, kinds
            if "onboarding_sequence" in planned:
                assert "onboarding_task" in kinds, (planned, kinds)
            assert not any(a.startswith("crm.reverted.") for a, _, _ in rows)
            assert len([c for c in standing if c.reverted_at is None]) == len(result.committed)
            return COMPLETED
        assert status == WorkflowExecutionStatus.FAILED, status
        why = await assert_failed_cleanly(h, mine.workflow_id)
        assert all(c.reverted_at is not None for c in standing), standing
        return f"{FAILED_CLEANLY}: {why}"


# -- support case -------------------------------------------------------------------------------


async def support_case(real: Harness) -> str:
    from activities.knowledge import Embedder, KnowledgeBase
    from activities.support import support_articles
    from workflows.contracts.support import SupportCoordinatorInput

    h = real
    kb = KnowledgeBase(
        h.db, h.runtime.ledger, Embedder(h.runtime.embeddings_client, h.settings.embedding_model)
    )
    await kb.ingest(support_articles(h.settings.support_articles, h.tenant))
    support = SupportClient(h.client)
    # a queue of this run's own: a coordinator is long-lived, and one left by an earlier run on
    # the same server (its worker gone) would take this run's case and never answer
    queue = f"real-{uuid.uuid4().hex[:6]}"
    async with h.worker():
        coordinator = await support.start_queue(
            SupportCoordinatorInput(tenant=h.tenant, name=queue)
        )
        try:
            return await _one_support_case(h, support, queue)
        finally:
            await coordinator.terminate(reason="real-model flow finished")


async def _one_support_case(h: Harness, support: SupportClient, queue: str) -> str:
    from workflows.contracts.support import SupportCase

    case = SupportCase(
        case_id=f"C-real-{uuid.uuid4().hex[:6]}",
        tenant=h.tenant,
        customer="Initech",
        customer_value_usd=50000,
        subject="Refund",
        body="Please refund invoice 4411, I was charged twice this month",
        priority="P1",
    )
    from activities.tools import credits_of

    began = datetime.now(UTC)
    ack = await support.enqueue(case, queue=queue)
    assert ack.accepted, ack.reason
    status = await run_to_end(h, ack.workflow_id, approver="sam")
    # the L2 researcher acts by default: a credit it proposed stands only if the case completed
    credits = [c for c in credits_of(h.db, h.tenant) if c.created_at.replace(tzinfo=UTC) >= began]
    rows = trail(h, ack.workflow_id)
    assert_refusals_say_why(rows)
    if status == WorkflowExecutionStatus.COMPLETED:
        result = await support.case_result(ack.workflow_id)
        assert result.category
        # a finished case has its ticket updated, or was escalated to a human who took it
        assert (result.status is not None and result.ticket_version) or result.escalated
        if result.status is not None:
            assert any(a == "ticket.updated" for a, _, _ in rows)
        return COMPLETED
    assert status == WorkflowExecutionStatus.FAILED, status
    why = await assert_failed_cleanly(h, ack.workflow_id, undo={})
    assert all(c.reversed_at is not None for c in credits), f"credits left standing: {credits}"
    return f"{FAILED_CLEANLY}: {why}"


# -- support agent (an agent that acts) -----------------------------------------------------


#: the failure types an agent run may end in cleanly (workflows/errors.py)
AGENT_FAILURES = (
    "AgentLimitReached",
    "AgentOutputInvalid",
    "BudgetExceeded",
    "NoEligibleModel",
    "LLMUnavailable",
    "LLMRequestRejected",
)


async def support_agent(real: Harness) -> str:
    """The support agent users run (``AgentRun`` of ``case_resolver``, workflows/agent_steps.py):
    it looks the customer up, searches the knowledge base and may propose a credit, draft a
    reply or email the customer (an email always waits for a support lead: approved here).

    Every tool call is checked against the tool-call records and the audit trail: a call that
    ran has its policy ``allow`` row (same decision id) and its ``tool.called`` row; a refused
    call was told to the model (its stored message) with policy's reasons; the credits and
    emails standing are exactly the calls that ran. Completed: the answer cites only passages
    its own searches returned. Failed: a typed failure and every credit reversed."""
    from activities.knowledge import Embedder, KnowledgeBase
    from activities.payload_store import PayloadStore
    from activities.support import support_articles
    from activities.tools import credits_of, emails_of, tool_calls_of
    from workflows.agent_loop import AgentRunWorkflow
    from workflows.agent_steps import CaseResolution
    from workflows.contracts.tools import AgentRunInput, ToolCallOutcome

    h = real
    kb = KnowledgeBase(
        h.db, h.runtime.ledger, Embedder(h.runtime.embeddings_client, h.settings.embedding_model)
    )
    await kb.ingest(support_articles(h.settings.support_articles, h.tenant))
    case = f"K-real-{uuid.uuid4().hex[:6]}"
    inp = AgentRunInput(
        run_key=f"case-{case}",
        agent="case_resolver",
        tenant=h.tenant,
        requested_by="alice",
        task={
            "customer": "Initech",
            "case_id": case,
            "subject": "Refund",
            "question": "Please refund invoice 4411, I was charged twice this month",
        },
    )
    async with h.worker():
        handle = await h.temporal.start_workflow(
            AgentRunWorkflow.run,
            inp,
            id=f"agent-run-{inp.run_key}",
            task_queue=h.client.task_queue,
        )
        status = await run_to_end(h, handle.id, approver="sam")
    rows = trail(h, handle.id)
    assert_refusals_say_why(rows)
    audit = h.runtime.ledger.trail(handle.id)
    allowed = {
        r.decision_id for r in audit if r.action == "policy.allow" and r.actor.startswith("policy:")
    }
    ran = {
        json.loads(r.detail_json)["idempotency_key"]: json.loads(r.detail_json)["tool"]
        for r in audit
        if r.action in ("tool.called", "tool.error")
    }
    for row in audit:
        if row.action in ("tool.called", "tool.error"):
            assert row.decision_id in allowed, f"a tool call ran without its policy row: {row}"
    calls = tool_calls_of(h.db, handle.id)
    searched: list[str] = []
    payloads = PayloadStore(h.db)
    for call in calls:
        outcome = ToolCallOutcome.model_validate_json(call.outcome_json)
        if call.verdict == "allow":
            assert ran.get(call.idempotency_key) == call.tool, f"no tool.called row for {call}"
            assert outcome.ran and outcome.message is not None
            if call.tool == "search_knowledge":
                searched.append(json.dumps(payloads.get(outcome.message)))
        else:  # refused: nothing ran, the model was told why
            assert call.verdict == "deny", call
            assert not outcome.ran and call.idempotency_key not in ran, call
            assert outcome.message is not None and outcome.decision.reasons, call
    made = Counter(ran.values())
    credits = credits_of(h.db, h.tenant)
    emails = emails_of(h.db, h.tenant)
    assert len(credits) == made["propose_credit"], (credits, made)
    assert len(emails) == made["email_customer"], (emails, made)
    approved = [
        json.loads(r.detail_json)
        for r in audit
        if r.action == "tool.called" and json.loads(r.detail_json)["tool"] == "email_customer"
    ]
    assert all(e["approved_by"] for e in approved), f"an email went out unapproved: {approved}"
    if status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        answer = CaseResolution.model_validate(result.output)
        assert answer.answer.strip(), answer
        for passage in answer.cited:  # cited only what its own searches returned
            assert any(passage in text for text in searched), (passage, searched)
        assert all(c.reversed_at is None for c in credits), credits
        assert result.tool_calls == len(ran), (result.tool_calls, ran)
        assert any(a == "agent.finished" for a, _, _ in rows)
        return COMPLETED
    assert status == WorkflowExecutionStatus.FAILED, status
    why = await assert_failed_cleanly(h, handle.id, undo={}, failed_event="agent.failed")
    assert any(kind in why for kind in AGENT_FAILURES), f"not a typed agent failure: {why}"
    assert all(c.reversed_at is not None for c in credits), f"credits left standing: {credits}"
    return f"{FAILED_CLEANLY}: {why}"


# -- document review by auction -----------------------------------------------------------------


async def document_review(real: Harness) -> str:
    from activities.auction import catalogue_tiers
    from baton.cli_auction import SAMPLE_TASKS
    from workflows.contracts.auction import AuctionTask, DocumentReviewInput

    h = real
    assert h.runtime.router is not None
    # the demo's tiers on the catalogue's models (small: cheap, medium and large: strong)
    small, _, large = catalogue_tiers(h.runtime.router.catalogue)
    tiers = [small, large]
    inp = DocumentReviewInput(
        tenant=h.tenant,
        batch_id=f"real-{uuid.uuid4().hex[:6]}",
        requested_by="demo",
        tiers=tiers,
        tasks=[AuctionTask.model_validate(SAMPLE_TASKS[0])],
        bid_deadline_seconds=300,
    )
    async with h.worker():
        handle = await h.client.start_document_review(inp)
        status = await run_to_end(h, handle.id, approver="maya")
        rows = trail(h, handle.id)
        assert_refusals_say_why(rows)
        actions = Counter(a for a, _, _ in rows)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            assert [a.task_id for a in result.allocations] == [t.task_id for t in inp.tasks]
            for allocation in result.allocations:
                if allocation.status == "reviewed":
                    assert allocation.winner
                else:  # escalated to a human: it says who failed and why
                    assert allocation.status == "escalated"
            reviewed = sum(a.status == "reviewed" for a in result.allocations)
            assert actions["review.published"] - actions["review.retracted"] == reviewed
            return COMPLETED
        assert status == WorkflowExecutionStatus.FAILED, status
        return f"{FAILED_CLEANLY}: {await assert_failed_cleanly(h, handle.id)}"


#: every flow, by the process name tests and the bench print
FLOWS: dict[str, Callable[[Harness], Awaitable[str]]] = {
    "finance close": finance_close,
    "HR onboarding": hr_onboarding,
    "customer onboarding": customer_onboarding,
    "support case": support_case,
    "support agent": support_agent,
    "document review": document_review,
}
