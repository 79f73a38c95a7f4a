"""The local model server: its rules, its OpenAI wire format, and the scripted fault server.

The wire tests go through the real ``openai`` SDK, the way the agent activities call it, and the
agent inputs are built from the contracts the workflows send, so a drift on either side shows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from baton.devstack.embeddings import EMBEDDING_MODEL_NAME
from baton.devstack.model_server import AgentInputError, ModelServer, respond
from baton.settings import LOCAL_MODEL_NAME
from tests.support.scripted_model import Fault, ScriptedModelServer
from tests.support.serving import serving
from workflows.contracts import (
    AdjustingEntry,
    BankLine,
    ComplianceFinding,
    LedgerLine,
    ProposeAdjustmentsInput,
)


def bank(line_id: str, amount: str, memo: str, reference: str = "REF") -> BankLine:
    return BankLine(
        line_id=line_id,
        value_date="2101-10-30",
        amount=Decimal(amount),
        reference=reference,
        memo=memo,
    )


def ledger(entry_id: str, amount: str, account: str = "1200-accounts-receivable") -> LedgerLine:
    return LedgerLine(
        entry_id=entry_id,
        booked_on="2101-10-11",
        account=account,
        amount=Decimal(amount),
        reference=f"INV-{entry_id}",
        description="Receipt (keyed by hand)",
    )


def reconciler_input(**overrides: Any) -> dict[str, Any]:
    inp = ProposeAdjustmentsInput(
        tenant="acme",
        period="2101-10",
        unmatched_bank=[
            bank("B0003", "-25.00", "Monthly account fee"),
            bank("B0001", "-18.50", "SWIFT charge"),
            bank("B0002", "317.42", "Credit interest"),
            bank("B0004", "2300.00", "Chargeback reversal Fabrikam"),
            bank("B0005", "765", "Refund from supplier Adatum Office"),
            bank("B0006", "18450.00", "Deposit without reference"),
        ],
        unmatched_ledger=[ledger("L0007", "1234.00")],
        duplicate_ledger=[ledger("L0009", "-50.5", "2000-payable")],
        duplicate_ledger_ids=["L0009"],
    )
    return {**json.loads(inp.model_dump_json()), **overrides}


def chat(agent: str, payload: Any, **extra: Any) -> dict[str, Any]:
    # compact, like pydantic's model_dump_json() in the agent activities
    user = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return {
        "model": LOCAL_MODEL_NAME,
        "messages": [
            {"role": "system", "content": f"agent: {agent}\nYou are the {agent}."},
            {"role": "user", "content": user},
        ],
        **extra,
    }


# -- the rules ------------------------------------------------------------------------------


def test_reconciler_books_each_unexplained_item_by_its_memo() -> None:
    out = respond("reconciler", reconciler_input())
    entries = {e["entry_id"]: e for e in out["entries"]}

    assert [e["entry_id"] for e in out["entries"]] == sorted(entries)
    assert {k: (v["account"], v["amount"], v["source_ids"]) for k, v in entries.items()} == {
        "ADJ-B0001": ("6100-bank-fees", "-18.50", ["B0001"]),
        "ADJ-B0002": ("7100-interest-income", "317.42", ["B0002"]),
        "ADJ-B0003": ("6100-bank-fees", "-25.00", ["B0003"]),
        # "chargeback" contains "charge": the refund rule must win over the fee rule
        "ADJ-B0004": ("1200-accounts-receivable", "2300.00", ["B0004"]),
        "ADJ-B0005": ("1200-accounts-receivable", "765.00", ["B0005"]),
        "ADJ-B0006": ("6900-suspense", "18450.00", ["B0006"]),
        "ADJ-DUP-L0009": ("2000-payable", "50.50", ["L0009"]),
        "ADJ-L0007": ("6900-suspense", "-1234.00", ["L0007"]),
    }
    for entry in out["entries"]:
        AdjustingEntry.model_validate(entry)  # what the workflow will build from it
    assert "B0006" in entries["ADJ-B0006"]["rationale"]
    assert "18450.00" in entries["ADJ-B0006"]["rationale"]
    assert "L0009" in entries["ADJ-DUP-L0009"]["rationale"]
    assert "twice" in entries["ADJ-DUP-L0009"]["rationale"]


def test_reconciler_is_deterministic() -> None:
    assert respond("reconciler", reconciler_input()) == respond("reconciler", reconciler_input())


def test_duplicates_may_also_come_inside_unmatched_ledger() -> None:
    dup = json.loads(ledger("L0222", "99.99").model_dump_json())
    inp = reconciler_input(
        unmatched_bank=[], unmatched_ledger=[dup], duplicate_ledger_ids=["L0222"]
    )
    del inp["duplicate_ledger"]
    [entry] = respond("reconciler", inp)["entries"]
    assert (entry["entry_id"], entry["account"], entry["amount"]) == (
        "ADJ-DUP-L0222",
        "1200-accounts-receivable",
        "-99.99",
    )


def test_duplicate_without_details_is_refused_with_a_clear_message() -> None:
    inp = reconciler_input(duplicate_ledger_ids=["L0222"])
    with pytest.raises(AgentInputError, match="L0222.*account and amount"):
        respond("reconciler", inp)


def test_compliance_checker_flags_suspense_large_and_denied_entries() -> None:
    entries = respond("reconciler", reconciler_input())["entries"]
    decisions = [
        {
            "decision_id": "d-1",
            "policy": "baton/finance/posting",
            "verdict": "deny",
            "reasons": ["account 2000-payable is not allowed for adjustments"],
            "subject": "ADJ-DUP-L0009",
        },
        {
            "decision_id": "d-2",
            "policy": "baton/finance/posting",
            "verdict": "allow",
            "reasons": [],
            "subject": "ADJ-B0001",
        },
    ]
    inp = {"tenant": "acme", "period": "2101-10", "entries": entries, "decisions": decisions}
    out = respond("compliance_checker", inp)

    found = {(f["entry_id"], f["severity"]) for f in out["findings"]}
    assert found == {
        ("ADJ-B0006", "warning"),  # suspense ...
        ("ADJ-L0007", "warning"),  # suspense
        ("ADJ-DUP-L0009", "blocker"),
    }
    assert sum(f["entry_id"] == "ADJ-B0006" for f in out["findings"]) == 2  # ... and large
    assert any("suspense" in f["note"] for f in out["findings"])
    assert "8 adjusting entries" in out["summary"]
    assert "3 warning(s), 1 blocker(s)" in out["summary"]
    for finding in out["findings"]:
        ComplianceFinding.model_validate(finding)


def test_reviser_moves_entries_to_an_account_named_in_the_comment() -> None:
    entry = {
        "entry_id": "ADJ-X",
        "account": "6900-suspense",
        "amount": "1500.00",
        "source_ids": ["X"],
        "rationale": "parked",
    }
    moved = respond("reviser", {"entries": [entry], "comment": "book it to 6100-bank-fees"})
    assert moved["entries"][0]["account"] == "6100-bank-fees"
    assert moved["entries"][0]["amount"] == "1500.00" and moved["entries"][0]["entry_id"] == "ADJ-X"
    kept = respond("reviser", {"entries": [entry], "comment": "explain it better"})
    assert kept["entries"][0]["account"] == "6900-suspense"
    assert "no account named" in kept["entries"][0]["rationale"]


def test_close_memo_names_period_counts_and_totals() -> None:
    entries = respond("reconciler", reconciler_input())["entries"]
    inp = {
        "tenant": "acme",
        "period": "2101-10",
        "matched": 212,
        "unmatched_bank": 6,
        "unmatched_ledger": 2,
        "entries": entries,
        "compliance_summary": "Reviewed 8 adjusting entries: 3 warning(s), 0 blocker(s).",
    }
    memo = respond("close_memo_writer", inp)["memo"]
    net = sum(Decimal(e["amount"]) for e in entries)
    assert "2101-10" in memo and "212" in memo
    assert f"net {net:.2f}" in memo
    assert "3 warning(s)" in memo
    assert 3 < len(memo.splitlines()) <= 15


@pytest.mark.parametrize(
    ("agent", "payload", "message"),
    [
        ("poet", {}, "unknown agent 'poet'"),
        ("reconciler", {"unmatched_bank": "nope"}, "'unmatched_bank' must be a list"),
        ("close_memo_writer", {"entries": [], "matched": "many"}, "'matched' must be an integer"),
    ],
)
def test_bad_input_is_an_agent_input_error(agent: str, payload: Any, message: str) -> None:
    with pytest.raises(AgentInputError, match=message):
        respond(agent, payload)


# -- the wire format, through the openai SDK ------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    with serving(ModelServer()) as srv:
        yield srv


@pytest.fixture
async def client(server: ModelServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0) as c:
        yield c


async def test_chat_completion_speaks_openai_json_schema_mode(client: AsyncOpenAI) -> None:
    payload = reconciler_input()
    body = chat("reconciler", payload)
    schema = {"name": "reconciler", "schema": {"type": "object"}, "strict": True}
    response = await client.chat.completions.create(
        model="my-deployment",
        messages=body["messages"],
        response_format={"type": "json_schema", "json_schema": schema},
    )
    content = response.choices[0].message.content or ""
    assert json.loads(content) == respond("reconciler", payload)
    assert response.model == "my-deployment"  # echoes the requested model, as providers do
    assert response.object == "chat.completion"
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.role == "assistant"
    prompt_chars = sum(len(m["content"]) for m in body["messages"])
    assert response.usage is not None
    assert response.usage.prompt_tokens == -(-prompt_chars // 4)
    assert response.usage.completion_tokens == -(-len(content) // 4)
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


async def test_unknown_agent_is_a_400_in_openai_error_shape(client: AsyncOpenAI) -> None:
    body = chat("poet", {})
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=LOCAL_MODEL_NAME, messages=body["messages"])
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "unknown agent 'poet'; this server knows: "
        "auction_bidder, case_summarizer, close_memo_writer, compliance_checker, "
        "customer_planner, discount_analyst, document_reviewer, entitlement_prompter, "
        "identity_verifier, intro_email_writer, l2_researcher, onboarding_sequencer, "
        "policy_educator, reconciler, reviser, ticketing_integrator, triage_classifier",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (chat("reconciler", "not json"), "user message is not valid JSON"),
        (chat("reconciler", "[1, 2]"), "must be a JSON object"),
        ({"model": "m", "messages": [{"role": "user", "content": "{}"}]}, "agent: <name>"),
        (chat("reconciler", reconciler_input(), stream=True), "streaming is not supported"),
    ],
)
async def test_unusable_requests_are_400(
    server: ModelServer, body: dict[str, Any], message: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_models_and_health(server: ModelServer, client: AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == [LOCAL_MODEL_NAME, EMBEDDING_MODEL_NAME]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        health = await http.get("/health")
        missing = await http.get("/v1/nothing")
    assert health.status_code == 200
    assert missing.status_code == 404


async def test_stop_closes_kept_alive_connections() -> None:
    srv = ModelServer()
    port = srv.start()
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        assert (await http.get("/health")).status_code == 200
        srv.stop()
        with pytest.raises(httpx.TransportError):
            await http.get("/health")
        srv.start(port=port)  # a restart on the same port serves again
        try:
            assert (await http.get("/health")).status_code == 200
        finally:
            srv.stop()


# -- the scripted server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedModelServer]:
    srv = ScriptedModelServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def sclient(scripted: ScriptedModelServer) -> AsyncIterator[AsyncOpenAI]:
    scripted.reset()
    async with AsyncOpenAI(base_url=scripted.url, api_key="x", max_retries=0, timeout=5) as c:
        yield c


async def ask(client: AsyncOpenAI, agent: str = "reconciler", **payload: Any) -> Any:
    body = chat(agent, reconciler_input(**payload))
    return await client.chat.completions.create(model=LOCAL_MODEL_NAME, messages=body["messages"])


async def test_status_faults_reach_the_sdk_with_retry_after(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(Fault.status(429, retry_after=2), Fault.status(503), Fault.status(400))
    with pytest.raises(openai.RateLimitError) as limited:
        await ask(sclient)
    assert limited.value.response.headers["retry-after"] == "2"
    assert isinstance(limited.value.body, dict) and "429" in limited.value.body["message"]
    with pytest.raises(openai.InternalServerError) as unavailable:
        await ask(sclient)
    assert unavailable.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        await ask(sclient)
    assert (await ask(sclient)).choices[0].message.content  # script used up: rules again
    assert [r["fault"].kind if r["fault"] else None for r in scripted.requests] == [
        "status",
        "status",
        "status",
        None,
    ]
    assert scripted.attempts("reconciler") == 4
    assert scripted.requests[0]["body"]["messages"][0]["content"].startswith("agent: reconciler")


async def test_status_fault_with_custom_body(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(Fault.status(500, body="<html>upstream exploded</html>"))
    with pytest.raises(openai.InternalServerError) as caught:
        await ask(sclient)
    assert "upstream exploded" in caught.value.response.text


async def test_malformed_and_chosen_outputs(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    proposal = {"entries": [{"entry_id": "ADJ-X", "account": "9999-bribes", "amount": "1.00"}]}
    scripted.script(Fault.malformed(), Fault.output(proposal))
    garbage = (await ask(sclient)).choices[0].message.content or ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage)
    chosen = await ask(sclient)
    assert json.loads(chosen.choices[0].message.content or "") == proposal
    assert chosen.usage is not None and chosen.usage.completion_tokens > 0


async def test_faults_only_hit_matching_requests_in_order(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(Fault.status(500), match="agent: compliance_checker")
    scripted.script(Fault.status(502), Fault.status(504), match='"period":"2101-11"')
    assert await ask(sclient)  # reconciler, period 2101-10: matches neither
    with pytest.raises(openai.InternalServerError) as first:
        await ask(sclient, period="2101-11")
    with pytest.raises(openai.InternalServerError) as second:
        await ask(sclient, period="2101-11")
    assert (first.value.status_code, second.value.status_code) == (502, 504)
    assert len(scripted.pending_faults) == 1
    assert scripted.attempts(match="2101-11") == 2


async def test_delay_longer_than_the_client_timeout_is_a_timeout(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(Fault.delay(0.3), Fault.delay(30))
    started = time.monotonic()
    assert await ask(sclient)  # a slow but good answer
    assert time.monotonic() - started >= 0.3
    with pytest.raises(openai.APITimeoutError):
        await sclient.with_options(timeout=0.3).chat.completions.create(
            model=LOCAL_MODEL_NAME, messages=chat("reconciler", reconciler_input())["messages"]
        )


async def test_disconnect_is_a_connection_error(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(Fault.disconnect())
    with pytest.raises(openai.APIConnectionError):
        await ask(sclient)
    assert await ask(sclient)


async def test_script_is_consumed_exactly_once_under_concurrency(
    scripted: ScriptedModelServer, sclient: AsyncOpenAI
) -> None:
    scripted.script(*[Fault.status(503) for _ in range(10)])
    results = await asyncio.gather(*(ask(sclient) for _ in range(60)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, openai.InternalServerError)]
    answers = [r for r in results if not isinstance(r, BaseException)]
    assert (len(failures), len(answers)) == (10, 50), results
    assert scripted.attempts() == 60
    assert scripted.pending_faults == []


async def test_stop_wakes_a_delayed_request() -> None:
    srv = ScriptedModelServer()
    srv.start()
    srv.script(Fault.delay(60))

    async def slow_call() -> Any:
        async with AsyncOpenAI(base_url=srv.url, api_key="x", max_retries=0) as c:
            return await ask(c)

    task = asyncio.ensure_future(slow_call())
    while not srv.requests:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.to_thread(srv.stop)
    assert time.monotonic() - started < 5
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=5)


def test_onboarding_agents_write_their_key_and_append_to_the_checklist_they_read() -> None:
    hire = {"employee_id": "E1", "role": "engineer", "department": "engineering",
            "country": "FR", "id_document_verified": True}  # fmt: skip
    board = {"checklist": {"value": ["identity checked"], "version": 1}}
    writes = respond("entitlement_prompter", {"hire": hire, "board": board})["writes"]
    assert writes[0]["key"] == "entitlements" and "aws:admin" in writes[0]["items"]
    assert writes[1] == {
        "key": "checklist",
        "items": ["identity checked", "accesses proposed"],
        "reason": "entitlement proposal written",
    }
    policies = respond("policy_educator", {"hire": hire, "board": {}})["writes"][0]["items"]
    assert any(p.startswith("right-to-disconnect") for p in policies)
    identity = respond("identity_verifier", {"hire": {**hire, "id_document_verified": False}})
    assert identity["writes"][0]["items"][0] == "unverified: E1"
    with pytest.raises(AgentInputError, match="'hire' must be an object"):
        respond("identity_verifier", {"hire": "E1"})


def test_the_stand_in_checks_the_structured_output_request_shapes() -> None:
    from baton.devstack.model_server import AgentInputError, chat_completion, parse_chat_request

    def body(**extra: object) -> dict[str, object]:
        return {
            "model": "m",
            "messages": [
                {"role": "system", "content": "agent: case_summarizer"},
                {"role": "user", "content": '{"case_id": "C1"}'},
            ],
            **extra,
        }

    schema = {"type": "object", "properties": {}}
    for fmt in (
        {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
        {"type": "json_object", "schema": schema},
        {"type": "json_object"},
    ):
        assert parse_chat_request(body(response_format=fmt))[0] == "case_summarizer"
    for fmt, field in (
        ({"type": "json_schema", "schema": schema}, "response_format.json_schema"),
        ({"type": "json_object", "schema": "x"}, "response_format.schema"),
        ({"type": "grammar"}, "response_format.type"),
    ):
        with pytest.raises(AgentInputError, match=field):
            parse_chat_request(body(response_format=fmt))
    tool = {"type": "function", "function": {"name": "case_summarizer", "parameters": schema}}
    forced = {"type": "function", "function": {"name": "case_summarizer"}}
    with pytest.raises(AgentInputError, match="tool_choice"):
        parse_chat_request(body(tools=[tool], tool_choice="auto"))
    # a forced tool is answered as that tool's call, its arguments the JSON answer
    answer = chat_completion(body(tools=[tool], tool_choice=forced), '{"summary": "s"}')
    [choice] = answer["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "case_summarizer", "arguments": '{"summary": "s"}'}
