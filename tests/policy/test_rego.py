"""The Rego policies, tested twice over.

1. Every ``test_`` rule under policy/ passes on OPA's evaluator AND on regorus (one pytest item
   per Rego test and engine, so a failure names the rule).
2. A cross-check: a table of varied inputs, malformed ones included, gives identical decision
   documents on both engines. The two evaluators disagree on a few corners of Rego (see
   policy/README.md); this table is what proves the policies stay clear of them.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any, Literal

import pytest

from activities.policy import (
    EmbeddedOpaEngine,
    RegorusEngine,
    RegoTestResult,
    discover_rego_tests,
    run_rego_tests,
)
from bench.policy_bench import POSTING
from tests.support.paths import POLICY_DIR

TEST_NAMES = discover_rego_tests(POLICY_DIR)
Engine = Literal["opa", "regorus"]
ENGINES: list[Engine] = ["opa", "regorus"]


@functools.cache
def results(engine: Engine) -> dict[str, RegoTestResult]:
    # One run per engine for the whole module; each parametrized item reads its own result.
    return {r.name: r for r in run_rego_tests(POLICY_DIR, engine)}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", TEST_NAMES)
def test_rego(name: str, engine: Engine) -> None:
    result = results(engine)[name]
    assert result.passed, f"{name} on {engine}: {result.error}"


def test_every_policy_package_has_rego_tests() -> None:
    packages = {name.rsplit(".", 1)[0] for name in TEST_NAMES}
    assert {
        "baton.finance.posting_test",
        "baton.finance.approval_test",
        "baton.lib_test",
        "baton.base.agent_call_test",
    } <= packages
    assert len(TEST_NAMES) >= 150


def test_runner_reports_failures_errors_and_duplicates_on_both_engines(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package t\n\nx := 1\n")
    (tmp_path / "p_test.rego").write_text(
        "package t_test\n\n"
        "import data.t\n\n"
        "test_passes if t.x == 1\n\n"
        "test_fails if t.x == 2\n\n"
        'test_errors if to_number("not a number") == 1\n\n'
        "test_twice if t.x == 1\n\n"
        "test_twice if t.x == 3\n"
    )
    for engine in ENGINES:
        by_name = {r.name: r for r in run_rego_tests(tmp_path, engine)}
        assert by_name["t_test.test_passes"] == RegoTestResult("t_test.test_passes", True)
        assert by_name["t_test.test_fails"].error == (
            "failed: a body expression was false or undefined"
        )
        error = by_name["t_test.test_errors"].error or ""
        assert error.startswith("error: ") and "Stack backtrace" not in error
        assert "defined more than once" in (by_name["t_test.test_twice"].error or "")
        assert not any(r.passed for n, r in by_name.items() if n != "t_test.test_passes")


def test_runner_fails_every_test_when_the_policies_do_not_load(tmp_path: Path) -> None:
    shutil.copytree(POLICY_DIR, tmp_path / "policy")
    (tmp_path / "policy" / "finance" / "broken.rego").write_text("package broken\n\nx := if {\n")
    for engine in ENGINES:
        out = run_rego_tests(tmp_path / "policy", engine)
        assert len(out) == len(TEST_NAMES)
        assert all(not r.passed and "does not compile" in (r.error or "") for r in out)


# ---------------------------------------------------------------------------------------------
# Cross-check: OPA and regorus give identical decision documents
# ---------------------------------------------------------------------------------------------

#: a small adjusting entry, as the posting activity asks about it (the input the policy bench
#: measures, bench/policy_bench.py POSTING)
BASE: dict[str, Any] = POSTING


def posting(amount: Any = -12.5, *, drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """BASE with the amount and top-level fields replaced and the named fields removed."""
    doc = {**BASE, "entry": {**BASE["entry"], "amount": amount}, **fields}
    for name in drop:
        doc.pop(name)
    return doc


def approval(*approvers: Any, level: Any = 0, **fields: Any) -> dict[str, Any]:
    """An approval in the shape of ApprovalGrant, with fields replaced or added."""
    return {
        "request_id": "apr-1",
        "action_digest": "d1",
        "approvers": list(approvers),
        "escalation_level": level,
        **fields,
    }


POSTING_CASES: dict[str, dict[str, Any]] = {
    "small-debit": posting(),
    "small-credit": posting(250),
    "zero": posting(0),
    "below-approval-999.99": posting(999.99),
    "approval-1000": posting(1000),
    "approval-negative-1000": posting(-1000),
    "below-cfo-49999.99": posting(49999.99),
    "cfo-50000": posting(50000),
    "hard-cap-1000000": posting(1_000_000),
    "over-cap-1000000.01": posting(1_000_000.01),
    "over-cap-float-1234567.89": posting(-1_234_567.89),
    "huge-123456789012.34": posting(123_456_789_012.34),
    "rounding-0.005": posting(0.005),
    "rounding-minus-0.004": posting(-0.004),
    "closed-period": posting(period={"id": "2026-09", "status": "closed"}),
    "bad-account": posting(entry={**BASE["entry"], "account": "9999-bonus"}),
    "unknown-tenant": posting(tenant="initech"),
    "other-tenant": posting(tenant="globex"),
    "tenant-not-a-string": posting(tenant=42),
    "unknown-action": posting(action="delete_ledger"),
    "flagged": posting(compliance_flagged=True),
    "flagged-cfo": posting(60000, compliance_flagged=True),
    "flag-missing": posting(drop=("compliance_flagged",)),
    "flag-string": posting(compliance_flagged="no"),
    "valid-controller-approval": posting(1500, approval=approval("carol")),
    "valid-cfo-and-controller": posting(75000, approval=approval("dave", "carol")),
    "cfo-entry-dave-alone": posting(75000, approval=approval("dave")),
    "cfo-entry-controllers-only": posting(75000, approval=approval("carol", "frank")),
    "cfo-entry-one-controller": posting(75000, approval=approval("frank")),
    "flagged-cfo-both-approved": posting(
        60000, compliance_flagged=True, approval=approval("frank", "dave")
    ),
    "duplicate-approver": posting(1500, approval=approval("carol", "carol")),
    "duplicate-dave-on-cfo-entry": posting(75000, approval=approval("dave", "dave")),
    "self-approval-requester": posting(1500, requested_by="carol", approval=approval("carol")),
    "self-approval-preparer": posting(1500, preparer="frank", approval=approval("frank")),
    "amender-approves": posting(1500, amended_by="carol", approval=approval("carol")),
    "amender-and-other": posting(
        75000, amended_by="dave", approval=approval("dave", "carol", "frank")
    ),
    "amended-other-approves": posting(1500, amended_by="carol", approval=approval("frank")),
    "amended-candidates": posting(75000, amended_by="dave"),
    "amended-by-empty": posting(1500, amended_by=""),
    "amended-by-number": posting(1500, amended_by=7),
    "amended-by-missing": posting(1500, drop=("amended_by",)),
    "wrong-role": posting(75000, approval=approval("carol", "erin")),
    "approver-without-role": posting(1500, approval=approval("erin")),
    "approver-unknown": posting(1500, approval=approval("mallory")),
    "ceo-level-0": posting(75000, approval=approval("carol", "grace", level=0)),
    "ceo-level-1": posting(75000, approval=approval("carol", "grace", level=1)),
    "ceo-level-2": posting(75000, approval=approval("carol", "grace", level=2)),
    "ceo-alone-level-2": posting(75000, approval=approval("grace", level=2)),
    "ceo-controller-entry-level-2": posting(1500, approval=approval("grace", level=2)),
    "level-too-high": posting(1500, approval=approval("carol", level=3)),
    "level-negative": posting(1500, approval=approval("carol", level=-1)),
    "level-fraction": posting(1500, approval=approval("carol", level=0.5)),
    "level-string": posting(1500, approval=approval("carol", level="1")),
    "level-null": posting(1500, approval=approval("carol", level=None)),
    "level-bool": posting(1500, approval=approval("carol", level=True)),
    "level-missing": posting(
        1500, approval={"request_id": "r", "action_digest": "d", "approvers": ["carol"]}
    ),
    "bad-level-does-not-widen": posting(1500, approval=approval("grace", level=9)),
    "approvers-empty": posting(1500, approval=approval()),
    "approvers-missing": posting(1500, approval={"request_id": "r", "action_digest": "d"}),
    "approvers-a-string": posting(1500, approval=approval(approvers="carol")),
    "approvers-with-null": posting(1500, approval=approval("carol", None)),
    "approvers-with-number": posting(1500, approval=approval(3)),
    "approvers-blank-name": posting(1500, approval=approval("")),
    "old-single-approver-shape": posting(
        1500, approval={"approver": "carol", "request_id": "r", "action_digest": "d"}
    ),
    "approval-no-digest": posting(
        1500, approval={"request_id": "r", "approvers": ["carol"], "escalation_level": 0}
    ),
    "approval-is-a-string": posting(1500, approval="yes"),
    "approval-on-small-entry": posting(10, approval=approval("frank", level=2)),
    "approval-missing": posting(1500, drop=("approval",)),
    "requester-eligible-excluded": posting(5000, requested_by="carol"),
    "everyone-excluded-but-dave": posting(
        60000, requested_by="carol", preparer="frank", amended_by="grace"
    ),
    "requester-missing": posting(5000, drop=("requested_by",)),
    "amount-string": posting("1500.00"),
    "amount-null": posting(None),
    "entry-missing": posting(drop=("entry",)),
    "empty-input": {},
}

APPROVAL_CASES: dict[str, dict[str, Any]] = {
    "controller": {
        "approver": "carol",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "approver_roles": ["finance-controller"],
    },
    "cfo-needed": {
        "approver": "carol",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "approver_roles": ["cfo"],
    },
    "self": {
        "approver": "carol",
        "requested_by": "carol",
        "preparer": "carol",
        "approver_roles": ["finance-controller"],
    },
    "unknown": {
        "approver": "mallory",
        "requested_by": "alice",
        "preparer": "x",
        "approver_roles": ["cfo"],
    },
    "amender": {
        "approver": "carol",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "amended_by": "carol",
        "approver_roles": ["finance-controller"],
    },
    "amended-by-other": {
        "approver": "carol",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "amended_by": "frank",
        "approver_roles": ["finance-controller"],
    },
    "amended-by-not-a-name": {
        "approver": "carol",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "amended_by": ["frank"],
        "approver_roles": ["finance-controller"],
    },
    "escalated-ceo": {
        "approver": "grace",
        "requested_by": "alice",
        "preparer": "agent:reconciler",
        "approver_roles": ["cfo", "finance-controller", "ceo"],
    },
    "no-roles": {"approver": "dave", "requested_by": "alice", "preparer": "x"},
    "empty": {},
}


# The base policy (policy/base/agent_call.rego): one model call, or one windowed action.
AGENT_CALL: dict[str, Any] = {
    "action": "llm_call",
    "role": "reconciler",
    "tenant": "acme",
    "model": {"endpoint": "http://127.0.0.1:8765/v1", "name": "baton-rules", "region": "eu"},
    "spent_today_usd": 1.25,
    "estimated_cost_usd": 0.4,
    "now": "2026-10-30T09:15:00Z",
}


def agent_call(*, drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """AGENT_CALL with top-level fields replaced and the named fields removed."""
    doc = {**AGENT_CALL, **fields}
    for name in drop:
        doc.pop(name)
    return doc


def on_model(**fields: Any) -> dict[str, Any]:
    """AGENT_CALL with model fields replaced (None removes one)."""
    model = {**AGENT_CALL["model"], **fields}
    return agent_call(model={k: v for k, v in model.items() if v is not None})


def email_at(now: Any, **fields: Any) -> dict[str, Any]:
    """A customer email (a windowed action without a model) at `now`."""
    return agent_call(action="send_customer_email", role="customer_notifier", now=now, **fields)


AGENT_CALL_CASES: dict[str, dict[str, Any]] = {
    "allowed-acme-redacted": agent_call(),
    "allowed-globex-no-redaction": agent_call(tenant="globex"),
    "globex-on-a-us-endpoint": agent_call(tenant="globex", model=on_model(region="us")["model"]),
    "every-finance-agent": agent_call(role="close_memo_writer"),
    "residency-us": on_model(region="us"),
    "residency-unknown-region": on_model(region="mars"),
    "region-missing": on_model(region=None),
    "region-empty": on_model(region=""),
    "region-a-number": on_model(region=1),
    "region-a-list": on_model(region=["eu"]),
    "endpoint-missing": on_model(endpoint=None),
    "model-missing": agent_call(drop=("model",)),
    "model-a-string": agent_call(model="eu"),
    "model-null": agent_call(model=None),
    "unknown-role": agent_call(role="intern"),
    "role-a-number": agent_call(role=3),
    "role-missing": agent_call(drop=("role",)),
    "unknown-action": agent_call(action="wire_money"),
    "action-missing": agent_call(drop=("action",)),
    "action-a-list": agent_call(action=["llm_call"]),
    "role-not-allowed-the-action": agent_call(action="send_customer_email"),
    "unknown-tenant": agent_call(tenant="initech"),
    "tenant-a-number": agent_call(tenant=42),
    "tenant-null": agent_call(tenant=None),
    "unknown-tenant-on-us": agent_call(tenant="initech", model=on_model(region="us")["model"]),
    "spend-at-cap": agent_call(spent_today_usd=249.9, estimated_cost_usd=0.1),
    "spend-a-micro-over-cap": agent_call(spent_today_usd=249.9, estimated_cost_usd=0.100001),
    "spend-far-over": agent_call(spent_today_usd=1_234_567.891, estimated_cost_usd=0),
    "spend-integers": agent_call(spent_today_usd=200, estimated_cost_usd=50),
    "spend-tiny-estimate": agent_call(spent_today_usd=0, estimated_cost_usd=0.0000004),
    "spend-a-string": agent_call(spent_today_usd="1.25"),
    "spend-negative": agent_call(spent_today_usd=-0.01),
    "spend-null": agent_call(spent_today_usd=None),
    "spend-missing": agent_call(drop=("spent_today_usd",)),
    "estimate-missing": agent_call(drop=("estimated_cost_usd",)),
    "estimate-a-boolean": agent_call(estimated_cost_usd=True),
    "globex-over-its-cap": agent_call(tenant="globex", spent_today_usd=99, estimated_cost_usd=2),
    "model-call-ignores-the-clock": agent_call(now="not a time"),
    "model-call-without-now": agent_call(drop=("now",)),
    "email-in-window": email_at("2026-10-30T09:15:00Z"),
    "email-window-start": email_at("2026-10-26T07:00:00Z"),
    "email-window-end": email_at("2026-10-30T17:00:00Z"),
    "email-saturday": email_at("2026-10-31T09:15:00Z"),
    "email-sunday-night-west": email_at("2026-11-01T23:30:00-10:00"),
    "email-offset-west-closed": email_at("2026-10-30T12:15:00-05:00"),
    "email-fraction-lowercase": email_at("2026-10-30t09:15:00.123456z"),
    "email-no-zone": email_at("2026-10-30T09:15:00"),
    "email-space-separator": email_at("2026-10-30 09:15:00Z"),
    "email-now-a-number": email_at(1793352900),
    "email-now-missing": agent_call(
        action="send_customer_email", role="customer_notifier", drop=("now",)
    ),
    "email-feb-29-2026": email_at("2026-02-29T09:00:00Z"),
    "email-feb-29-2028": email_at("2028-02-29T09:00:00Z"),
    "email-feb-29-1900": email_at("1900-02-29T09:00:00Z"),
    "email-before-1970": email_at("1969-12-31T09:00:00Z"),
    "email-year-0": email_at("0000-01-03T09:00:00Z"),
    "email-year-1": email_at("0001-01-01T09:00:00Z"),
    "email-hour-24": email_at("2026-10-30T24:00:00Z"),
    "email-offset-24h": email_at("2026-10-30T09:15:00+24:00"),
    "email-offset-minutes-60": email_at("2026-10-30T09:15:00+01:60"),
    "email-month-13": email_at("2026-13-01T09:15:00Z"),
    "email-without-model-or-spend": email_at(
        "2026-10-30T09:15:00Z", model=None, spent_today_usd=None, estimated_cost_usd=None
    ),
    "email-by-the-reconciler": agent_call(action="send_customer_email", now="2026-10-31T09:00:00Z"),
    "everything-wrong": {
        "action": "llm_call",
        "role": "intern",
        "tenant": "initech",
        "model": {"region": "us"},
        "spent_today_usd": "lots",
    },
    "empty-input": {},
}

_MCP_LOOKUP: dict[str, Any] = {
    "tool": "mcp:crm/lookup_customer",
    "arguments": {"customer_id": "C-1"},
    "principal": {"process": "crm_assistant", "role": "crm_assistant", "tenant": "acme",
                  "requested_by": "alice"},
    "history": {"calls": {}, "total_calls": 0, "flagged_results": []},
    "approval": None,
}  # fmt: skip


def _mcp(**fields: Any) -> dict[str, Any]:
    return {**_MCP_LOOKUP, **fields}


#: MCP tool calls (policy/base/mcp_tool.rego), malformed names and histories included.
MCP_TOOL_CASES: dict[str, dict[str, Any]] = {
    "lookup": _mcp(),
    "model-spelling": _mcp(tool="mcp__crm__lookup_customer"),
    "sensitive": _mcp(tool="mcp:crm/export_customers"),
    "sensitive-approved": _mcp(
        tool="mcp:crm/export_customers", approval={"action_digest": "d", "approvers": ["sam"]}
    ),
    "sensitive-after-untrusted": _mcp(
        tool="mcp__crm__export_customers", history={"calls": {"mcp__crm__read_ticket": 1}}
    ),
    "sensitive-after-flag": _mcp(
        tool="mcp:crm/export_customers",
        history={"flagged_results": [{"tool": "mcp:crm/lookup_customer", "reasons": ["x"]}]},
    ),
    "sensitive-after-flag-model-spelling": _mcp(
        tool="mcp__crm__export_customers",
        history={"flagged_results": [{"tool": "mcp__crm__lookup_customer", "reasons": ["x"]}]},
    ),
    "flag-naming-no-mcp-tool": _mcp(
        tool="mcp:crm/export_customers", history={"flagged_results": [{"tool": "notes"}]}
    ),
    "flags-not-a-list": _mcp(tool="mcp:crm/export_customers", history={"flagged_results": 1}),
    "flag-without-tool": _mcp(tool="mcp:crm/export_customers", history={"flagged_results": [{}]}),
    "unknown-tool": _mcp(tool="mcp:crm/drop_tables"),
    "unknown-server": _mcp(tool="mcp:erp/lookup_customer"),
    "tool-a-number": _mcp(tool=7),
    "no-prefix": _mcp(tool="crm/lookup_customer"),
    "too-many-parts": _mcp(tool="mcp:crm/a/b"),
    "not-allow-listed": _mcp(
        tool="mcp:crm/sync_ledger",
        principal={"process": "support", "role": "l2_researcher", "tenant": "acme"},
    ),
    "no-principal": {k: v for k, v in _MCP_LOOKUP.items() if k != "principal"},
    "limit-reached": _mcp(history={"calls": {"mcp:crm/lookup_customer": 10}, "total_calls": 10}),
    "history-junk": _mcp(history={"calls": {"mcp:crm/read_ticket": "x"}, "total_calls": -1}),
    "unbound-approval": _mcp(tool="mcp:crm/export_customers", approval={"approvers": ["sam"]}),
    "empty-input": {},
}

CROSS_CHECK_TABLES: dict[str, dict[str, dict[str, Any]]] = {
    "baton/finance/posting/decision": POSTING_CASES,
    "baton/finance/approval/decision": APPROVAL_CASES,
    "baton/base/agent_call/decision": AGENT_CALL_CASES,
    "baton/base/mcp_tool/decision": MCP_TOOL_CASES,
}


@pytest.fixture(scope="module")
def engines() -> tuple[EmbeddedOpaEngine, RegorusEngine]:
    return EmbeddedOpaEngine(POLICY_DIR), RegorusEngine(POLICY_DIR)


@pytest.mark.parametrize(
    ("path", "case"),
    [(path, case) for path, table in CROSS_CHECK_TABLES.items() for case in table],
)
def test_opa_and_regorus_agree(
    engines: tuple[EmbeddedOpaEngine, RegorusEngine], path: str, case: str
) -> None:
    document = CROSS_CHECK_TABLES[path][case]
    opa, regorus = engines
    opa_value, opa_revision = opa.evaluate_sync(path, document)
    regorus_value, regorus_revision = regorus.evaluate_sync(path, document)
    assert opa_value == regorus_value
    assert opa_revision == regorus_revision
    # Strict types on both sides: a boolean allow and lists of strings.
    assert isinstance(opa_value["allow"], bool)
    assert all(isinstance(reason, str) for reason in opa_value["deny"])
    if "posting" in path:
        assert set(opa_value) == POSTING_FIELDS
        roles = [r["role"] for r in opa_value["required_approvals"]]
        assert roles == sorted(roles) == opa_value["approver_roles"]
        escalation_roles = {role for tier in opa_value["escalation"] for role in tier["roles"]}
        assert set(opa_value["candidates"]) == set(roles) | escalation_roles
        eligible = {p for role in roles for p in opa_value["candidates"][role]}
        assert opa_value["eligible_approvers"] == sorted(eligible)
    if "agent_call" in path:
        assert set(opa_value) == {"allow", "deny", "redact", "reroute_regions"}
        assert opa_value["redact"] == sorted(opa_value["redact"])
        assert opa_value["reroute_regions"] == sorted(opa_value["reroute_regions"])
        # reroute_regions only ever come with a residency deny
        assert not opa_value["reroute_regions"] or any(
            reason.startswith("data residency") for reason in opa_value["deny"]
        )


POSTING_FIELDS = {
    "allow",
    "deny",
    "require_approval",
    "approver_roles",
    "eligible_approvers",
    "required_approvals",
    "escalation",
    "candidates",
}


def test_cross_check_table_covers_every_verdict(
    engines: tuple[EmbeddedOpaEngine, RegorusEngine],
) -> None:
    opa, _ = engines
    seen = set()
    for document in POSTING_CASES.values():
        value, _ = opa.evaluate_sync("baton/finance/posting/decision", document)
        if value["deny"]:
            seen.add("deny")
        elif value["require_approval"]:
            seen.add("require_approval")
        else:
            seen.add("allow")
    assert seen == {"allow", "deny", "require_approval"}
    assert len(POSTING_CASES) >= 60


def test_agent_call_table_covers_every_rule(
    engines: tuple[EmbeddedOpaEngine, RegorusEngine],
) -> None:
    opa, _ = engines
    reasons: list[str] = []
    allowed = redacted = rerouted = 0
    for document in AGENT_CALL_CASES.values():
        value, _ = opa.evaluate_sync("baton/base/agent_call/decision", document)
        reasons += value["deny"]
        allowed += value["allow"]
        redacted += bool(value["redact"])
        rerouted += bool(value["reroute_regions"])
    for start in (
        "unknown agent role",
        "unknown action",
        "agent role 'reconciler' may not perform",
        "unknown tenant",
        "data residency",
        "the request does not name the model endpoint (",
        "the request does not name the model endpoint's region",
        "spend cap",
        "spent_today_usd must be",
        "estimated_cost_usd must be",
        "'send_customer_email' is only allowed",
        "the request has no valid time",
    ):
        assert any(reason.startswith(start) for reason in reasons), start
    assert allowed >= 10 and redacted >= 10 and rerouted >= 2


def test_mcp_tool_table_fails_closed(engines: tuple[EmbeddedOpaEngine, RegorusEngine]) -> None:
    """Every malformed MCP call in the table is denied; the sound ones get their verdict."""
    opa, _ = engines
    verdicts = {}
    for case, document in MCP_TOOL_CASES.items():
        value, _ = opa.evaluate_sync("baton/base/mcp_tool/decision", document)
        verdicts[case] = (
            "deny"
            if value["deny"]
            else "require_approval"
            if value["require_approval"]
            else "allow"
        )
    assert verdicts.pop("lookup") == verdicts.pop("model-spelling") == "allow"
    assert verdicts.pop("sensitive-approved") == "allow"
    assert verdicts.pop("sensitive") == "require_approval"
    assert set(verdicts.values()) == {"deny"}, verdicts
