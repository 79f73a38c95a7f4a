"""The base policy and redaction around every model call, in the real finance close: real dev
server, real openai SDK over HTTP to the scripted model server (which records every request),
real OPA evaluator, real database.

* A period whose unmatched bank memos and ledger descriptions hold an email, a phone number, an
  IBAN, a card number and national ids closes, the model server never receives any of them,
  and the audit trail records which kinds were masked and how many (never the values).
* A tenant whose allowed model regions exclude the configured one: the first agent step is
  denied (PolicyDenied, nothing sent, nothing posted).
* A tenant at its daily spend cap: denied the same way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities import spend
from activities.agents import (
    AGENT_CALL_POLICY,
    VERBATIM_FIELDS,
    _denied,
    agent_call_policy_input,
)
from activities.database import BankStatementLine, JournalPosting
from activities.policy import EmbeddedOpaEngine, build_engine, decide
from activities.seed import PII_SAMPLES, seed_period
from baton.settings import REPO_ROOT
from tests.conftest import Harness, _harness
from tests.support.failures import expect_failure
from tests.support.scripted_model import ScriptedModelServer, searchable_text
from workflows.contracts import Obligations, PolicyDecision, PolicyQuery

AGENTS = ("reconciler", "compliance_checker", "close_memo_writer")


def failure(err: WorkflowFailureError) -> ApplicationError | None:
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    return cause


async def close_fails_with(
    h: Harness, error_type: str, message: str
) -> tuple[WorkflowHandle[Any, Any], ApplicationError]:
    """Run this test's close (its worker running): it fails with a non-retryable
    ``error_type`` whose message has ``message``. Its handle and that error."""
    handle = await h.client.start_finance_close(h.start_input())
    error = failure(await expect_failure(handle))
    assert error is not None and error.type == error_type and error.non_retryable
    assert message in str(error)
    return handle, error


def raw_forms(value: str) -> set[str]:
    """A sample as written and without its spaces/dashes (how a leak could also look)."""
    return {value, value.replace(" ", ""), value.replace("-", ""), value.replace(" ", "-")}


def period_requests(h: Harness) -> list[dict[str, Any]]:
    return [r for r in h.model.requests if h.period in r["raw"]]


def postings(h: Harness) -> list[JournalPosting]:
    with h.db.session() as s:
        return list(s.exec(select(JournalPosting).where(JournalPosting.period == h.period)).all())


async def test_personal_data_never_reaches_the_model_and_the_close_completes(
    harness: Harness,
) -> None:
    h = harness
    seed_period(h.db, h.tenant, h.period, pii_samples=True)
    with h.db.session() as s:
        pii_lines = {
            line.reference: line.line_id
            for line in s.exec(
                select(BankStatementLine).where(
                    BankStatementLine.tenant == h.tenant, BankStatementLine.period == h.period
                )
            )
            if line.reference in ("UNKNOWN-1", "UNKNOWN-2", "RFD-1", "CB-1")
        }
    assert len(pii_lines) == 4

    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await h.wait_for_pending(handle.id)
        await h.client.approve(handle.id, approver="carol", rationale="checked, PII masked")
        result = await handle.result()

    # What the model endpoint saw: every agent call, none with a raw value, all with masks.
    sent = period_requests(h)
    assert {r["agent"] for r in sent} >= set(AGENTS)
    for request in sent:
        text = request["raw"] + "\n" + searchable_text(request["raw"].encode())
        for name, value in PII_SAMPLES.items():
            for form in raw_forms(value):
                assert form not in text, f"{name} reached the {request['agent']} agent"
    reconciler = next(r for r in sent if r["agent"] == "reconciler")
    user = json.loads(reconciler["body"]["messages"][1]["content"])
    memos = {line["reference"]: line["memo"] for line in user["unmatched_bank"]}
    assert memos["UNKNOWN-1"] == "Deposit without reference, payer [email]"
    assert memos["UNKNOWN-2"] == "Cash deposit branch 0042, depositor tel [phone]"
    assert memos["RFD-1"] == "Refund from supplier Adatum Office to IBAN [iban]"
    assert memos["CB-1"] == "Chargeback reversal Fabrikam card [card]"
    descriptions = [e["description"] for e in user["unmatched_ledger"]]
    assert "Receipt (keyed by hand), customer SSN [national_id]" in descriptions
    assert "Receipt (keyed by hand), customer NI number [national_id]" in descriptions
    # ids, amounts and dates went verbatim, so the answers still parse and map back
    posted_ids = {p.entry_id for p in result.posted}
    assert {f"ADJ-{line_id}" for line_id in pii_lines.values()} <= posted_ids
    assert {e["line_id"] for e in user["unmatched_bank"]} >= set(pii_lines.values())

    # The close completed.
    assert result.posted and len(postings(h)) == len(result.posted)

    # The audit trail: one policy decision per model call, and each agent row says what was
    # masked, under which decision and policy revision -- never a value.
    trail = h.runtime.ledger.trail(handle.id)
    # the worker's bundle: Baton's policies and installed extensions' (baton/extensions.py)
    revision = h.runtime.policy.bundle.revision  # type: ignore[attr-defined]
    decisions = [r for r in trail if r.actor == f"policy:{AGENT_CALL_POLICY}"]
    assert len(decisions) == len(sent) and {r.action for r in decisions} == {"policy.allow"}
    assert all(json.loads(r.detail_json)["revision"] == revision for r in decisions)
    proposed = next(r for r in trail if r.action == "agent.proposed_adjustments")
    detail = json.loads(proposed.detail_json)
    assert detail["redacted"] == {"email": 1, "phone": 1, "iban": 1, "card": 1, "national_id": 2}
    assert detail["redact"] == ["card", "email", "iban", "national_id", "phone"]
    assert detail["policy"]["revision"] == revision
    assert proposed.decision_id == detail["policy"]["decision_id"]
    assert proposed.decision_id in {r.decision_id for r in decisions}
    for row in trail:
        stored = row.detail_json + row.rationale
        for value in PII_SAMPLES.values():
            assert value not in stored, f"{row.action} stored a raw value"
    assert h.runtime.ledger.verify().ok

    # What the calls cost is recorded per tenant and UTC day, once per call.
    today = spend.utc_day(datetime.now(UTC))
    assert spend.spent_on(h.db, h.tenant, today) == pytest.approx(result.cost_usd, abs=1e-6)


async def test_no_redaction_for_a_tenant_that_does_not_ask_for_it(harness: Harness) -> None:
    h = harness
    seed_period(h.db, "globex", h.period, pii_samples=True)
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input(tenant="globex"))
        await h.wait_for_pending(handle.id)
        await h.client.cancel(handle.id)
    reconciler = next(r for r in period_requests(h) if r["agent"] == "reconciler")
    assert PII_SAMPLES["iban"] in searchable_text(reconciler["raw"].encode())
    trail = h.runtime.ledger.trail(handle.id)
    row = next(r for r in trail if r.action == "agent.proposed_adjustments")
    assert json.loads(row.detail_json)["redacted"] == {}


async def test_model_region_outside_the_tenants_regions_denies_the_agent_step(
    temporal_client: Client, model_server: ScriptedModelServer, database_url: str, tmp_path: Path
) -> None:
    # a catalogue whose every endpoint is in the us: the router finds nowhere to reroute to
    catalogue = json.loads((REPO_ROOT / "config" / "models.json").read_text())
    for m in catalogue["models"]:
        m["region"] = "us"
    (tmp_path / "models.json").write_text(json.dumps(catalogue))
    async with _harness(
        temporal_client, model_server, database_url, model_catalogue=tmp_path / "models.json"
    ) as h:
        async with h.worker():
            handle, error = await close_fails_with(
                h,
                "PolicyDenied",
                "data residency: tenant 'acme' allows model endpoints in [eu] only",
            )
        assert list(error.details)[0]["reroute_regions"] == ["eu"]
        assert period_requests(h) == []  # nothing was sent
        assert postings(h) == []  # nothing was posted
        trail = h.runtime.ledger.trail(handle.id)
        denied = [r for r in trail if r.action == "policy.deny"]
        assert len(denied) == 1 and denied[0].actor == f"policy:{AGENT_CALL_POLICY}"
        detail = json.loads(denied[0].detail_json)
        assert (detail["model_region"], detail["reroute_regions"]) == ("us", ["eu"])
        assert trail[-1].action == "close.failed"


async def test_a_tenant_at_its_spend_cap_gets_no_model_call(harness: Harness) -> None:
    h = harness
    with h.db.session() as session:  # today's calls already cost the whole cap
        spend.record_in(
            session,
            spend.AgentSpend(
                tenant=h.tenant,
                day=spend.utc_day(datetime.now(UTC)),
                workflow_id="earlier",
                run_id="r",
                seq="s",
                agent="reconciler",
                cost_usd=250.0,
            ),
        )
    async with h.worker():
        # the router knows the tenant's remaining day before the request and refuses it
        await close_fails_with(h, "BudgetExceeded", "tenant daily cap 250.0 USD, 250.0 spent")
    assert period_requests(h) == [] and postings(h) == []


# ---------------------------------------------------------------------------------------------
# The pieces, without a workflow
# ---------------------------------------------------------------------------------------------


async def test_agent_call_input_speaks_the_policy_shape() -> None:
    engine = EmbeddedOpaEngine(REPO_ROOT / "policy")
    document = agent_call_policy_input(
        role="reconciler",
        tenant="acme",
        endpoint="http://127.0.0.1:8765/v1/",
        model="baton-rules-not-an-llm",
        region="eu",
        spent_today_usd=0.0,
        estimated_cost_usd=0.25,
        now=datetime(2026, 10, 30, 9, 15, tzinfo=UTC),
    )
    assert document["now"] == "2026-10-30T09:15:00Z"
    query = PolicyQuery(policy=AGENT_CALL_POLICY, input=document)
    allowed = await decide(engine, query, "d1")
    assert allowed.verdict == "allow"
    assert allowed.obligations.redact == ["card", "email", "iban", "national_id", "phone"]
    elsewhere = {**document, "model": {**document["model"], "region": "us"}}
    denied = await decide(engine, PolicyQuery(policy=AGENT_CALL_POLICY, input=elsewhere), "d2")
    assert (denied.verdict, denied.obligations.reroute_regions) == ("deny", ["eu"])


def decision(verdict: str, reasons: list[str]) -> PolicyDecision:
    return PolicyDecision(
        decision_id="wf/act/1/llm/1",
        policy=AGENT_CALL_POLICY,
        verdict=verdict,  # type: ignore[arg-type]
        reasons=reasons,
        obligations=Obligations(reroute_regions=["eu"]),
        revision="r1",
        engine="opa-embedded",
    )


def test_denials_map_to_errors_users_can_act_on() -> None:
    denied = _denied("reconciler", decision("deny", ["data residency: ..."]), None)
    assert (denied.type, denied.non_retryable) == ("PolicyDenied", True)
    assert list(denied.details) == [
        {"decision_id": "wf/act/1/llm/1", "revision": "r1", "reroute_regions": ["eu"]}
    ]
    down = _denied("reconciler", decision("deny", ["policy engine unavailable: Timeout"]), None)
    assert (down.type, down.non_retryable) == ("PolicyUnavailable", False)
    # BATON_POLICY_UNAVAILABLE=wait: the workflow, not the retry policy, waits for the engine
    waiting = build_engine(None, REPO_ROOT / "policy", when_unavailable="wait", max_wait_seconds=60)
    wait = _denied("reconciler", decision("deny", ["policy engine unavailable: Timeout"]), waiting)
    assert (wait.type, wait.non_retryable) == ("PolicyUnavailable", True)
    assert wait.details[0] == {"max_wait_seconds": 60}
    held = _denied("reconciler", decision("require_approval", ["needs a human"]), None)
    assert held.type == "PolicyDenied" and "cannot wait for" in str(held)


def test_verbatim_fields_are_ids_and_typed_values_only() -> None:
    # Free text must never be on the verbatim list, or it would go out unredacted.
    free_text = {"memo", "description", "reference", "rationale", "comment", "reasons"}
    assert not free_text & VERBATIM_FIELDS
    assert {"entry_id", "line_id", "source_ids", "amount", "account"} <= VERBATIM_FIELDS
