"""Agents that act (workflows/agent_loop.py): a durable tool-using agent whose every tool call is
governed, against the real dev server (the harness), the real OPA evaluator, a real database and
the scripted model server over HTTP through the real openai SDK.

The scripted model answers each turn of the ``case_resolver`` with the tool calls a test
scripts (``Fault.tool_calls``); what the model was told next is read back from the requests it
received.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from activities.tools import credits_of, emails_of, tool_calls_of
from tests.conftest import Harness
from tests.support import approvals, golden
from tests.support.approvals import pending_approvals
from tests.support.scripted_model import Fault
from workflows.agent_loop import AgentRunWorkflow
from workflows.contracts import ApprovalDecision, ApprovalRequest, digest
from workflows.contracts.tools import AgentRunInput, ToolCallInput, ToolPrincipal

AGENT = "case_resolver"
MATCH = f"agent: {AGENT}"
GOLDEN = golden.GOLDEN / "agent_run_credit_approved.json"


def credit(amount: float, case: str = "K-1") -> tuple[str, dict[str, Any]]:
    return (
        "propose_credit",
        {"customer": "c-1", "case_id": case, "amount_usd": amount, "reason": "late delivery"},
    )


def final(answer: str = "We credited your account.") -> tuple[str, dict[str, Any]]:
    return ("final_answer", {"answer": answer, "cited": [], "actions": []})


def email(body: str = "Your credit is on its way.") -> tuple[str, dict[str, Any]]:
    return ("email_customer", {"customer": "c-1", "subject": "Your case", "body": body})


def script_turns(
    h: Harness, *turns: tuple[str, dict[str, Any]] | list[tuple[str, dict[str, Any]]]
) -> None:
    """The model answers the agent's next turns in order: each with one tool call (a list: with
    these calls in one turn)."""
    h.model.script(
        *(Fault.tool_calls(*t) if isinstance(t, list) else Fault.tool_calls(t) for t in turns),
        match=MATCH,
    )


async def start(h: Harness, **overrides: Any) -> WorkflowHandle[Any, Any]:
    inp = AgentRunInput(
        run_key=f"case-{uuid.uuid4().hex[:8]}",
        agent=AGENT,
        tenant=h.tenant,
        requested_by="alice",
        task={"customer": "c-1", "case_id": "K-1", "subject": "parcel arrived late"},
        **overrides,
    )
    return await h.temporal.start_workflow(
        AgentRunWorkflow.run,
        inp,
        id=f"agent-run-{inp.run_key}",
        task_queue=h.client.task_queue,
    )


pending = pending_approvals


def decision(
    request: ApprovalRequest, verdict: str, rationale: str, **extra: Any
) -> ApprovalDecision:
    """sam (a support lead) decides ``request``."""
    return approvals.decision(request, "sam", verdict=verdict, rationale=rationale, **extra)


def told(h: Harness, turn: int) -> list[str]:
    """The tool messages the model was shown on its ``turn``-th request (1-based)."""
    messages = h.model.turns(AGENT)[turn - 1]
    return [str(m.get("content")) for m in messages if m.get("role") == "tool"]


async def test_deny_is_told_to_the_model_and_it_adapts(harness: Harness) -> None:
    """A credit above the hard limit is denied: nothing is written, the model reads policy's
    reason as the call's result, proposes a smaller credit, and that one is made."""
    h = harness
    script_turns(h, credit(5000), credit(40), final())
    async with h.worker():
        handle = await start(h)
        result = await handle.result()
    assert result.output["answer"] == "We credited your account."
    assert (result.tool_calls, result.denials, result.turns) == (1, 1, 3)
    assert told(h, 2) == ["policy denied the call of propose_credit: 5000.00 USD exceeds the limit "
                          "of 1000.00 USD for 'propose_credit'"]  # fmt: skip
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [4000]
    assert told(h, 3)[-1].startswith("credit cr-") and "40.00 USD" in told(h, 3)[-1]
    # the audit ledger: every turn (model, tokens, cost) and every call (decision, digests)
    trail = h.runtime.ledger.trail(handle.id)
    routed = [r for r in trail if r.action == "model.routed"]
    assert len(routed) == 3 and all(r.tokens > 0 and r.cost_usd > 0 for r in routed)
    decided = [
        (r.action, json.loads(r.detail_json)["subject"])
        for r in trail
        if r.action.startswith("policy.") and r.actor.startswith("policy:baton/base/tool")
    ]
    assert decided == [("policy.deny", "propose_credit"), ("policy.allow", "propose_credit")]
    [called] = [json.loads(r.detail_json) for r in trail if r.action == "tool.called"]
    assert called["tool"] == "propose_credit" and called["result_digest"]
    assert called["arguments_digest"] == digest(credit(40)[1])
    assert h.runtime.ledger.verify().ok


async def test_approval_with_edited_arguments_is_checked_by_policy_again(harness: Harness) -> None:
    """A 300 USD credit needs a support lead; sam edits it to 2000 (policy denies: above the
    hard limit, the model is told), then the model asks 300 again and sam edits it to 80,
    which policy allows without another round: 80 USD is credited, never 300 or 2000."""
    h = harness
    script_turns(h, credit(300), credit(300), final())
    async with h.worker():
        handle = await start(h)
        [request] = await pending(h, handle.id)
        assert request.action == "tool:propose_credit"
        assert request.action_payload["arguments"]["amount_usd"] == 300
        edited = {**request.action_payload["arguments"], "amount_usd": 2000}
        await h.client.decide(handle.id, decision(request, "amend", "too low", arguments=edited))
        async with asyncio.timeout(30):
            while len(h.model.turns(AGENT)) < 2:
                await asyncio.sleep(0.1)
        [again] = await pending(h, handle.id)
        assert again.request_id != request.request_id
        smaller = {**again.action_payload["arguments"], "amount_usd": 80}
        await h.client.edit_tool_call(
            handle.id, approver="sam", rationale="80 is fair", arguments=smaller
        )
        result = await handle.result()
    assert told(h, 2) == ["policy denied the call of propose_credit: 2000.00 USD exceeds the "
                          "limit of 1000.00 USD for 'propose_credit'"]  # fmt: skip
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [8000]
    assert result.tool_calls == 1
    amended = [json.loads(r.detail_json) for r in h.runtime.ledger.trail(handle.id)
               if r.action == "approval.amended"]  # fmt: skip
    assert [a["arguments"]["amount_usd"] for a in amended] == [2000, 80]


async def test_rejection_message_reaches_the_model(harness: Harness) -> None:
    """Every email to a customer needs approval; sam rejects with a message, the model reads it
    and drafts a reply instead. No email is sent."""
    h = harness
    script_turns(
        h, email(), ("draft_reply", {"case_id": "K-1", "text": "Sorry for the delay."}), final()
    )
    async with h.worker():
        handle = await start(h)
        [request] = await pending(h, handle.id)
        assert request.policy_reasons == [
            "'email_customer' reaches a customer: a support-lead must approve every call"
        ]
        await h.client.decide(
            handle.id, decision(request, "reject", "do not email yet: draft a reply for me")
        )
        result = await handle.result()
    assert told(h, 2) == ["sam rejected this call: do not email yet: draft a reply for me"]
    assert emails_of(h.db, h.tenant) == []
    assert told(h, 3)[-1].startswith("draft draft-")
    assert (result.tool_calls, result.denials) == (1, 1)


async def test_two_parallel_calls_wait_for_separate_approvals(harness: Harness) -> None:
    """Two credits asked in one turn run concurrently: each is its own approval request (bound
    to its own arguments); one approved, one rejected: one credit is made."""
    h = harness
    script_turns(h, [credit(150, "K-1"), credit(200, "K-2")], final())
    async with h.worker():
        handle = await start(h)
        requests = await pending(h, handle.id, count=2)
        by_amount = {r.action_payload["arguments"]["amount_usd"]: r for r in requests}
        assert sorted(by_amount) == [150, 200]
        assert by_amount[150].action_digest != by_amount[200].action_digest
        await h.client.decide(handle.id, decision(by_amount[200], "reject", "too much"))
        await h.client.decide(handle.id, decision(by_amount[150], "approve", "fine"))
        result = await handle.result()
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [15000]
    assert sorted(told(h, 2)) == [
        told(h, 2)[0] if told(h, 2)[0].startswith("credit") else told(h, 2)[1],
        "sam rejected this call: too much",
    ]
    assert (result.tool_calls, result.denials) == (1, 1)


async def test_cancellation_undoes_credits_in_reverse(harness: Harness) -> None:
    """Two credits made, then the run waits for an email approval and is cancelled: both credits
    are reversed, the later one first, and the audit trail says so."""
    h = harness
    script_turns(h, credit(40), credit(50), email())
    async with h.worker():
        handle = await start(h)
        await pending(h, handle.id)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    credits = credits_of(h.db, h.tenant)
    assert [c.amount_cents for c in credits] == [4000, 5000]
    assert all(c.reversed_at is not None for c in credits)
    undone = [
        json.loads(r.detail_json)["call_key"]
        for r in h.runtime.ledger.trail(handle.id)
        if r.action == "tool.compensated"
    ]
    assert undone == [credits[1].call_key, credits[0].call_key]


async def test_continued_runs_keep_the_history_policy_reads_and_the_compensations(
    harness: Harness,
) -> None:
    """Three credits, then lookups until the run continues as new; in the new run a fourth
    credit is denied (policy still sees the three: no more than 3 per case), and cancelling
    the new run reverses the three credits the first run made."""
    h = harness
    script_turns(
        h,
        *[credit(10 + i) for i in range(3)],
        # lookups of other customers (a repeated call would not be made again)
        *[("lookup_customer", {"customer": f"c-{i}"}) for i in range(6)],
        credit(13),
        email(),
    )
    async with h.worker():
        handle = await start(h, max_history_events=100)
        await pending(h, handle.id, timeout=60)
        desc = await handle.describe()
        assert desc.run_id != handle.first_execution_run_id  # it continued as new
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert told(h, 11)[-1] == (
        "policy denied the call of propose_credit: refund limit: a case may get 3 refunds or "
        "credits and got 3 already"
    )
    credits = credits_of(h.db, h.tenant)
    assert [c.amount_cents for c in credits] == [1000, 1100, 1200]
    assert all(c.reversed_at is not None for c in credits)


async def test_a_tool_call_retried_after_its_worker_died_runs_once(harness: Harness) -> None:
    """The worker died after the credit committed but before Temporal heard of it: the retry
    (same idempotency key) returns the stored outcome and writes nothing again."""
    h = harness
    tools = h.runtime.tools
    assert tools is not None
    inp = ToolCallInput(
        tool="propose_credit",
        arguments=credit(60)[1],
        call_id="call-1",
        idempotency_key=f"wf-{uuid.uuid4().hex[:6]}/tool/call-1/x",
        principal=ToolPrincipal(
            process="agent_run", tenant=h.tenant, agent=AGENT, requested_by="alice"
        ),
    )
    env = ActivityEnvironment()
    first = await env.run(tools.call_tool, inp)
    retried = await env.run(tools.call_tool, inp)
    assert first == retried and first.ran
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [6000]


async def test_worker_sigkilled_mid_tool_call_credits_once(
    temporal_client: Any, model_server: Any, pg_database: str
) -> None:
    """The approved credit is inside its transaction (another session holds customer_credit)
    when the worker process is SIGKILLed: its transaction dies with it; the killed attempt
    times out (connector start-to-close, 30 s) and runs again on a new worker: one credit."""
    from tests.conftest import _harness
    from tests.test_chaos import kill, kill_inside_transaction
    from tests.test_operations import start_worker_process

    async with _harness(temporal_client, model_server, pg_database) as h:
        script_turns(h, credit(250), final())
        worker = start_worker_process(h)
        try:
            handle = await start(h)
            [request] = await pending(h, handle.id, timeout=60)
            worker = await kill_inside_transaction(
                h,
                worker,
                handle,
                activity="call_tool",
                table="customer_credit",
                act=lambda: h.client.decide(handle.id, decision(request, "approve", "ok")),
            )
            result = await asyncio.wait_for(handle.result(), 120)
        finally:
            kill(worker)
        credits = [c for c in credits_of(h.db, h.tenant) if c.case_id == "K-1"]
        assert [c.amount_cents for c in credits] == [25000]
        assert len([r for r in tool_calls_of(h.db, handle.id) if r.verdict == "allow"]) == 1
        assert result.tool_calls == 1


async def test_worker_killed_mid_loop_finishes_on_a_new_worker(harness: Harness) -> None:
    """The worker stops while the run waits for an approval; a new worker picks the run up
    where it was: the approved credit is made once and the run finishes."""
    h = harness
    script_turns(h, credit(250), final())
    async with h.worker():
        handle = await start(h)
        [request] = await pending(h, handle.id)
    async with h.worker():
        await h.client.decide(handle.id, decision(request, "approve", "ok"))
        result = await handle.result()
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [25000]
    assert len([r for r in tool_calls_of(h.db, handle.id) if r.verdict == "allow"]) == 1
    assert result.tool_calls == 1


async def test_kill_switch_holds_the_loop_until_cleared(harness: Harness) -> None:
    """Engaged for the agent while its run waits for an approval: the approved call holds
    (nothing is credited); cleared, the call runs and the run finishes."""
    h = harness
    switch = h.runtime.switch
    script_turns(h, credit(250), final())
    async with h.worker():
        handle = await start(h)
        [request] = await pending(h, handle.id)
        switch.engage(f"agent:{AGENT}", reason="agent misbehaves", by="ops")
        try:
            await h.client.decide(handle.id, decision(request, "approve", "ok"))
            async with asyncio.timeout(30):
                while (await h.client.status(handle.id)).held_by is None:
                    await asyncio.sleep(0.2)
            assert credits_of(h.db, h.tenant) == []
        finally:
            switch.clear(f"agent:{AGENT}", reason="fixed", by="ops")
        await h.client.release_held()
        result = await handle.result()
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [25000]
    assert result.tool_calls == 1


async def test_budget_spent_mid_loop_asks_the_budget_role(harness: Harness) -> None:
    """The run's model budget is spent after the first turn: a support lead (the budget role
    of agent_run) is asked; approved, the loop goes on and finishes."""
    h = harness
    script_turns(h, credit(20), final())
    async with h.worker():
        handle = await start(h, budget_usd=0.00029)
        [request] = await pending(h, handle.id)
        assert request.action == "raise_model_budget"
        assert len(h.model.turns(AGENT)) == 1  # the first turn fit; the second did not
        assert len(credits_of(h.db, h.tenant)) == 1
        assert request.eligible_approvers == ["sam"]
        await h.client.decide(handle.id, decision(request, "approve", "go on"))
        result = await handle.result()
    assert result.output["answer"] == "We credited your account."
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [2000]


async def test_a_model_turn_falls_back_to_the_next_endpoint(harness: Harness) -> None:
    """The first endpoint answers 503 to the agent's first turn: the router asks the tier's
    next endpoint (config/models.json: /backup/v1) and the loop goes on."""
    h = harness
    h.model.script(Fault.status(503), match=MATCH)
    script_turns(h, credit(30), final())
    async with h.worker():
        handle = await start(h)
        result = await handle.result()
    paths = [r["path"] for r in h.model.requests if r["agent"] == AGENT]
    assert "/backup/" not in paths[0] and "/backup/" in paths[1]
    assert (result.turns, result.tool_calls) == (2, 1)
    trail = h.runtime.ledger.trail(handle.id)
    assert [r.action for r in trail].count("model.server_error") == 1


async def test_rule_based_model_searches_and_cites(harness: Harness) -> None:
    """Without a script, the stand-in model server's rules look the customer up, search the
    knowledge base and finish citing what it found (the answer check accepts real ids only)."""
    h = harness
    async with h.worker():
        handle = await start(h)
        result = await handle.result()
    assert result.turns == 3 and result.tool_calls == 2
    assert set(result.output) == {"answer", "cited", "actions"}


async def test_a_model_without_native_tool_calling_carries_the_calls_as_json(
    temporal_client: Any, model_server: Any, database_url: str, tmp_path: Path
) -> None:
    """A catalogue whose models say ``tool_calling: structured``: no ``tools`` are sent, the
    model answers the calls as a JSON document of its structured-output mode, and the same
    governed calls are made."""
    from baton.settings import REPO_ROOT
    from tests.conftest import _harness

    catalogue = json.loads((REPO_ROOT / "config" / "models.json").read_text())
    for model in catalogue["models"]:
        model["tool_calling"] = "structured"
    path = tmp_path / "models.json"
    path.write_text(json.dumps(catalogue))
    async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as h:
        async with h.worker():
            handle = await start(h)
            result = await handle.result()
        bodies = [r["body"] for r in h.model.requests if r["agent"] == AGENT]
    assert (result.turns, result.tool_calls) == (3, 2)
    assert set(result.output) == {"answer", "cited", "actions"}
    assert bodies and all("tools" not in b and "response_format" in b for b in bodies)


async def test_a_tool_call_document_with_a_raw_newline_in_a_string_is_read(
    temporal_client: Any, model_server: Any, database_url: str, tmp_path: Path
) -> None:
    """Structured mode: a small model (Qwen2.5-Coder-0.5B on llama.cpp, measured) writes a
    literal newline inside a JSON string of its tool-call document. The call is read and made
    (JSON's non-strict reading), not refused as AgentOutputInvalid."""
    from baton.settings import REPO_ROOT
    from tests.conftest import _harness

    catalogue = json.loads((REPO_ROOT / "config" / "models.json").read_text())
    for model in catalogue["models"]:
        model["tool_calling"] = "structured"
    path = tmp_path / "models.json"
    path.write_text(json.dumps(catalogue))
    raw = (
        '{"calls": [{"name": "lookup_customer", "arguments": "{\\"customer\\":\n\\"c-1\\"}"}],'
        '\n"final": ""}'
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)  # strict JSON refuses it
    async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as h:
        h.model.script(Fault.malformed(raw), match=MATCH)
        async with h.worker():
            handle = await start(h)
            result = await handle.result()
        calls = tool_calls_of(h.db, handle.id)
        asked = [r for r in h.model.requests if r["agent"] == AGENT]
    assert set(result.output) == {"answer", "cited", "actions"}
    # the first answer was taken: one request per turn, none asked again after a refusal
    assert len(asked) == result.turns
    assert ("lookup_customer", "allow") in [(c.tool, c.verdict) for c in calls]


async def test_agent_history_stays_small(harness: Harness, tmp_path: Path) -> None:
    """The bench with a few calls: the run continues as new, every history payload stays far
    below 64 KB, and the bench prints its three result lines."""
    from dataclasses import replace

    from bench.agent_loop_bench import bench_policy, run_bench

    h = harness
    printed: list[str] = []
    settings = replace(h.settings, policy_dir=bench_policy(tmp_path, 30))
    lines = await run_bench(
        h.temporal, h.model, settings, tool_calls=30, continue_after_events=150, out=printed.append
    )
    print("\n".join(printed))
    assert printed[-3:] == lines[:3]
    numbers = dict(line.split("=") for line in lines)
    assert int(numbers["history_bytes"]) < 2_000_000 * 30 / 500  # the goal's 500-call rate
    assert int(numbers["largest_payload_bytes"]) < 64 * 1024
    assert int(numbers["continued_runs"]) >= 1


async def test_golden_history_of_an_agent_run_replays(harness: Harness) -> None:
    """A recorded agent run (a credit approved by a support lead, then the final answer)
    replays with today's loop: regenerate only for a deliberate, patched change
    (BATON_REGENERATE_GOLDEN=1)."""

    h = harness
    if golden.regenerating():
        script_turns(h, credit(250), final())
        async with h.worker():
            handle = await start(h)
            [request] = await pending(h, handle.id)
            await h.client.decide(handle.id, decision(request, "approve", "golden"))
            await handle.result()
        await golden.record(GOLDEN, handle)
    await golden.load_and_replay(GOLDEN, "golden-agent-run", AgentRunWorkflow)


async def test_support_case_l2_researcher_acts_through_governed_searches(
    harness: Harness,
) -> None:
    """A support case with ``l2_agent``: the L2 researcher is an agent that acts; its knowledge
    searches are governed tool calls (policy decision, audit row, stored result) and the case
    is updated from its answer, which cites the passages the search returned."""
    from activities.knowledge import Embedder, KnowledgeBase
    from activities.support import support_articles, ticket_of
    from tests.test_support import case as a_case
    from workflows.contracts.support import SupportCaseInput
    from workflows.support_client import SupportClient

    h = harness
    kb = KnowledgeBase(
        h.db, h.runtime.ledger, Embedder(h.runtime.openai, h.settings.embedding_model)
    )
    await kb.ingest(support_articles(h.settings.support_articles, h.tenant))
    case = a_case(h)
    # the researcher as it was first declared: one search, then the answer citing it
    search = ("search_knowledge", {"query": "$task.question"})
    answer = ("final_answer", {"answer": "Refunds take 5 days.", "cited": "$cited"})
    h.model.script(Fault.tool_calls(search), Fault.tool_calls(answer), match="agent: l2_researcher")
    async with h.worker():
        handle = await SupportClient(h.client).start_case(
            SupportCaseInput(case=case, l2_agent=True)
        )
        result = await handle.result()
    assert result.model_tiers["research"] == "agent:2 turns"
    ticket = ticket_of(h.db, h.tenant, case.case_id)
    assert ticket is not None and ticket.version == 1
    trail = h.runtime.ledger.trail(handle.id)
    [searched] = [json.loads(r.detail_json) for r in trail if r.action == "tool.called"]
    assert searched["tool"] == "search_knowledge"
    results = [m["content"] for m in h.model.turns("l2_researcher")[-1] if m["role"] == "tool"]
    assert results and results[0].startswith("[KB-")  # the passages the answer had to cite


async def test_a_repeated_call_is_not_made_again_and_a_stuck_model_is_stopped(
    harness: Harness,
) -> None:
    """Small models ask for the same call again and again. A call made as asked is not made a
    second time: the model is told to use the result it has (and adapts); a model that keeps
    repeating fails AgentLimitReached, and what it did is undone."""
    h = harness
    lookup = ("lookup_customer", {"customer": "c-1"})
    script_turns(h, lookup, lookup, final("Your tickets are in order."))
    async with h.worker():
        handle = await start(h)
        result = await handle.result()
    assert result.output["answer"] == "Your tickets are in order."
    assert [r.tool for r in tool_calls_of(h.db, handle.id)] == ["lookup_customer"]  # made once
    assert told(h, 3)[-1].startswith("You already called lookup_customer with these arguments")
    repeated = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "tool.repeated"]
    assert len(repeated) == 1

    script_turns(h, *[credit(40)] * 4)
    async with h.worker():
        stuck = await start(h)
        with pytest.raises(WorkflowFailureError) as failed:
            await stuck.result()
    assert "asked 3 times for a call it had already made" in str(failed.value.cause)
    [made] = credits_of(h.db, h.tenant)
    assert made.amount_cents == 4000 and made.reversed_at is not None  # once, and undone
