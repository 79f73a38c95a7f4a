"""The support case's L2 researcher acts by default (workflows/support.py, issue "Agents that
act"): against the real dev server, the real OPA evaluator, a real database and the stand-in
model server's rules for the researcher (baton/devstack/support_agent_rules.py). It looks the
customer and their contract up, searches the knowledge layer, proposes a credit when the
customer names an amount charged in error, and drafts the reply; every call is a governed tool
call (policy/base/tool_call.rego, policy/data/tools.json: a support lead approves a credit above
100 USD, more than 1000 USD is refused)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from activities.knowledge import KnowledgeStore
from activities.knowledge_seed import SEED_ENTITIES
from activities.support import ticket_of
from activities.tools import ReplyDraft, credits_of
from tests.conftest import Harness
from tests.support import golden
from tests.test_support import audit_actions, case, h, pending  # noqa: F401 - h: the fixture
from workflows.contracts.support import SupportCaseInput, SupportCaseResult
from workflows.contracts.tools import ToolCallInput, ToolPrincipal
from workflows.support import L2_AGENT_DEFAULT_PATCH, SupportCaseWorkflow
from workflows.support_client import SupportClient

GOLDEN = Path(__file__).parent / "golden" / "support_case_agent_default.json"
AGENT = "l2_researcher"
#: a customer of the CRM seed (activities/knowledge_seed.py) with a contract on record
CUSTOMER = "Globex GmbH"


def globex_case(h: Harness, body: str, **overrides: Any) -> Any:  # noqa: F811
    KnowledgeStore(h.db).upsert_entities(SEED_ENTITIES)  # the CRM's relation store
    return case(h, customer=CUSTOMER, subject="Charged twice", body=body, **overrides)


async def start(h: Harness, c: Any) -> WorkflowHandle[Any, SupportCaseResult]:  # noqa: F811
    return await SupportClient(h.client).start_case(SupportCaseInput(case=c))


def tool_results(h: Harness) -> list[str]:  # noqa: F811
    """What the researcher was shown as tool results, by its last turn."""
    return [str(m["content"]) for m in h.model.turns(AGENT)[-1] if m["role"] == "tool"]


async def call_summaries(handle: WorkflowHandle[Any, Any]) -> list[str]:
    return [
        json.loads(e.user_metadata.summary.data)
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "call_tool"
    ]


def trail(h: Harness, wid: str) -> list[tuple[str, dict[str, Any]]]:  # noqa: F811
    return [(r.action, json.loads(r.detail_json)) for r in h.runtime.ledger.trail(wid)]


async def test_a_default_case_acts_through_governed_tool_calls(h: Harness) -> None:  # noqa: F811
    """No l2_agent given: the researcher acts. Each lookup, the search and the draft is a named
    governed activity with its policy decision and audit row; the case result and its last
    audit event list the calls; no credit without an amount the customer names."""
    c = globex_case(h, "Please refund invoice 4411, I was charged twice this month")
    async with h.worker():
        handle = await start(h, c)
        result = await handle.result()
    made = {"lookup_customer": 1, "lookup_contract": 1, "search_knowledge": 1, "draft_reply": 1}
    assert result.model_tiers["research"] == "agent:4 turns"
    assert result.tool_calls == made and result.tool_refusals == {}
    assert sorted(s.split(" (")[0] for s in await call_summaries(handle)) == sorted(
        f"tool {t}" for t in made
    )
    steps = trail(h, handle.id)
    assert sorted(d["tool"] for a, d in steps if a == "tool.called") == sorted(made)
    tool_policy = [d["subject"] for a, d in steps if a == "policy.allow" and "call_id" in d]
    assert sorted(tool_policy) == sorted(made)
    [updated] = [d for a, d in steps if a == "support.case_updated"]
    assert updated["tool_calls"] == made
    # the contract came from the CRM's relation store, the answer from the knowledge layer
    contract = next(r for r in tool_results(h) if "ctr-globex-2026" in r)
    assert '"plan": "enterprise"' in contract
    assert any(r.startswith("[KB-") for r in tool_results(h))
    with h.db.read_session() as s:
        [draft] = s.exec(select(ReplyDraft).where(ReplyDraft.case_id == c.case_id)).all()
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and ticket.version == 1
    assert draft.text.split(".")[0] in ticket.reply  # the drafted reply reached the ticket
    assert credits_of(h.db, h.tenant) == [] and result.approvals == []


async def test_a_credit_up_to_100_usd_is_made_without_approval(h: Harness) -> None:  # noqa: F811
    c = globex_case(h, "I was charged twice this month: please credit the 80 USD back")
    async with h.worker():
        handle = await start(h, c)
        result = await handle.result()
    [credit] = credits_of(h.db, h.tenant, CUSTOMER)
    assert credit.amount_cents == 8000 and credit.reversed_at is None
    assert credit.case_id == c.case_id and credit.proposed_by == f"agent:{AGENT}"
    assert result.approvals == [] and result.tool_calls["propose_credit"] == 1
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and "credited 80.00 USD" in ticket.reply
    assert ("tool.called", "propose_credit") in [(a, d.get("tool")) for a, d in trail(h, handle.id)]


async def test_a_credit_above_100_usd_waits_for_a_support_lead(h: Harness) -> None:  # noqa: F811
    c = globex_case(h, "I was charged twice: please credit the 250 USD back")
    async with h.worker():
        handle = await start(h, c)
        request = await pending(h, handle.id)
        assert request.action == "tool:propose_credit"
        assert request.approver_roles == ["support-lead"]
        assert "250.00 USD is above 100.00 USD" in request.summary
        assert credits_of(h.db, h.tenant) == []  # nothing credited before the approval
        await h.client.approve(handle.id, approver="sam", rationale="double charge confirmed")
        result = await handle.result()
    [credit] = credits_of(h.db, h.tenant, CUSTOMER)
    assert credit.amount_cents == 25000 and credit.reversed_at is None
    assert [a.outcome for a in result.approvals] == ["approved"]
    [called] = [d for a, d in trail(h, handle.id) if a == "tool.called" and "approved_by" in d
                and d["tool"] == "propose_credit"]  # fmt: skip
    assert called["approved_by"] == ["sam"]
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and "credited 250.00 USD" in ticket.reply


async def test_a_rejected_credit_is_told_to_the_researcher_which_adapts(
    h: Harness,  # noqa: F811
) -> None:
    c = globex_case(h, "I was charged twice: please credit the 250 USD back")
    async with h.worker():
        handle = await start(h, c)
        await pending(h, handle.id)
        await h.client.reject(handle.id, approver="sam", rationale="refund the invoice instead")
        result = await handle.result()
    assert credits_of(h.db, h.tenant) == []
    told = "sam rejected this call: refund the invoice instead"
    assert told in tool_results(h)
    assert result.tool_refusals == {"propose_credit": 1}
    assert [a.outcome for a in result.approvals] == ["rejected"]
    # the researcher did not insist: it drafted a reply saying so, and the case was updated
    assert result.tool_calls["draft_reply"] == 1 and "propose_credit" not in result.tool_calls
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and "could not be made now" in ticket.reply
    assert told in ticket.reply


async def test_a_credit_above_the_cap_is_denied_and_the_researcher_is_told(
    h: Harness,  # noqa: F811
) -> None:
    c = globex_case(h, "I was charged twice: please credit the 5000 USD back")
    async with h.worker():
        handle = await start(h, c)
        result = await handle.result()
    assert credits_of(h.db, h.tenant) == [] and result.approvals == []  # nobody was asked
    denied = (
        "policy denied the call of propose_credit: 5000.00 USD exceeds the limit of 1000.00 USD "
        "for 'propose_credit'"
    )
    assert denied in tool_results(h)
    assert result.tool_refusals == {"propose_credit": 1}
    assert ("policy.deny", "propose_credit") in [
        (a, d.get("subject")) for a, d in trail(h, handle.id)
    ]
    ticket = ticket_of(h.db, h.tenant, c.case_id)
    assert ticket is not None and "exceeds the limit of 1000.00 USD" in ticket.reply


async def test_a_failed_case_withdraws_the_credit_it_proposed(h: Harness) -> None:  # noqa: F811
    """The credit is made (80 USD, no approval), then the support lead rejects the ticket
    update (a high-value customer): the case fails and its compensation reverses the credit."""
    c = globex_case(h, "Charged twice: please credit the 80 USD back", customer_value_usd=50000)
    async with h.worker():
        handle = await start(h, c)
        request = await pending(h, handle.id)
        assert request.action == "update_ticket"
        [made] = credits_of(h.db, h.tenant)
        assert made.reversed_at is None
        await h.client.reject(handle.id, approver="sam", rationale="call the customer first")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    [undone] = credits_of(h.db, h.tenant)
    assert undone.credit_id == made.credit_id and undone.reversed_at is not None
    assert "tool.compensated" in audit_actions(h, handle.id)
    assert ticket_of(h.db, h.tenant, c.case_id) is None


async def test_the_contract_lookup_and_the_credit_arguments(h: Harness) -> None:  # noqa: F811
    """lookup_contract finds a customer by id or name (none on record: said so, not an error);
    a credit in another currency is refused before policy, naming the field."""
    KnowledgeStore(h.db).upsert_entities(SEED_ENTITIES)
    assert h.runtime.tools is not None
    principal = ToolPrincipal(
        process="support_escalation", tenant=h.tenant, agent=AGENT, requested_by="support-queue"
    )

    async def call(tool: str, **arguments: Any) -> Any:
        key = f"wf-{uuid.uuid4().hex[:6]}/tool/{tool}"
        inp = ToolCallInput(
            tool=tool, arguments=arguments, call_id=key, idempotency_key=key, principal=principal
        )
        return await ActivityEnvironment().run(h.runtime.tools.call_tool, inp)

    by_id = await call("lookup_contract", customer="cust-stark")
    by_name = await call("lookup_contract", customer="stark industries")
    assert by_id.ran and by_id.data == by_name.data
    [contract] = by_id.data["contracts"]
    assert contract["contract_id"] == "ctr-stark-expansion" and contract["plan"] == "enterprise"
    assert contract["source"] == "crm:salesforce/contracts/C-7802"
    unknown = await call("lookup_contract", customer="Nobody Ltd")
    assert unknown.ran and not unknown.is_error
    assert unknown.data == {"customer": "Nobody Ltd", "contracts": []}
    euro = await call(
        "propose_credit", customer="c", case_id="C-1", amount_usd=20, currency="EUR", reason="r"
    )
    assert not euro.ran and euro.decision.verdict == "deny"
    assert euro.decision.reasons == [
        "arguments of 'propose_credit': currency: Input should be 'USD'"
    ]
    assert credits_of(h.db, h.tenant) == []


async def test_golden_history_of_a_default_case_replays(h: Harness) -> None:  # noqa: F811
    """A recorded default case (the researcher acts; a 250 USD credit approved by a support
    lead) replays on today's code; the histories recorded before the researcher acted by
    default replay too (tests/test_governed.py). Regenerate only for a deliberate, patched
    change: BATON_REGENERATE_GOLDEN=1."""
    if golden.regenerating():
        c = globex_case(h, "I was charged twice: please credit the 250 USD back")
        async with h.worker():
            handle = await start(h, c)
            await pending(h, handle.id)
            await h.client.approve(handle.id, approver="sam", rationale="golden")
            await handle.result()
        await golden.record(GOLDEN, handle)
    history = golden.load(GOLDEN, "golden-support-agent")
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert L2_AGENT_DEFAULT_PATCH in patches  # recorded on the default's own path
    await golden.assert_replays(history, SupportCaseWorkflow)
