"""An agent that acts as a step of a YAML process (processes/support_agent.yaml): the agent loop
runs inside the interpreter workflow, every tool call a governed step of the process, against
the real dev server (the harness), the real OPA evaluator, a real database and the scripted
model server over HTTP through the real openai SDK. Plus what ``baton validate`` says about a
wrong agent step, naming the field.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from activities.tools import credits_of
from tests.conftest import Harness, _harness
from tests.support import golden
from tests.support.approvals import decision, pending_approvals
from tests.support.scripted_model import Fault
from tests.test_mcp_tools import effects_dir, http_server, secret  # noqa: F401 - fixtures
from workflows.contracts import ApprovalDecision, ApprovalRequest
from workflows.dsl.client import start_process
from workflows.dsl.model import ProcessDefinition
from workflows.dsl.validate import load_definition, validate_text
from workflows.dsl.validate_agent import mcp_config, notes

PROCESS = Path(__file__).parents[1] / "processes" / "support_agent.yaml"
GOLDEN = golden.GOLDEN / "dsl_support_agent_approved.json"
AGENT = "case_resolver"
MATCH = f"agent: {AGENT}"


def credit(amount: float) -> tuple[str, dict[str, Any]]:
    return (
        "propose_credit",
        {"customer": "c-1", "case_id": "K-1", "amount_usd": amount, "reason": "late delivery"},
    )


FINAL = ("final_answer", {"answer": "We credited your account.", "cited": [], "actions": []})
LOOKUP = ("lookup_customer", {"customer": "c-1"})


def told(h: Harness, turn: int) -> list[str]:
    """The tool messages the model was shown on its ``turn``-th request (1-based)."""
    messages = h.model.turns(AGENT)[turn - 1]
    return [str(m.get("content")) for m in messages if m.get("role") == "tool"]


async def pending(h: Harness, wid: str) -> ApprovalRequest:
    return (await pending_approvals(h, wid))[0]


def approve(request: ApprovalRequest) -> ApprovalDecision:
    return decision(request, "sam", rationale="late parcel, 300 is fair")


async def run(h: Harness, d: ProcessDefinition, approve_credit: bool = True) -> Any:
    values = {"tenant": h.tenant, "customer": "c-1", "case_id": "K-1", "subject": "parcel late"}
    async with h.worker():
        handle = await start_process(
            h.temporal, d, values, task_queue=h.client.task_queue, requested_by="alice"
        )
        if approve_credit:
            request = await pending(h, handle.id)
            assert request.action == "tool:propose_credit"
            assert request.action_payload["arguments"]["amount_usd"] == 300
            assert "alice" in request.excluded  # who started the run may not approve it
            await h.client.decide(handle.id, approve(request))
        try:
            return handle.id, await handle.result()
        except WorkflowFailureError as err:
            return handle.id, err


def script_denied_then_approved_credit(h: Harness) -> None:
    """The agent's turns: look the customer up and ask a 5000 USD credit (above the hard
    limit), then ask 300 USD (a support lead must approve), then answer."""
    h.model.script(
        Fault.tool_calls(LOOKUP, credit(5000)),
        Fault.tool_calls(credit(300)),
        Fault.tool_calls(FINAL),
        match=MATCH,
    )


async def test_yaml_agent_is_denied_adapts_and_its_approved_credit_is_made(
    harness: Harness,
) -> None:
    """processes/support_agent.yaml: the agent looks the customer up (allowed), asks a 5000 USD
    credit (policy denies it: above the hard limit; the model reads why), asks 300 USD (a
    support lead must approve: sam does), then answers. One 300 USD credit is made; the
    process output lists each call with its verdict; the audit trail has every decision."""
    h = harness
    script_denied_then_approved_credit(h)
    wid, result = await run(h, load_definition(PROCESS))
    out = result.output
    assert out["answer"] == "We credited your account."
    assert out["tools_called"] == ["lookup_customer", "propose_credit", "propose_credit"]
    assert out["verdicts"] == ["allowed", "denied", "approved"]
    assert out["turns"] == 3
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [30000]
    assert told(h, 2)[-1] == (
        "policy denied the call of propose_credit: 5000.00 USD exceeds the limit of 1000.00 USD "
        "for 'propose_credit'"
    )
    approved = out["credits"][-1]
    assert approved["approved_by"] == ["sam"] and approved["arguments"]["amount_usd"] == 300
    trail = h.runtime.ledger.trail(wid)
    actions = [r.action for r in trail]
    assert {"support_agent.started", "support_agent.completed"} <= set(actions)
    assert [json.loads(r.detail_json)["tool"] for r in trail if r.action == "tool.called"] == [
        "lookup_customer",
        "propose_credit",
    ]
    assert "approval.approved" in actions
    [finished] = [json.loads(r.detail_json) for r in trail if r.action == "agent.finished"]
    assert (finished["step"], finished["tool_calls"], finished["denials"]) == ("resolve", 2, 1)
    assert h.runtime.ledger.verify().ok


async def test_a_later_failure_reverses_the_agents_credit(harness: Harness) -> None:
    """The agent's credit is a governed step of the process: when a later step fails, the
    process's saga reverses it (the tool's compensation, registered before it ran)."""
    h = harness
    text = PROCESS.read_text().replace(
        "output:\n  answer:",
        "  - id: refuse\n    type: fail\n    error: CaseEscalated\n"
        '    message: "after ${steps.resolve.output.tool_calls} calls"\n\noutput:\n  answer:',
    )
    d, issues = validate_text(text, "support_agent_fails.yaml")
    assert d is not None, issues
    h.model.script(Fault.tool_calls(credit(40)), Fault.tool_calls(FINAL), match=MATCH)
    wid, err = await run(h, d, approve_credit=False)
    assert isinstance(err, WorkflowFailureError)
    assert "after 1 calls" in str(err.cause)
    [made] = credits_of(h.db, h.tenant)
    assert made.amount_cents == 4000 and made.reversed_at is not None
    assert "tool.compensated" in [r.action for r in h.runtime.ledger.trail(wid)]


async def test_rejected_and_edited_calls_are_told_to_the_agent_and_in_the_output(
    harness: Harness,
) -> None:
    """sam rejects a 300 USD credit (the model reads his message), then edits the next one
    from 250 to 80 USD (allowed without another round): one 80 USD credit, never 300 or 250."""
    h = harness
    h.model.script(
        Fault.tool_calls(credit(300)),
        Fault.tool_calls(credit(250)),
        Fault.tool_calls(FINAL),
        match=MATCH,
    )
    values = {"tenant": h.tenant, "customer": "c-1", "case_id": "K-1", "subject": "late"}
    async with h.worker():
        handle = await start_process(
            h.temporal,
            load_definition(PROCESS),
            values,
            task_queue=h.client.task_queue,
            requested_by="alice",
        )
        first = await pending(h, handle.id)
        await h.client.decide(
            handle.id,
            decision(first, "sam", verdict="reject", rationale="too much for a late parcel"),
        )
        async with asyncio.timeout(30):
            while (second := await pending(h, handle.id)).request_id == first.request_id:
                await asyncio.sleep(0.1)
        smaller = {**second.action_payload["arguments"], "amount_usd": 80}
        await h.client.edit_tool_call(
            handle.id, approver="sam", rationale="80 is fair", arguments=smaller
        )
        result = await handle.result()
    calls = result.output["credits"]
    assert [c["verdict"] for c in calls] == ["rejected", "allowed"]
    assert calls[0]["told"] == "sam rejected this call: too much for a late parcel"
    assert told(h, 2) == ["sam rejected this call: too much for a late parcel"]
    assert calls[1]["edited"] is True and calls[1]["arguments"]["amount_usd"] == 80
    assert [c.amount_cents for c in credits_of(h.db, h.tenant)] == [8000]


async def test_golden_history_of_a_yaml_agent_run_replays(harness: Harness) -> None:
    """A recorded run of processes/support_agent.yaml (a lookup, a denied credit, an approved
    one, the answer) replays with today's interpreter and loop: regenerate only for a
    deliberate, patched change (BATON_REGENERATE_GOLDEN=1)."""

    from workflows.dsl.interpreter import ProcessWorkflow

    h = harness
    if golden.regenerating():
        script_denied_then_approved_credit(h)
        wid, _ = await run(h, load_definition(PROCESS))
        await golden.record(GOLDEN, h.temporal.get_workflow_handle(wid))
    await golden.load_and_replay(GOLDEN, "golden-dsl-agent", ProcessWorkflow)


# -- baton validate ------------------------------------------------------------------------------

BASE = """
name: agent_check
version: "1"
input:
  tenant: {type: string}
steps:
  - id: resolve
    type: agent
    agent:
"""


def problems(agent: str, inputs: str | None = None) -> list[str]:
    text = BASE + "\n".join("      " + line for line in agent.strip().splitlines()) + "\n"
    if inputs is not None:
        text = text.replace("  tenant: {type: string}", inputs)
    d, issues = validate_text(text, "a.yaml")
    assert d is None
    return [f"{i.line}:{i.message}" for i in issues]


def test_unknown_tool_and_answer_are_named_with_a_suggestion() -> None:
    found = problems(
        "instructions: help\ntools: [lookup_custmer, search_knowledge, search_knowledge]\n"
        "output: case_resolutoin"
    )
    assert any(
        p.startswith("11:agent.tools: unknown tool 'lookup_custmer' (did you mean "
                     "`lookup_customer`?)") for p in found
    ), found  # fmt: skip
    assert "11:agent.tools: 'search_knowledge' is listed twice" in found
    assert any(
        p.startswith("12:agent.output: unknown answer 'case_resolutoin' (did you mean "
                     "`case_resolution`?)") for p in found
    ), found  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "field"),
    [("{max_turns: 0}", "limits.max_turns"), ("{usd: '-1'}", "limits.usd"),
     ("{max_tool_calls: -3}", "limits.max_tool_calls")],
)  # fmt: skip
def test_limits_must_be_positive(limits: str, field: str) -> None:
    [found] = problems(f"instructions: help\ntools: [search_knowledge]\nlimits: {limits}")
    assert field in found and "greater than 0" in found


def test_retry_and_timeout_are_refused_for_an_agent_that_acts() -> None:
    text = BASE.replace("    type: agent\n", "    type: agent\n    timeout_seconds: 30\n")
    d, issues = validate_text(text + "      instructions: l2_researcher\n", "a.yaml")
    assert d is None
    assert [i.message for i in issues] == [
        "timeout_seconds does not apply to an agent that acts (its turns and tool calls use "
        "their presets): bound it with agent.limits"
    ]


def test_task_tenant_and_tools_are_required() -> None:
    found = problems("instructions: help\ninput: '${input.customer}'", "  customer: {type: string}")
    assert any("needs the process input 'tenant'" in p for p in found), found
    assert any("agent.tools: required unless agent.instructions names a declared" in p
               for p in found), found  # fmt: skip
    assert any("input expects object" in p for p in found), found


def test_mcp_tools_are_checked_against_the_configured_servers(tmp_path: Path) -> None:
    agent = "instructions: help\ntools: [mcp__crn__lookup_customer, mcp__bad]"
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"servers": [{"name": "crm", "transport": "http",
                                               "url": "http://127.0.0.1:9/mcp"}]}))  # fmt: skip
    with mcp_config(config):
        found = problems(agent)
    assert any("no MCP server 'crn' in the MCP configuration (did you mean `crm`?)" in p
               for p in found), found  # fmt: skip
    assert any("'mcp__bad' is not an MCP tool name mcp__<server>__<tool>" in p for p in found)


def test_without_an_mcp_configuration_mcp_tools_are_left_to_the_worker() -> None:
    text = BASE + "      instructions: help\n      tools: [mcp__crm__lookup_customer]\n"
    d, issues = validate_text(text, "a.yaml")
    assert d is not None, issues
    [note] = notes(d)
    assert "MCP tools mcp__crm__lookup_customer are checked when the worker starts" in note


def test_a_declared_agent_step_can_be_named_and_the_example_validates() -> None:
    d, issues = validate_text(BASE + "      instructions: l2_researcher\n", "a.yaml")
    assert d is not None, issues
    assert load_definition(PROCESS).name == "support_agent"


# -- MCP tools (a real MCP server over streamable HTTP: tests/support/mcp_server.py) ------------

CRM_PROCESS = """
name: crm_assistant            # the process name policy/data/mcp.json allow-lists for crm/*
version: "1"
input:
  tenant: {type: string}
  destination: {type: string}
steps:
  - id: ask
    type: agent
    agent:
      instructions: crm_assistant      # the declared agent step: its answer and role
      tools: [mcp__crm__lookup_customer, mcp__crm__export_customers]
      limits: {max_turns: 4, max_tool_calls: 4}
      input: {ask: "back up the customer list to ${input.destination}"}
output:
  answer: "${steps.ask.output.answer.answer}"
  verdicts: "${pluck(steps.ask.output.calls, 'verdict')}"
"""


async def test_yaml_agent_calls_mcp_tools_and_the_sensitive_one_waits_for_approval(
    temporal_client: Any,
    model_server: Any,
    http_server: str,  # noqa: F811 - the fixture of tests/test_mcp_tools.py
    effects_dir: Path,  # noqa: F811
    secret: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A YAML agent step with MCP tools: the lookup runs, the export (sensitive) waits for a
    support lead and runs once approved; the output lists both calls' verdicts."""
    from tests.test_mcp_tools import ENV_VAR, effects, mine, server_config, sha256

    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(server_config("http", http_server, effects_dir, sha256(secret))))
    monkeypatch.setenv(ENV_VAR, secret)
    destination = f"backup-{uuid.uuid4().hex[:6]}@acme.example"
    model_server.script(
        Fault.tool_calls(("mcp__crm__lookup_customer", {"customer_id": "C-1"})),
        Fault.tool_calls(("mcp__crm__export_customers", {"destination": destination})),
        Fault.tool_calls(("final_answer", {"answer": "Exported."})),
        match="agent: crm_assistant",
    )
    with mcp_config(path):
        d, issues = validate_text(CRM_PROCESS, "crm.yaml")
    assert d is not None, issues
    async with _harness(
        temporal_client, model_server, f"sqlite:///{tmp_path / 'b.db'}", mcp_config=path
    ) as h:
        values = {"tenant": h.tenant, "destination": destination}
        async with h.worker():
            handle = await start_process(
                h.temporal, d, values, task_queue=h.client.task_queue, requested_by="alice"
            )
            request = await pending(h, handle.id)
            assert request.action == "tool:mcp__crm__export_customers"
            assert mine(effects(effects_dir, "http"), destination) == []  # nothing before
            await h.client.decide(handle.id, approve(request))
            async with asyncio.timeout(90):
                result = await handle.result()
    assert result.output == {"answer": "Exported.", "verdicts": ["allowed", "approved"]}
    assert mine(effects(effects_dir, "http"), destination) == [
        {"tool": "export_customers", "destination": destination}
    ]
