"""Structured output per catalogue model, schemas a model can follow, and answers checked for
meaning (activities/structured.py, activities/answer_checks.py, activities/router.py): through a
real worker and the real dev server, with the `openai` SDK over HTTP against the scripted model
server, which records every request so each test can check the shape that was sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from activities import answer_checks, spend
from activities.agents import _WireMemo, _WireProposal, allowed_accounts, proposal_wire
from activities.router import CatalogueError, load_catalogue, parse_catalogue
from activities.structured import extract_json, schema_has_pattern, wire_schema
from baton.settings import REPO_ROOT
from tests import test_router
from tests.conftest import Harness, _harness
from tests.support.route_once import RouteOnce
from tests.support.scripted_model import Fault, ScriptedModelServer
from tests.test_finance_close import failure_type, postings
from tests.test_router import CHEAP_CONFIDENT, catalogue, model, route
from workflows.contracts import LedgerLine, MemoInput, ProposeAdjustmentsInput
from workflows.contracts.support import TriageInput

MODES = ["json_schema", "json_object_schema", "tool_call", "prompt"]
routed = test_router.routed  # the fixture of tests/test_router.py, registered here too


def one_model(server: ScriptedModelServer, **fields: Any) -> dict[str, Any]:
    return catalogue(
        server, model("baton-rules-small", f"{server.base_url}/primary/v1", "cheap", **fields)
    )


def triage_requests(server: ScriptedModelServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests if r["agent"] == "triage_classifier"]


# -- request shapes, per catalogue entry -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_sends_its_request_shape_and_parses_the_answer(
    routed: Any, model_server: ScriptedModelServer, mode: str
) -> None:
    spec = one_model(
        model_server, structured_output=mode, max_tokens=333, timeout_s=9,
        accepts_seed=False, temperature=0.2,
    )  # fmt: skip
    async with routed(spec) as h:
        result, _ = await route(h, CHEAP_CONFIDENT)
    assert result.category in ("billing", "technical") and result.usage.tier == "cheap"
    [body] = triage_requests(model_server)
    assert body["max_tokens"] == 333 and body["temperature"] == 0.2 and "seed" not in body
    system = body["messages"][0]["content"]
    if mode == "json_schema":
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        schema = fmt["json_schema"]["schema"]
    elif mode == "json_object_schema":
        assert set(body["response_format"]) == {"type", "schema"}
        assert body["response_format"]["type"] == "json_object"
        schema = body["response_format"]["schema"]
    elif mode == "tool_call":
        assert "response_format" not in body
        [tool] = body["tools"]
        assert body["tool_choice"] == {
            "type": "function",
            "function": {"name": "triage_classifier"},
        }
        assert tool["function"]["name"] == "triage_classifier"
        schema = tool["function"]["parameters"]
    else:
        assert "response_format" not in body and "tools" not in body
        schema = json.loads(
            system.split("exactly (every property present, no other properties):\n")[1]
        )
    # the closed set is an enum the server can enforce; every property described and required
    category = schema["properties"]["category"]
    assert category["enum"] == ["billing", "technical", "account", "shipping", "cancellation"]
    assert category["description"] and schema["required"] == ["category", "confidence"]
    assert schema["additionalProperties"] is False
    assert system.startswith("agent: triage_classifier\n")


async def test_seed_and_temperature_are_sent_by_default_and_left_out_when_not_accepted(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    async with routed(one_model(model_server)) as h:
        await route(h, CHEAP_CONFIDENT)
    [body] = triage_requests(model_server)
    assert (body["seed"], body["temperature"], body["max_tokens"]) == (7, 0.0, 2048)
    model_server.reset()
    async with routed(one_model(model_server, accepts_temperature=False)) as h:
        await route(h, CHEAP_CONFIDENT)
    [body] = triage_requests(model_server)
    assert "temperature" not in body and body["seed"] == 7


async def test_prompt_mode_tolerates_prose_and_a_code_fence_around_the_json(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    chatty = 'Sure! Here it is:\n```json\n{"category": "billing", "confidence": 0.93}\n```\nBye.'
    model_server.script(Fault.malformed(chatty), match="agent: triage_classifier")
    async with routed(one_model(model_server, structured_output="prompt")) as h:
        result, _ = await route(h, CHEAP_CONFIDENT)
    assert (result.category, result.confidence) == ("billing", 0.93)
    assert [c.outcome for c in result.usage.calls] == ["ok"]


async def test_the_catalogue_timeout_is_the_requests_timeout(
    routed: Any, model_server: ScriptedModelServer
) -> None:
    # the primary endpoint answers after 3 s; its catalogue timeout is 1 s: it times out and the
    # backup answers (the client's default of 60 s would have waited)
    model_server.script(Fault.delay(3), match="/primary/")
    spec = catalogue(
        model_server,
        model("baton-rules-small", f"{model_server.base_url}/primary/v1", "cheap", timeout_s=1),
        model("baton-rules-small", f"{model_server.base_url}/backup/v1", "cheap"),
    )
    async with routed(spec) as h:
        result, _ = await route(h, CHEAP_CONFIDENT)
    assert [c.outcome for c in result.usage.calls] == ["server_error", "ok"]
    assert "timed out" in result.usage.calls[0].note


@pytest.mark.parametrize("limit", [1, None])
async def test_max_concurrency_makes_excess_requests_wait(
    routed: Any, model_server: ScriptedModelServer, limit: int | None
) -> None:
    model_server.script(*[Fault.delay(0.6)] * 4, match="agent: triage_classifier")
    extra = {} if limit is None else {"max_concurrency": limit}
    async with routed(one_model(model_server, **extra)) as h:
        inputs = [
            TriageInput(tenant=h.tenant, case_id=f"C-{i}", subject="Help", body=CHEAP_CONFIDENT)
            for i in range(4)
        ]
        async with Worker(
            h.temporal,
            task_queue=h.client.task_queue,
            workflows=[RouteOnce],
            activities=h.runtime.activities,
        ):
            results = await asyncio.gather(
                *(
                    h.temporal.execute_workflow(
                        RouteOnce.run,
                        inp,
                        id=f"route-{uuid.uuid4().hex[:10]}",
                        task_queue=h.client.task_queue,
                    )  # fmt: skip
                    for inp in inputs
                )
            )
    assert all(r.usage.tier == "cheap" for r in results)  # every request answered, none failed
    # each request takes 0.6 s at the server: one at a time, they arrive at least that far apart
    arrivals = sorted(r["at"] for r in model_server.requests if r["agent"] == "triage_classifier")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 4
    if limit is None:
        assert min(gaps) < 0.3  # the control: without a limit the requests overlap
    else:
        assert min(gaps) >= 0.55


# -- schemas -----------------------------------------------------------------------------------


def test_the_reconcilers_schema_enumerates_the_allowed_accounts_from_policy_data() -> None:
    accounts = allowed_accounts(REPO_ROOT / "policy")
    assert "6100-bank-fees" in accounts and "9999-crypto-wallet" not in accounts
    schema = wire_schema(proposal_wire(accounts), pattern=True)
    entry = schema["properties"]["entries"]["items"]
    assert entry["properties"]["account"]["enum"] == sorted(accounts)
    assert entry["properties"]["amount"]["pattern"]  # a decimal string where the server takes it
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert set(schema["required"]) == {"entries", "no_entry_needed"}
    assert not schema_has_pattern(wire_schema(proposal_wire(accounts), pattern=False))


def test_the_shipped_local_catalogues_say_how_their_servers_are_asked() -> None:
    llama = load_catalogue(REPO_ROOT / "config" / "models.llama-cpp.json", "http://127.0.0.1:1/v1")
    assert {m.name: m.tier for m in llama.models} == {
        "smollm2-135m-instruct": "cheap",
        "qwen2.5-coder-0.5b-instruct": "strong",
    }
    for m in llama.models:
        assert (m.structured_output, m.schema_pattern) == ("json_object_schema", False)
        assert m.endpoint == "http://127.0.0.1:1/v1" and m.max_concurrency == 1
    ollama = load_catalogue(REPO_ROOT / "config" / "models.ollama.json")
    assert all(not m.schema_pattern for m in ollama.models)
    default = load_catalogue(REPO_ROOT / "config" / "models.json", "http://127.0.0.1:1/v1")
    assert {(m.structured_output, m.schema_pattern) for m in default.models} == {
        ("json_schema", True)
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "structured_output",
            "xml",
            "models.0.structured_output: expected one of "
            "json_schema|json_object_schema|tool_call|prompt, got 'xml'",
        ),
        ("max_tokens", 0, "models.0.max_tokens: Input should be greater than 0"),
        ("timeout_s", -1, "models.0.timeout_s: Input should be greater than 0"),
        ("timeout_s", 900, "models.0.timeout_s: must be below the agent activities' start-to"),
        ("max_concurrency", 0, "models.0.max_concurrency: Input should be greater than or equal"),
        ("schema_pattern", "maybe", "models.0.schema_pattern: Input should be a valid boolean"),
    ],
)
def test_catalogue_errors_name_the_field(field: str, value: Any, expected: str) -> None:
    raw = catalogue_dict()
    raw["models"][0][field] = value
    with pytest.raises(CatalogueError) as err:
        parse_catalogue(raw, "models.json")
    assert expected in str(err.value)


def catalogue_dict() -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "m",
                "endpoint": "http://127.0.0.1:1/v1",
                "tier": "cheap",
                "price_per_1k_input": 0,
                "price_per_1k_output": 0,
                "context_window": 1000,
                "region": "eu",
                "capabilities": ["triage"],
            }
        ],
        "task_classes": {"triage": {"capability": "triage"}},
    }


# -- answer checks (the functions a reviewer reads) -------------------------------------------


def reconciler_input() -> ProposeAdjustmentsInput:
    dup = LedgerLine(
        entry_id="L0002", booked_on="2030-04-02", account="2000-accounts-payable",
        amount="-300.00", reference="PAY-1", description="Payment",
    )  # fmt: skip
    return ProposeAdjustmentsInput.model_validate(
        {
            "tenant": "acme",
            "period": "2030-04",
            "unmatched_bank": [
                {
                    "line_id": "B0001",
                    "value_date": "2030-04-03",
                    "amount": "-12.50",
                    "reference": "FEE",
                    "memo": "Monthly fee",
                },
            ],  # fmt: skip
            "unmatched_ledger": [],
            "duplicate_ledger": [dup.model_dump(mode="json")],
            "duplicate_ledger_ids": ["L0002"],
        }
    )


def test_an_empty_reconciliation_is_refused_naming_every_item_left_out() -> None:
    check = answer_checks.reconciler(reconciler_input())
    problems = check(_WireProposal(entries=[]))
    assert problems == [
        "1 unmatched bank line(s) not addressed (cite each in an entry's source_ids or list it "
        "under no_entry_needed with a reason): B0001",
        "1 duplicate ledger entr(y/ies) not addressed (cite each in an entry's source_ids or "
        "list it under no_entry_needed with a reason): L0002",
    ]
    waived = _WireProposal.model_validate(
        {
            "entries": [
                {
                    "entry_id": "ADJ-B0001",
                    "account": "6100-bank-fees",
                    "amount": "-12.50",
                    "source_ids": ["B0001"],
                    "rationale": "fee",
                },
            ],  # fmt: skip
            "no_entry_needed": [{"source_id": "L0002", "reason": "reversed by the bank"}],
        }
    )
    assert check(waived) == []
    invented = waived.model_copy(update={"no_entry_needed": []})
    invented.entries[0].source_ids.append("B9999")
    assert any("not in the input: B9999" in p for p in check(invented))


def test_a_memo_without_the_counts_it_was_given_is_refused() -> None:
    inp = MemoInput(
        tenant="acme", period="2030-04", matched=212, unmatched_bank=3, unmatched_ledger=0,
        entries=[], compliance_summary="none",
    )  # fmt: skip
    check = answer_checks.memo(inp)
    [problem] = check(_WireMemo(memo="ACME, 2014-09"))
    assert "bank lines matched (212)" in problem and "unmatched bank lines (3)" in problem
    good = "212 bank lines matched; 3 bank lines and no ledger entries left unmatched; 0 entries."
    assert check(_WireMemo(memo=good)) == []


def test_extract_json_finds_the_document_in_a_chatty_reply() -> None:
    assert extract_json('Here:\n```json\n{"a": "}"}\n```') == '{"a": "}"}'
    assert extract_json('The answer is {"a": {"b": 1}} as asked.') == '{"a": {"b": 1}}'


# -- through the finance close -----------------------------------------------------------------


@pytest.fixture
async def pattern_free(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> Any:
    """A finance-close harness whose catalogue says the servers take no ``pattern``."""
    raw = json.loads((REPO_ROOT / "config" / "models.json").read_text())
    for m in raw["models"]:
        m["schema_pattern"] = False
        m["structured_output"] = "json_object_schema"
    path = tmp_path / "models.json"
    path.write_text(json.dumps(raw))
    async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as h:
        yield h


async def test_no_pattern_is_sent_when_the_catalogue_says_the_server_takes_none(
    pattern_free: Harness,
) -> None:
    h = pattern_free
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await handle.terminate("test done")
    asked = [r for r in h.model.requests if h.period in r["raw"]]
    reconciler = [r["body"] for r in asked if r["agent"] == "reconciler"]
    assert reconciler, "the reconciler was never asked"
    for body in reconciler:
        schema = body["response_format"]["schema"]
        assert body["response_format"]["type"] == "json_object"
        assert not schema_has_pattern(schema)
        account = schema["properties"]["entries"]["items"]["properties"]["account"]
        assert "6900-suspense" in account["enum"]
    # the allowed accounts travel in the reconciler's input too: the context of its answer
    payload = json.loads(reconciler[0]["messages"][1]["content"])
    assert "6100-bank-fees" in payload["allowed_accounts"]


async def test_an_empty_reconciliation_is_refused_repaired_escalated_then_fails_posting_nothing(
    harness: Harness,
) -> None:
    h = harness
    h.model.script(*[Fault.output({"entries": []})] * 4, match=h.period)
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "AgentAnswerIncomplete"
    message = str(failed.value.cause.cause)
    assert "reconciler: the answer was refused" in message and "not addressed" in message
    asked = [r for r in h.model.requests if h.period in r["raw"] and r["agent"] == "reconciler"]
    # answer, repair turn (same model), the strong model, its repair turn: then it stops
    assert [r["body"]["model"] for r in asked] == [
        "baton-rules-small", "baton-rules-small", "baton-rules-large", "baton-rules-large",
    ]  # fmt: skip
    repair = asked[1]["body"]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == '{"entries": []}'
    assert (
        "Your answer was refused" in repair[3]["content"]
        and "not addressed" in repair[3]["content"]
    )
    assert postings(h) == []  # nothing posted on a refused answer
    # every refused answer's audit row says why
    rows = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "model.invalid_output"]
    assert len(rows) == 4
    for row in rows:
        note = json.loads(row.detail_json)["note"]
        assert note.startswith("refused (meaning): ") and "not addressed" in note
    assert [c.outcome for c in spend.charges_of(h.db, handle.id)] == ["invalid_output"] * 4


async def test_a_bad_memo_and_a_finding_on_an_unknown_entry_are_refused_and_repaired(
    harness: Harness,
) -> None:
    h = harness
    h.model.script(Fault.output({"memo": "ACME, 2014-09"}), match="agent: close_memo_writer")
    bogus = {"entry_id": "ADJ-NOPE", "severity": "warning", "note": "looks odd"}
    h.model.script(
        Fault.output({"summary": "one finding", "findings": [bogus]}),
        match="agent: compliance_checker",
    )
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await handle.terminate("test done")
    trail = h.runtime.ledger.trail(handle.id)
    refused = {
        r.actor: json.loads(r.detail_json)["note"]
        for r in trail
        if r.action == "model.invalid_output"
    }
    assert "does not state these counts" in refused["agent:close_memo_writer"]
    assert "ADJ-NOPE" in refused["agent:compliance_checker"]
    # the repair turn's answer (the rules) was accepted: the memo states the counts
    memo = [r for r in trail if r.action == "agent.wrote_memo"]
    assert len(memo) == 1
    assert h.model.pending_faults == []


def test_the_auctions_default_tiers_name_the_catalogues_models() -> None:
    from activities.auction import catalogue_tiers

    llama = load_catalogue(REPO_ROOT / "config" / "models.llama-cpp.json", "http://127.0.0.1:1/v1")
    tiers = {t.name: t.model for t in catalogue_tiers(llama)}
    assert tiers == {
        "small": "smollm2-135m-instruct",
        "medium": "qwen2.5-coder-0.5b-instruct",
        "large": "qwen2.5-coder-0.5b-instruct",
    }
    default = load_catalogue(REPO_ROOT / "config" / "models.json", "http://127.0.0.1:1/v1")
    assert {t.model for t in catalogue_tiers(default)} == {"baton-rules-small", "baton-rules-large"}


async def test_the_auctions_unrouted_calls_follow_their_catalogue_entry(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    """The auction's agents call the model their tier names (no routing); when the catalogue
    lists that model, its entry says how it is asked."""
    from activities.auction import catalogue_tiers
    from tests.test_document_review import NDA, batch, task

    raw = json.loads((REPO_ROOT / "config" / "models.json").read_text())
    for m in raw["models"]:
        if m["name"] == "baton-rules-small":
            m.update(structured_output="tool_call", max_tokens=111)
    path = tmp_path / "models.json"
    path.write_text(json.dumps(raw))
    async with _harness(temporal_client, model_server, database_url, model_catalogue=path) as h:
        assert h.runtime.router is not None
        tiers = [t.model_dump() for t in catalogue_tiers(h.runtime.router.catalogue)]
        inp = batch(h, task(f"nda-{uuid.uuid4().hex[:6]}", "review:nda", NDA), tiers=tiers)
        async with h.worker():
            handle = await h.client.start_document_review(inp)
            result = await handle.result()
    [allocation] = result.allocations
    assert (allocation.status, allocation.winner) == ("reviewed", "small")
    small = [r["body"] for r in h.model.requests if r["body"]["model"] == "baton-rules-small"]
    assert {r["messages"][0]["content"].splitlines()[0] for r in small} == {
        "agent: auction_bidder",
        "agent: document_reviewer",
    }
    for body in small:
        assert body["max_tokens"] == 111 and "response_format" not in body
        assert body["tool_choice"]["function"]["name"] in ("auction_bidder", "document_reviewer")
    large = [r["body"] for r in h.model.requests if r["body"]["model"] == "baton-rules-large"]
    assert large and all(b["response_format"]["type"] == "json_schema" for b in large)


def test_the_other_agents_checks_name_what_is_missing() -> None:
    from activities.agents import _WireBoard
    from activities.auction import _WireReview
    from activities.customer_agents import _WirePlan
    from activities.support import _WireResearch
    from workflows.contracts import BoardAgentInput

    # HR: the agent's own key must be written; the checklist keeps what is there
    hire = {
        "tenant": "acme", "employee_id": "E1", "full_name": "Kim", "role": "engineer",
        "department": "eng", "country": "DE", "manager": "maya", "start_date": "2030-05-01",
        "id_document_verified": True,
    }  # fmt: skip
    inp = BoardAgentInput.model_validate(
        {
            "tenant": "acme",
            "employee_id": "E1",
            "hire": hire,
            "board": {"checklist": {"value": ["policies briefed"], "version": 1}},
        }
    )
    check = answer_checks.board(inp, "identity", frozenset({"identity", "checklist"}))
    only_checklist = {"writes": [{"key": "checklist", "items": ["x"], "reason": "done"}]}
    assert check(_WireBoard.model_validate(only_checklist)) == [
        "key 'identity' is not written (at least one item)",
        "the checklist write drops items already there: ['policies briefed']",
    ]
    # customer: a discount check exactly when a discount was requested
    plan = _WirePlan.model_validate(
        {
            "steps": [{"step_id": "s1", "kind": "intro_email", "instructions": "hi"}],
            "rationale": "short",
        }
    )
    assert answer_checks.customer_plan(10.0)(plan) == [
        "the plan has no onboarding_sequence step",
        "a 10.0% discount was requested but the plan has no discount_check step",
    ]
    # support: citations of passages that were not retrieved
    research = _WireResearch(answer="reset it", cited=["kb-1#0", "kb-9#9"], confidence=0.8)
    [problem] = answer_checks.research(["kb-1#0"])(research)
    assert "kb-9#9" in problem and "kb-1#0" in problem
    # auction: a flag must name the risky clause
    assert answer_checks.review(_WireReview(verdict="flag", findings=[], summary="risky")) == [
        "verdict 'flag' needs at least one finding naming the risky clause"
    ]


async def test_an_unrouted_call_repairs_a_refused_answer_and_audits_why(harness: Harness) -> None:
    """The auction's reviewer is not routed: its refused answer gets the repair turn on the same
    model, and an ``agent.answer_refused`` row saying why; the repaired answer is used."""
    from tests.test_document_review import CONTRACT, batch, task

    h = harness
    flag_without_findings = {"verdict": "flag", "findings": [], "summary": "risky"}
    h.model.script(Fault.output(flag_without_findings), match="agent: document_reviewer")
    async with h.worker():
        handle = await h.client.start_document_review(
            batch(h, task(f"msa-{uuid.uuid4().hex[:6]}", "review:contract", CONTRACT))
        )
        result = await handle.result()
    [allocation] = result.allocations
    assert allocation.review is not None and allocation.review.findings  # the repaired answer
    reviews = [r for r in h.model.requests if r["agent"] == "document_reviewer"]
    assert len(reviews) == 2 and reviews[1]["body"]["messages"][2]["role"] == "assistant"
    [row] = [r for r in h.runtime.ledger.trail(handle.id) if r.action == "agent.answer_refused"]
    detail = json.loads(row.detail_json)
    assert detail["note"] == (
        "refused (meaning): verdict 'flag' needs at least one finding naming the risky clause"
    )
    assert detail["turn"] == "first" and row.tokens and row.tokens > 0
