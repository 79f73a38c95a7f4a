"""One meaning on every path: every policy table input gives the same decision on embedded OPA,
regorus and the REST path (opa-python-client against the local OPA-compatible server).

The inputs are the cross-check tables of tests/policy/test_rego.py (posting, grant, agent call)
and the tool-call table below. Compared: the PolicyDecision a governed step gets (verdict,
reasons, obligations) and the revision. For the embedded engine the fast path of each policy
(`deny`, built from `clean`) is also checked against its detailed rules (`problems`) on every
input: the fast path may only skip work, never change a verdict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from activities.policy import (
    EmbeddedOpaEngine,
    OpaRestEngine,
    PolicyUndefined,
    RegorusEngine,
    decide,
)
from baton.devstack.opa_server import OpaCompatibleServer
from tests.policy.test_rego import AGENT_CALL_CASES, APPROVAL_CASES, POSTING_CASES
from tests.support.paths import POLICY_DIR
from workflows.contracts import PolicyQuery

TOOL_CALL: dict[str, Any] = {
    "tool": "lookup_order",
    "arguments": {"order_id": "O-7"},
    "principal": {"role": "l2_researcher", "tenant": "acme", "requested_by": "alice"},
    "history": {"calls": {"lookup_order": 3}, "total_calls": 4},
    "approval": None,
}


def tool_call(**fields: Any) -> dict[str, Any]:
    return {**TOOL_CALL, **fields}


def refund(amount: Any, **fields: Any) -> dict[str, Any]:
    return tool_call(
        tool="issue_refund", arguments={"order_id": "O-7", "amount_usd": amount}, **fields
    )


TOOL_CALL_CASES: dict[str, dict[str, Any]] = {
    "lookup": tool_call(),
    "unknown-tool": tool_call(tool="wire_money"),
    "tool-a-number": tool_call(tool=7),
    "role-not-allowed": tool_call(tool="send_customer_email"),
    "principal-missing": {k: v for k, v in TOOL_CALL.items() if k != "principal"},
    "unknown-tenant": tool_call(principal={**TOOL_CALL["principal"], "tenant": "initech"}),
    "tool-limit-reached": tool_call(history={"calls": {"lookup_order": 20}, "total_calls": 20}),
    "run-limit-reached": tool_call(history={"calls": {}, "total_calls": 40}),
    "history-junk": tool_call(history={"calls": {"lookup_order": "x"}, "total_calls": -1}),
    "history-missing": {k: v for k, v in TOOL_CALL.items() if k != "history"},
    "refund-small": refund(60),
    "refund-at-threshold": refund(100),
    "refund-needs-approval": refund(120.5),
    "refund-over-limit": refund(5000.01),
    "refund-a-string": refund("120"),
    "refund-negative": refund(-3),
    "refund-approved": refund(120, approval={"action_digest": "d", "approvers": ["sam"]}),
    "refund-approved-by-requester": refund(
        120,
        principal={**TOOL_CALL["principal"], "requested_by": "sam"},
        approval={"action_digest": "d", "approvers": ["sam"]},
    ),
    "refund-approval-unbound": refund(120, approval={"approvers": ["sam"]}),
    "empty-input": {},
}

TABLES: dict[str, dict[str, dict[str, Any]]] = {
    "baton/finance/posting": POSTING_CASES,
    "baton/finance/approval": APPROVAL_CASES,
    "baton/base/agent_call": AGENT_CALL_CASES,
    "baton/base/tool_call": TOOL_CALL_CASES,
}
CASES = [(policy, case) for policy, table in TABLES.items() for case in table]


@pytest.fixture(scope="module")
async def engines() -> AsyncIterator[dict[str, Any]]:
    server = OpaCompatibleServer(POLICY_DIR)
    port = server.start("127.0.0.1", 0)
    rest = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    embedded = EmbeddedOpaEngine(POLICY_DIR)
    try:
        yield {"embedded": embedded, "regorus": RegorusEngine(POLICY_DIR), "rest": rest}
    finally:
        await rest.aclose()
        embedded.close()
        server.stop()


@pytest.mark.parametrize(("policy", "case"), CASES)
async def test_every_path_decides_alike(engines: dict[str, Any], policy: str, case: str) -> None:
    query = PolicyQuery(policy=policy, input=TABLES[policy][case], subject="parity")
    decisions = {
        name: await decide(engine, query, f"parity-{case}") for name, engine in engines.items()
    }
    seen = {
        name: (d.verdict, d.reasons, d.obligations.model_dump()) for name, d in decisions.items()
    }
    assert seen["embedded"] == seen["regorus"], case
    assert seen["embedded"] == seen["rest"], case
    assert decisions["embedded"].revision == decisions["regorus"].revision
    # A parity of failures would prove nothing: every answer is the policy's own.
    assert not any(r.startswith("policy ") for r in decisions["embedded"].reasons), seen


@pytest.mark.parametrize(("policy", "case"), CASES)
def test_fast_path_never_changes_the_verdict(
    engines: dict[str, Any], policy: str, case: str
) -> None:
    embedded = engines["embedded"]
    document = TABLES[policy][case]
    fast, _ = embedded.evaluate_sync(f"{policy}/deny", document)
    detailed, _ = embedded.evaluate_sync(f"{policy}/problems", document)
    assert fast == detailed
    if policy in ("baton/finance/posting", "baton/base/tool_call"):
        fast, _ = embedded.evaluate_sync(f"{policy}/require_approval", document)
        detailed = _defined(embedded, f"{policy}/approval_reasons", document)
        assert fast == detailed


def _defined(engine: EmbeddedOpaEngine, path: str, document: dict[str, Any]) -> Any:
    """The value of a partial set (undefined when no rule of it exists: the empty set)."""
    try:
        return engine.evaluate_sync(path, document)[0]
    except PolicyUndefined:
        return []


def test_tables_reach_every_verdict(engines: dict[str, Any]) -> None:
    embedded = engines["embedded"]
    for policy in ("baton/finance/posting", "baton/base/tool_call"):
        verdicts = set()
        for document in TABLES[policy].values():
            value, _ = embedded.evaluate_sync(f"{policy}/decision", document)
            verdicts.add(
                "deny" if value["deny"] else "approval" if value["require_approval"] else "allow"
            )
        assert verdicts == {"allow", "deny", "approval"}, policy
