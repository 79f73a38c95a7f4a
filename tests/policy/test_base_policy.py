"""The base policy (policy/base/agent_call.rego) through the gate, on every engine.

* One table of decisions, run through embedded OPA, regorus AND the OPA REST path
  (opa-python-client against the local OPA-compatible server): all three give the same verdict,
  reasons and obligations, and the expected ones.
* decide()'s parsing of the base obligations (``redact``, ``reroute_regions``): well-formed ones
  become Obligations with any verdict, malformed ones a deny naming the field.
* Hot reload: editing a base data document (a spend cap, a tenant's regions or PII setting)
  changes the decisions of the same engine object, with a new revision.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activities.policy import EmbeddedOpaEngine, OpaRestEngine, RegorusEngine, decide
from baton.devstack.opa_server import OpaCompatibleServer
from tests.policy.test_policy_engines import FakeAnsweringEngine, held
from tests.policy.test_rego import AGENT_CALL, AGENT_CALL_CASES
from tests.support.cases import named_cases
from tests.support.paths import POLICY_DIR
from workflows.contracts import Obligations, PolicyDecision, PolicyQuery

AGENT_CALL_POLICY = "baton/base/agent_call"
ALL_KINDS = ["card", "email", "iban", "national_id", "phone"]


def query(document: dict[str, Any], policy: str = AGENT_CALL_POLICY) -> PolicyQuery:
    return PolicyQuery(policy=policy, input=document, subject="reconciler")


# (verdict, redact, reroute_regions, first reason starts with) per case of the shared table.
EXPECTED: dict[str, tuple[str, list[str], list[str], str]] = {
    "allowed-acme-redacted": ("allow", ALL_KINDS, [], ""),
    "allowed-globex-no-redaction": ("allow", [], [], ""),
    "globex-on-a-us-endpoint": ("allow", [], [], ""),
    "residency-us": ("deny", ALL_KINDS, ["eu"], "data residency: tenant 'acme'"),
    "residency-unknown-region": ("deny", ALL_KINDS, ["eu"], "data residency"),
    "region-missing": ("deny", ALL_KINDS, [], "the request does not name the model endpoint's"),
    "unknown-role": ("deny", ALL_KINDS, [], "unknown agent role 'intern'"),
    "unknown-action": ("deny", [], [], "unknown action 'wire_money'"),
    "role-not-allowed-the-action": ("deny", [], [], "agent role 'reconciler' may not perform"),
    "unknown-tenant": ("deny", [], [], "unknown tenant 'initech'"),
    "spend-at-cap": ("allow", ALL_KINDS, [], ""),
    "spend-a-micro-over-cap": ("deny", ALL_KINDS, [], "spend cap: tenant 'acme' may spend 250.00"),
    "spend-a-string": ("deny", ALL_KINDS, [], "spent_today_usd must be a number"),
    "estimate-missing": ("deny", ALL_KINDS, [], "estimated_cost_usd must be a number"),
    "globex-over-its-cap": ("deny", [], [], "spend cap: tenant 'globex' may spend 100.00"),
    "model-call-ignores-the-clock": ("allow", ALL_KINDS, [], ""),
    "email-in-window": ("allow", [], [], ""),
    "email-saturday": ("deny", [], [], "'send_customer_email' is only allowed mon,tue,wed,thu,fri"),
    "email-offset-west-closed": ("deny", [], [], "'send_customer_email' is only allowed"),
    "email-sunday-night-west": ("allow", [], [], ""),
    "email-feb-29-2026": ("deny", [], [], "the request has no valid time"),
    "email-feb-29-2028": ("allow", [], [], ""),
    "email-without-model-or-spend": ("allow", [], [], ""),
    "empty-input": ("deny", [], [], "unknown action '(missing)'"),
}


@pytest.fixture(scope="module")
async def three_engines() -> AsyncIterator[dict[str, Any]]:
    server = OpaCompatibleServer(POLICY_DIR)
    port = server.start("127.0.0.1", 0)
    rest = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    try:
        yield {
            "opa": EmbeddedOpaEngine(POLICY_DIR),
            "regorus": RegorusEngine(POLICY_DIR),
            "rest": rest,
        }
    finally:
        await rest.aclose()
        server.stop()


def comparable(decision: PolicyDecision) -> tuple[str, list[str], Obligations]:
    return decision.verdict, decision.reasons, decision.obligations


@pytest.mark.parametrize("case", sorted(AGENT_CALL_CASES))
async def test_base_policy_decides_alike_on_opa_regorus_and_rest(
    three_engines: dict[str, Any], case: str
) -> None:
    document = AGENT_CALL_CASES[case]
    decisions = {
        name: await decide(engine, query(document), f"base-{case}")
        for name, engine in three_engines.items()
    }
    assert decisions["rest"].engine == "opa-rest"
    assert comparable(decisions["opa"]) == comparable(decisions["regorus"]), case
    assert comparable(decisions["opa"]) == comparable(decisions["rest"]), case
    assert decisions["opa"].revision == decisions["regorus"].revision
    # No engine failure hides behind a deny: every reason is the policy's own.
    assert not any(r.startswith("policy ") for r in decisions["opa"].reasons), decisions["opa"]
    if case in EXPECTED:
        verdict, redact, reroute, reason = EXPECTED[case]
        got = decisions["opa"]
        assert (got.verdict, got.obligations.redact, got.obligations.reroute_regions) == (
            verdict,
            redact,
            reroute,
        )
        assert (got.reasons[0] if got.reasons else "").startswith(reason), got.reasons


def test_expected_table_names_real_cases() -> None:
    assert set(EXPECTED) <= set(AGENT_CALL_CASES)
    assert {v[0] for v in EXPECTED.values()} == {"allow", "deny"}


# ---------------------------------------------------------------------------------------------
# decide(): the base obligations
# ---------------------------------------------------------------------------------------------


async def test_redact_comes_with_an_allow_sorted_and_unique() -> None:
    document = {"allow": True, "deny": [], "redact": ["phone", "email", "phone"]}
    decision = await decide(FakeAnsweringEngine(document), query(AGENT_CALL), "ob-1")
    assert decision.verdict == "allow"
    assert decision.obligations == Obligations(redact=["email", "phone"])


async def test_reroute_regions_come_with_a_deny() -> None:
    document = {"allow": False, "deny": ["data residency"], "reroute_regions": ["eu", "us"]}
    decision = await decide(FakeAnsweringEngine(document), query(AGENT_CALL), "ob-2")
    assert (decision.verdict, decision.reasons) == ("deny", ["data residency"])
    assert decision.obligations == Obligations(reroute_regions=["eu", "us"])


async def test_redact_rides_along_with_approval_obligations() -> None:
    decision = await decide(FakeAnsweringEngine(held(redact=["iban"])), query(AGENT_CALL), "ob-3")
    assert decision.verdict == "require_approval"
    assert decision.obligations.redact == ["iban"]
    assert decision.obligations.approver_roles == ["cfo", "finance-controller"]
    assert decision.obligations.candidates  # the approval obligations are all still there


KINDS_TEXT = "card, email, iban, national_id, phone"

MALFORMED_BASE_OBLIGATIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "redact-a-string",
        {"allow": True, "redact": "email"},
        f"policy 'redact' is not a list of redaction kinds ({KINDS_TEXT}): 'email'",
    ),
    (
        "redact-unknown-kind",
        {"allow": True, "redact": ["email", "passport"]},
        f"policy 'redact' is not a list of redaction kinds ({KINDS_TEXT}): ['email', 'passport']",
    ),
    (
        "redact-a-number",
        {"allow": True, "redact": [1]},
        f"policy 'redact' is not a list of redaction kinds ({KINDS_TEXT}): [1]",
    ),
    (
        "redact-null",
        {"allow": True, "redact": None},
        f"policy 'redact' is not a list of redaction kinds ({KINDS_TEXT}): None",
    ),
    (
        "reroute-a-string",
        {"allow": False, "deny": ["x"], "reroute_regions": "eu"},
        "policy 'reroute_regions' is not a list of strings: 'eu'",
    ),
    (
        "reroute-with-a-number",
        {"allow": True, "reroute_regions": ["eu", 3]},
        "policy 'reroute_regions' is not a list of strings: ['eu', 3]",
    ),
    (
        "reroute-empty-name",
        {"allow": True, "reroute_regions": [""]},
        "policy 'reroute_regions' names an empty region: ['']",
    ),
    (
        "redact-malformed-next-to-approval",
        held(redact="all"),
        f"policy 'redact' is not a list of redaction kinds ({KINDS_TEXT}): 'all'",
    ),
]


@pytest.mark.parametrize(("document", "reason"), named_cases(MALFORMED_BASE_OBLIGATIONS))
async def test_malformed_base_obligations_deny_naming_the_field(
    document: dict[str, Any], reason: str
) -> None:
    decision = await decide(FakeAnsweringEngine(document), query(AGENT_CALL), "ob-m")
    assert (decision.verdict, decision.reasons) == ("deny", [reason])
    assert decision.obligations == Obligations()


# ---------------------------------------------------------------------------------------------
# Hot reload of the base data documents
# ---------------------------------------------------------------------------------------------


def edit_tenants(policy_dir: Path, tenant: str, **fields: Any) -> None:
    path = policy_dir / "data" / "tenants.json"
    document = json.loads(path.read_text())
    document["baton"]["tenants"][tenant].update(fields)
    path.write_text(json.dumps(document, indent=2))


async def test_editing_base_data_changes_decisions_without_a_new_engine(
    policy_copy: Path, reloading_engine: EmbeddedOpaEngine | RegorusEngine
) -> None:
    spender = {**AGENT_CALL, "spent_today_usd": 120.0, "estimated_cost_usd": 1.0}

    first = await decide(reloading_engine, query(spender), "hot-1")
    assert first.verdict == "allow"

    edit_tenants(policy_copy, "acme", daily_spend_cap_usd=100)  # a lower cap
    second = await decide(reloading_engine, query(spender), "hot-2")
    assert second.verdict == "deny"
    assert second.reasons == [
        "spend cap: tenant 'acme' may spend 100.00 USD a day on models; 120.00 spent today + "
        "1.00 estimated for this call would exceed it"
    ]
    assert second.revision != first.revision

    edit_tenants(policy_copy, "acme", daily_spend_cap_usd=500, allowed_model_regions=["us"])
    third = await decide(reloading_engine, query(spender), "hot-3")
    assert (third.verdict, third.obligations.reroute_regions) == ("deny", ["us"])

    edit_tenants(policy_copy, "acme", allowed_model_regions=["eu"], pii="none")
    fourth = await decide(reloading_engine, query(spender), "hot-4")
    assert (fourth.verdict, fourth.obligations.redact) == ("allow", [])
    assert len({first.revision, second.revision, third.revision, fourth.revision}) == 4
