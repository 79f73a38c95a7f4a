"""The policy gate's engines and decide(): fail closed, decide right, reload, and agree.

* decide() against small test doubles (clearly named ``Fake...``) that raise, hang, answer
  undefined or answer garbage: every one is a deny whose reason says exactly why.
* _verdict's parsing of the approval obligations (N-of-M requirements, escalation chain,
  candidates): well-formed documents become ``Obligations``, malformed ones a deny naming the field.
* The real embedded OPA evaluator (and regorus) on the real policies: allow, require_approval
  with its obligations, N-of-M approvals and escalation, deny.
* PolicyBundle: the revision follows the content, and a data edit is used by the same engine
  object without a restart; a broken edit denies until fixed.
* OpaRestEngine through opa-python-client: against a canned OPA-REST test double (undefined,
  provenance, errors, URL prefix), and against the local OPA-compatible server when present.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from activities.policy import (
    EmbeddedOpaEngine,
    OpaRestEngine,
    PolicyBundle,
    PolicyEngine,
    PolicyLoadError,
    PolicyUndefined,
    RegorusEngine,
    build_engine,
    decide,
    rule_path,
)
from tests.policy.test_rego import APPROVAL_CASES, BASE, POSTING_CASES, approval, posting
from tests.support.cases import named_cases
from tests.support.paths import POLICY_DIR
from workflows.contracts import (
    ApprovalRequirement,
    EscalationTier,
    Obligations,
    PolicyDecision,
    PolicyQuery,
)

POSTING = "baton/finance/posting"


def query(document: dict[str, Any] | None = None, policy: str = POSTING) -> PolicyQuery:
    return PolicyQuery(policy=policy, input=BASE if document is None else document, subject="S1")


# ---------------------------------------------------------------------------------------------
# Test doubles: engines that misbehave on purpose
# ---------------------------------------------------------------------------------------------


class FakeRaisingEngine:
    name = "fake-raising"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        raise self.error


class FakeHangingEngine:
    name = "fake-hanging"

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class FakeUndefinedEngine:
    name = "fake-undefined"

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        raise PolicyUndefined(path, "fake-rev")


class FakeAnsweringEngine:
    """Answers a fixed value and records what it was asked."""

    name = "fake-answering"

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        self.calls.append((path, input))
        return self.value, "fake-rev"


class FakePanic(BaseException):
    """Stands in for pyo3's PanicException, which is a BaseException, not an Exception."""


FAIL_CLOSED_CASES: list[tuple[str, PolicyEngine, str]] = [
    (
        "engine-error",
        FakeRaisingEngine(ConnectionError("connection refused")),
        "policy engine unavailable: ConnectionError: connection refused",
    ),
    (
        "engine-panic",
        FakeRaisingEngine(FakePanic("regoruspy::Engine is unsendable")),
        "policy engine unavailable: FakePanic: regoruspy::Engine is unsendable",
    ),
    (
        "engine-own-timeout",
        FakeRaisingEngine(TimeoutError("upstream read timed out")),
        "policy engine unavailable: TimeoutError: upstream read timed out",
    ),
    ("undefined", FakeUndefinedEngine(), "policy returned no decision (undefined)"),
    (
        "allow-string",
        FakeAnsweringEngine({"allow": "true"}),
        "policy 'allow' is not a boolean: 'true'",
    ),
    ("allow-one", FakeAnsweringEngine({"allow": 1}), "policy 'allow' is not a boolean: 1"),
    ("allow-null", FakeAnsweringEngine({"allow": None}), "policy 'allow' is not a boolean: None"),
    ("allow-missing", FakeAnsweringEngine({"deny": []}), "policy decision has no 'allow' field"),
    (
        "a-list",
        FakeAnsweringEngine([{"allow": True}]),
        "policy returned a list instead of a decision object",
    ),
    (
        "a-boolean",
        FakeAnsweringEngine(True),
        "policy returned a boolean instead of a decision object",
    ),
    ("null", FakeAnsweringEngine(None), "policy returned null instead of a decision object"),
    (
        "allow-false-no-reason",
        FakeAnsweringEngine({"allow": False, "deny": []}),
        "policy did not allow the action and gave no reason",
    ),
    (
        "deny-not-a-list",
        FakeAnsweringEngine({"allow": True, "deny": "no"}),
        "policy 'deny' is not a list of strings: 'no'",
    ),
    (
        "approval-without-requirements",
        FakeAnsweringEngine({"allow": True, "require_approval": ["needs a human"]}),
        "policy requires approval but names no required_approvals",
    ),
    (
        "approval-with-empty-requirements",
        FakeAnsweringEngine(
            {
                "allow": True,
                "require_approval": ["needs a human"],
                "approver_roles": ["cfo"],
                "required_approvals": [],
            }
        ),
        "policy requires approval but names no required_approvals",
    ),
    (
        "roles-not-strings",
        FakeAnsweringEngine(
            {
                "allow": True,
                "require_approval": ["r"],
                "required_approvals": [{"role": "cfo", "count": 1}],
                "approver_roles": [{"role": "cfo"}],
                "candidates": {"cfo": []},
            }
        ),
        "policy 'approver_roles' is not a list of strings: [{'role': 'cfo'}]",
    ),
]


def held(**fields: Any) -> dict[str, Any]:
    """A well-formed require_approval document (a cfo-level entry) with fields replaced."""
    return {
        "allow": True,
        "deny": [],
        "require_approval": ["amount is large"],
        "approver_roles": ["cfo", "finance-controller"],
        "eligible_approvers": ["carol", "dave"],
        "required_approvals": [
            {"role": "cfo", "count": 1},
            {"role": "finance-controller", "count": 1},
        ],
        "escalation": [
            {"roles": ["cfo"], "sla_seconds": 14400},
            {"roles": ["ceo"], "sla_seconds": 86400},
        ],
        "candidates": {"cfo": ["dave"], "finance-controller": ["carol", "dave"], "ceo": ["grace"]},
        **fields,
    }


REQUIREMENTS_SHAPE = (
    "policy 'required_approvals' is not a list of {role: non-empty string, "
    "count: whole number >= 1}: "
)
ESCALATION_SHAPE = (
    "policy 'escalation' is not a list of {roles: non-empty list of names, "
    "sla_seconds: whole number >= 1}: "
)
CANDIDATES_SHAPE = "policy 'candidates' is not an object of role -> list of names: "

#: (case, document, the one deny reason): malformed obligations on a require_approval verdict.
MALFORMED_OBLIGATIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "requirements-not-a-list",
        held(required_approvals={"cfo": 1}),
        REQUIREMENTS_SHAPE + "{'cfo': 1}",
    ),
    (
        "requirement-a-string",
        held(required_approvals=["cfo"]),
        REQUIREMENTS_SHAPE + "'cfo'",
    ),
    (
        "requirement-without-count",
        held(required_approvals=[{"role": "cfo"}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo'}",
    ),
    (
        "requirement-count-zero",
        held(required_approvals=[{"role": "cfo", "count": 0}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo', 'count': 0}",
    ),
    (
        "requirement-count-string",
        held(required_approvals=[{"role": "cfo", "count": "1"}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo', 'count': '1'}",
    ),
    (
        "requirement-count-boolean",
        held(required_approvals=[{"role": "cfo", "count": True}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo', 'count': True}",
    ),
    (
        "requirement-count-fraction",
        held(required_approvals=[{"role": "cfo", "count": 1.5}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo', 'count': 1.5}",
    ),
    (
        "requirement-blank-role",
        held(required_approvals=[{"role": "", "count": 1}]),
        REQUIREMENTS_SHAPE + "{'role': '', 'count': 1}",
    ),
    (
        "requirement-extra-field",
        held(required_approvals=[{"role": "cfo", "count": 1, "any": True}]),
        REQUIREMENTS_SHAPE + "{'role': 'cfo', 'count': 1, 'any': True}",
    ),
    (
        "requirement-count-above-contract",
        held(required_approvals=[{"role": "cfo", "count": 11}], approver_roles=["cfo"]),
        "policy 'required_approvals' entry {'role': 'cfo', 'count': 11} is invalid: "
        "count: Input should be less than or equal to 10",
    ),
    (
        "requirement-role-twice",
        held(
            required_approvals=[{"role": "cfo", "count": 1}, {"role": "cfo", "count": 1}],
            approver_roles=["cfo"],
        ),
        "policy 'required_approvals' names the roles ['cfo'] twice",
    ),
    (
        "roles-disagree-with-requirements",
        held(approver_roles=["cfo"]),
        "policy 'approver_roles' ['cfo'] are not the roles of its required_approvals "
        "['cfo', 'finance-controller']",
    ),
    (
        "escalation-not-a-list",
        held(escalation={"roles": ["ceo"], "sla_seconds": 60}),
        ESCALATION_SHAPE + "{'roles': ['ceo'], 'sla_seconds': 60}",
    ),
    (
        "escalation-tier-without-roles",
        held(escalation=[{"roles": [], "sla_seconds": 60}]),
        ESCALATION_SHAPE + "{'roles': [], 'sla_seconds': 60}",
    ),
    (
        "escalation-roles-a-string",
        held(escalation=[{"roles": "ceo", "sla_seconds": 60}]),
        ESCALATION_SHAPE + "{'roles': 'ceo', 'sla_seconds': 60}",
    ),
    (
        "escalation-blank-role",
        held(escalation=[{"roles": [""], "sla_seconds": 60}]),
        ESCALATION_SHAPE + "{'roles': [''], 'sla_seconds': 60}",
    ),
    (
        "escalation-sla-zero",
        held(escalation=[{"roles": ["ceo"], "sla_seconds": 0}]),
        ESCALATION_SHAPE + "{'roles': ['ceo'], 'sla_seconds': 0}",
    ),
    (
        "escalation-sla-string",
        held(escalation=[{"roles": ["ceo"], "sla_seconds": "4h"}]),
        ESCALATION_SHAPE + "{'roles': ['ceo'], 'sla_seconds': '4h'}",
    ),
    (
        "escalation-sla-missing",
        held(escalation=[{"roles": ["ceo"]}]),
        ESCALATION_SHAPE + "{'roles': ['ceo']}",
    ),
    (
        "escalation-sla-above-contract",
        held(escalation=[{"roles": ["ceo"], "sla_seconds": 91 * 24 * 3600}]),
        "policy 'escalation' entry {'roles': ['ceo'], 'sla_seconds': 7862400} is invalid: "
        "sla_seconds: Input should be less than or equal to 7776000",
    ),
    (
        "candidates-a-list",
        held(candidates=["dave"]),
        CANDIDATES_SHAPE + "['dave']",
    ),
    (
        "candidates-not-lists",
        held(candidates={"cfo": "dave", "finance-controller": [], "ceo": []}),
        CANDIDATES_SHAPE + "{'cfo': 'dave', 'finance-controller': [], 'ceo': []}",
    ),
    (
        "candidates-not-names",
        held(candidates={"cfo": [1], "finance-controller": [], "ceo": []}),
        CANDIDATES_SHAPE + "{'cfo': [1], 'finance-controller': [], 'ceo': []}",
    ),
    (
        "candidates-missing-a-required-role",
        held(candidates={"cfo": ["dave"], "ceo": ["grace"]}),
        "policy 'candidates' has no list for the roles ['finance-controller']",
    ),
    (
        "candidates-missing-an-escalation-role",
        held(candidates={"cfo": ["dave"], "finance-controller": ["carol"]}),
        "policy 'candidates' has no list for the roles ['ceo']",
    ),
    (
        "candidates-missing",
        {k: v for k, v in held().items() if k != "candidates"},
        "policy 'candidates' has no list for the roles ['ceo', 'cfo', 'finance-controller']",
    ),
    (
        "eligible-not-strings",
        held(eligible_approvers=[None]),
        "policy 'eligible_approvers' is not a list of strings: [None]",
    ),
]


@pytest.mark.parametrize(("engine", "reason"), named_cases(FAIL_CLOSED_CASES))
async def test_decide_fails_closed(engine: PolicyEngine, reason: str) -> None:
    decision = await decide(engine, query(), "dec-1")
    assert decision.verdict == "deny"
    assert decision.reasons == [reason]
    assert decision.obligations == Obligations()
    assert decision.engine == engine.name
    assert (decision.decision_id, decision.policy, decision.subject) == ("dec-1", POSTING, "S1")


async def test_decide_times_out_and_denies() -> None:
    decision = await decide(FakeHangingEngine(), query(), "dec-2", timeout=0.05)
    assert decision.verdict == "deny"
    assert decision.reasons == ["policy engine unavailable: no answer within 0.05 s"]
    assert decision.revision == "unknown"


async def test_undefined_keeps_the_revision_the_engine_ran() -> None:
    decision = await decide(FakeUndefinedEngine(), query(), "dec-3")
    assert decision.revision == "fake-rev"


async def test_inconsistent_answer_denies_with_the_policy_reasons() -> None:
    engine = FakeAnsweringEngine({"allow": True, "deny": ["period is closed"]})
    decision = await decide(engine, query(), "dec-4")
    assert (decision.verdict, decision.reasons) == ("deny", ["period is closed"])


async def test_decide_asks_for_the_decision_document_and_maps_each_verdict() -> None:
    engine = FakeAnsweringEngine({"allow": True, "deny": [], "require_approval": []})
    allowed = await decide(engine, query(), "dec-5")
    assert engine.calls == [("baton/finance/posting/decision", BASE)]
    assert (allowed.verdict, allowed.reasons, allowed.revision) == ("allow", [], "fake-rev")

    engine = FakeAnsweringEngine(held())
    pending = await decide(engine, query(), "dec-6")
    assert pending.verdict == "require_approval"
    assert pending.reasons == ["amount is large"]
    assert pending.obligations == Obligations(
        approver_roles=["cfo", "finance-controller"],
        eligible_approvers=["carol", "dave"],
        required_approvals=[
            ApprovalRequirement(role="cfo", count=1),
            ApprovalRequirement(role="finance-controller", count=1),
        ],
        escalation=[
            EscalationTier(roles=["cfo"], sla_seconds=14400),
            EscalationTier(roles=["ceo"], sla_seconds=86400),
        ],
        candidates={"cfo": ["dave"], "finance-controller": ["carol", "dave"], "ceo": ["grace"]},
    )


@pytest.mark.parametrize(("document", "reason"), named_cases(MALFORMED_OBLIGATIONS))
async def test_malformed_obligations_deny_naming_the_field(
    document: dict[str, Any], reason: str
) -> None:
    decision = await decide(FakeAnsweringEngine(document), query(), "dec-m")
    assert decision.verdict == "deny"
    assert decision.reasons == [reason]
    assert decision.obligations == Obligations()
    assert decision.revision == "fake-rev"


async def test_obligations_parsing_is_lenient_only_where_safe() -> None:
    # approver_roles may be left out (derived from required_approvals), tiers may be absent,
    # a count or SLA may arrive as an integral float, and roles may repeat in approver_roles.
    document = held(
        required_approvals=[{"role": "finance-controller", "count": 2.0}],
        escalation=[{"roles": ["cfo"], "sla_seconds": 60.0}],
        candidates={"finance-controller": ["carol"], "cfo": []},
    )
    document.pop("approver_roles")
    decision = await decide(FakeAnsweringEngine(document), query(), "dec-l1")
    assert decision.verdict == "require_approval"
    assert decision.obligations.approver_roles == ["finance-controller"]
    assert decision.obligations.required_approvals == [
        ApprovalRequirement(role="finance-controller", count=2)
    ]
    assert decision.obligations.escalation == [EscalationTier(roles=["cfo"], sla_seconds=60)]

    no_chain = held(escalation=[], candidates={"cfo": [], "finance-controller": []})
    plain = await decide(FakeAnsweringEngine(no_chain), query(), "dec-l2")
    assert (plain.verdict, plain.obligations.escalation) == ("require_approval", [])


async def test_obligations_are_ignored_unless_approval_is_required() -> None:
    # A deny or an allow carries no obligations, and garbage in them cannot turn into a verdict.
    junk = {"required_approvals": "junk", "escalation": 3, "candidates": None}
    denied = await decide(
        FakeAnsweringEngine({"allow": False, "deny": ["no"], **junk}), query(), "dec-i1"
    )
    assert (denied.verdict, denied.reasons, denied.obligations) == ("deny", ["no"], Obligations())
    allowed = await decide(
        FakeAnsweringEngine({"allow": True, "require_approval": [], **junk}), query(), "dec-i2"
    )
    assert (allowed.verdict, allowed.obligations) == ("allow", Obligations())


async def test_input_that_is_not_json_denies_without_asking_the_engine() -> None:
    engine = FakeAnsweringEngine({"allow": True})
    decision = await decide(engine, query(posting(Decimal("12.50"))), "dec-7")
    assert decision.verdict == "deny"
    assert decision.reasons == [
        "policy input is not JSON-serialisable: Object of type Decimal is not JSON serializable"
    ]
    assert engine.calls == []


async def test_invalid_policy_name_denies() -> None:
    decision = await decide(FakeAnsweringEngine({"allow": True}), query(policy="a b"), "dec-8")
    assert decision.verdict == "deny"
    assert decision.reasons[0].startswith("invalid policy name: not a policy document path")


async def test_cancellation_of_the_caller_propagates() -> None:
    task = asyncio.ensure_future(decide(FakeHangingEngine(), query(), "dec-9"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_rule_path_accepts_both_separators_and_refuses_anything_else() -> None:
    assert rule_path("baton/finance/posting/decision") == [
        "baton",
        "finance",
        "posting",
        "decision",
    ]
    assert rule_path("data.baton.finance.posting") == ["baton", "finance", "posting"]
    for bad in ["", "baton/x y", "baton/x[0]", "baton/1x", "data"]:
        with pytest.raises(ValueError):
            rule_path(bad)


# ---------------------------------------------------------------------------------------------
# The real engines on the real policies
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[EmbeddedOpaEngine, RegorusEngine], ids=["opa", "regorus"])
def local_engine(request: pytest.FixtureRequest) -> PolicyEngine:
    engine: PolicyEngine = request.param(POLICY_DIR)
    return engine


async def test_small_entry_is_allowed(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(), "real-1")
    assert decision.verdict == "allow"
    assert decision.reasons == []
    assert decision.engine == local_engine.name
    assert len(decision.revision) == 12 and int(decision.revision, 16) >= 0


SHIPPED_CHAIN = [
    EscalationTier(roles=["cfo"], sla_seconds=14400),
    EscalationTier(roles=["ceo"], sla_seconds=86400),
]


async def test_large_entry_requires_a_controller_from_the_directory(
    local_engine: PolicyEngine,
) -> None:
    decision = await decide(local_engine, query(posting(-1500)), "real-2")
    assert decision.verdict == "require_approval"
    assert decision.reasons == [
        "amount -1500.00 on entry ADJ-B0042 is at or above the approval threshold of 1000.00: "
        "a finance-controller must approve it"
    ]
    assert decision.obligations == Obligations(
        approver_roles=["finance-controller"],
        eligible_approvers=["carol", "dave", "frank"],
        required_approvals=[ApprovalRequirement(role="finance-controller", count=1)],
        escalation=SHIPPED_CHAIN,
        candidates={
            "finance-controller": ["carol", "dave", "frank"],
            "cfo": ["dave", "ivan"],
            "ceo": ["grace"],
        },
    )


async def test_cfo_entry_requires_a_cfo_and_a_controller(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(posting(50000)), "real-3")
    assert decision.verdict == "require_approval"
    assert decision.obligations == Obligations(
        approver_roles=["cfo", "finance-controller"],
        eligible_approvers=["carol", "dave", "frank", "ivan"],
        required_approvals=[
            ApprovalRequirement(role="cfo", count=1),
            ApprovalRequirement(role="finance-controller", count=1),
        ],
        escalation=SHIPPED_CHAIN,
        candidates={
            "cfo": ["dave", "ivan"],
            "finance-controller": ["carol", "dave", "frank"],
            "ceo": ["grace"],
        },
    )


async def test_amender_is_no_candidate(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(posting(50000, amended_by="dave")), "real-3a")
    assert decision.obligations.candidates == {
        "cfo": ["ivan"],
        "finance-controller": ["carol", "frank"],
        "ceo": ["grace"],
    }
    assert decision.obligations.eligible_approvers == ["carol", "frank", "ivan"]
    approved = posting(50000, amended_by="dave", approval=approval("dave", "carol"))
    refused = await decide(local_engine, query(approved), "real-3b")
    assert refused.verdict == "deny"
    assert refused.reasons == [
        "segregation of duties: dave amended this entry and cannot approve it"
    ]


async def test_valid_approval_allows(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(posting(1500, approval=approval("carol"))), "r4")
    assert decision.verdict == "allow"
    both = await decide(local_engine, query(posting(75000, approval=approval("dave", "frank"))), "")
    assert both.verdict == "allow"


async def test_one_person_is_one_slot(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(posting(75000, approval=approval("dave"))), "r4a")
    assert decision.verdict == "require_approval"
    assert decision.reasons[-1] == (
        "entry ADJ-B0042 is not fully approved yet (approved so far by dave): "
        "one more approver holding cfo or finance-controller must also approve"
    )
    assert len(decision.obligations.required_approvals) == 2


async def test_escalation_level_widens_who_may_approve(local_engine: PolicyEngine) -> None:
    verdicts = []
    for level in range(3):
        document = posting(75000, approval=approval("carol", "grace", level=level))
        verdicts.append((await decide(local_engine, query(document), f"r4-{level}")).verdict)
    assert verdicts == ["deny", "deny", "allow"]
    beyond = posting(75000, approval=approval("carol", "grace", level=3))
    assert (await decide(local_engine, query(beyond), "r4-3")).verdict == "deny"


async def test_every_table_document_gives_a_well_formed_decision(
    local_engine: PolicyEngine,
) -> None:
    # The real policies never trip the malformed-document checks in _verdict.
    seen = set()
    for case, document in POSTING_CASES.items():
        decision = await decide(local_engine, query(document), case)
        seen.add(decision.verdict)
        assert not any(r.startswith("policy ") for r in decision.reasons), case
        if decision.verdict == "require_approval":
            assert decision.obligations.required_approvals, case
            assert decision.obligations.escalation == SHIPPED_CHAIN, case
    assert seen == {"allow", "deny", "require_approval"}


async def test_closed_period_is_denied(local_engine: PolicyEngine) -> None:
    document = posting(period={"id": "2026-09", "status": "closed"})
    decision = await decide(local_engine, query(document), "real-5")
    assert decision.verdict == "deny"
    assert decision.reasons == [
        "period 2026-09 is not open (status 'closed'): nothing can be posted to it"
    ]


async def test_self_approval_is_denied(local_engine: PolicyEngine) -> None:
    document = posting(1500, requested_by="carol", approval=approval("carol"))
    decision = await decide(local_engine, query(document), "real-6")
    assert decision.verdict == "deny"
    assert decision.reasons == [
        "segregation of duties: carol requested this entry and cannot approve it"
    ]


async def test_approval_policy_authorises_approvers(local_engine: PolicyEngine) -> None:
    asked = {"requested_by": "alice", "preparer": "agent:reconciler"}
    ok = await decide(
        local_engine,
        query({**asked, "approver": "dave", "approver_roles": ["cfo"]}, "baton/finance/approval"),
        "real-7",
    )
    assert ok.verdict == "allow"
    refused = await decide(
        local_engine,
        query({**asked, "approver": "carol", "approver_roles": ["cfo"]}, "baton/finance/approval"),
        "real-8",
    )
    assert refused.verdict == "deny"


async def test_unknown_policy_is_undefined_and_denied(local_engine: PolicyEngine) -> None:
    decision = await decide(local_engine, query(policy="baton/finance/no_such_policy"), "real-9")
    assert decision.reasons == ["policy returned no decision (undefined)"]
    assert decision.revision != "unknown"


def test_build_engine_picks_rest_only_when_a_url_is_set() -> None:
    assert isinstance(build_engine(None, POLICY_DIR), EmbeddedOpaEngine)
    assert isinstance(build_engine("", POLICY_DIR), EmbeddedOpaEngine)
    assert isinstance(build_engine("http://opa:8181", POLICY_DIR), OpaRestEngine)


# ---------------------------------------------------------------------------------------------
# Bundle: revision and hot reload
# ---------------------------------------------------------------------------------------------


def edit_json(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


async def test_data_edit_changes_revision_and_is_used_without_a_new_engine(
    policy_copy: Path, reloading_engine: EmbeddedOpaEngine | RegorusEngine
) -> None:
    before = await decide(reloading_engine, query(posting(1500)), "reload-1")
    assert before.verdict == "require_approval"
    assert before.obligations.escalation[0].sla_seconds == 14400
    assert before.obligations.eligible_approvers == ["carol", "dave", "frank"]

    def raise_threshold(doc: dict[str, Any]) -> None:
        doc["baton"]["finance"]["limits"]["approval_threshold"] = 2000

    edit_json(policy_copy / "data" / "finance_limits.json", raise_threshold)
    after = await decide(reloading_engine, query(posting(1500)), "reload-2")
    assert after.verdict == "allow"
    assert after.revision != before.revision

    edit_json(
        policy_copy / "data" / "directory.json",
        lambda doc: doc["baton"]["directory"]["people"].pop("carol"),
    )
    third = await decide(reloading_engine, query(posting(2500)), "reload-3")
    assert third.obligations.eligible_approvers == ["dave", "frank"]
    assert len({before.revision, after.revision, third.revision}) == 3

    def shorten_sla(doc: dict[str, Any]) -> None:
        doc["baton"]["finance"]["escalation"][0]["sla_seconds"] = 600

    edit_json(policy_copy / "data" / "escalation.json", shorten_sla)
    fourth = await decide(reloading_engine, query(posting(2500)), "reload-4")
    assert fourth.obligations.escalation[0].sla_seconds == 600


async def test_reload_is_checked_at_most_once_per_interval(policy_copy: Path) -> None:
    engine = EmbeddedOpaEngine(policy_copy, reload_interval=3600)
    first = await decide(engine, query(posting(1500)), "slow-1")
    edit_json(
        policy_copy / "data" / "finance_limits.json",
        lambda doc: doc["baton"]["finance"]["limits"].update(approval_threshold=2000),
    )
    second = await decide(engine, query(posting(1500)), "slow-2")
    assert (second.verdict, second.revision) == (first.verdict, first.revision)


async def test_broken_edit_denies_until_fixed(
    policy_copy: Path, reloading_engine: EmbeddedOpaEngine | RegorusEngine
) -> None:
    good = await decide(reloading_engine, query(), "broken-0")
    assert good.verdict == "allow"

    limits = policy_copy / "data" / "finance_limits.json"
    original = limits.read_text()
    limits.write_text(original[:-20])
    bad_data = await decide(reloading_engine, query(), "broken-1")
    assert bad_data.verdict == "deny"
    assert bad_data.reasons[0].startswith(
        "policy engine unavailable: PolicyLoadError: data/finance_limits.json is not valid JSON"
    )

    limits.write_text(original)
    rego = policy_copy / "finance" / "posting.rego"
    source = rego.read_text()
    rego.write_text(source + "\nbroken := if {\n")
    bad_rego = await decide(reloading_engine, query(), "broken-2")
    assert bad_rego.verdict == "deny"
    assert "does not compile" in bad_rego.reasons[0]
    assert "Stack backtrace" not in bad_rego.reasons[0]

    rego.write_text(source)
    fixed = await decide(reloading_engine, query(), "broken-3")
    # The revision is content-addressed: the same files give the same revision again.
    assert (fixed.verdict, fixed.revision) == ("allow", good.revision)


def test_revision_covers_policies_and_data_but_not_tests(policy_copy: Path) -> None:
    original = PolicyBundle(POLICY_DIR).revision
    assert PolicyBundle(policy_copy).revision == original  # relative paths: location-free
    test_file = policy_copy / "finance" / "posting_test.rego"
    test_file.write_text(test_file.read_text() + "\n# a comment in a test\n")
    assert PolicyBundle(policy_copy).revision == original
    rego = policy_copy / "finance" / "posting.rego"
    rego.write_text(rego.read_text() + "\n# a comment in a policy\n")
    assert PolicyBundle(policy_copy).revision != original


def test_bundle_separates_tests_and_merges_data() -> None:
    snapshot = PolicyBundle(POLICY_DIR).current()
    assert "finance/posting.rego" in snapshot.modules
    assert "finance/posting_test.rego" in snapshot.tests
    assert not any(path.endswith("_test.rego") for path in snapshot.modules)
    baton = snapshot.data["baton"]
    assert set(baton) == {
        "finance", "directory", "tenants", "agents", "pii", "windows", "hr", "customers",
        "support_desk", "auction", "supervision", "budget_roles", "tools", "delegation", "mcp",
    }  # fmt: skip
    assert "base/agent_call.rego" in snapshot.modules
    assert set(baton["finance"]) == {"limits", "escalation"}
    assert baton["finance"]["limits"]["hard_cap"] == 1000000
    assert [tier["sla_seconds"] for tier in baton["finance"]["escalation"]] == [14400, 86400]


def test_conflicting_data_files_are_a_load_error(policy_copy: Path) -> None:
    (policy_copy / "data" / "override.json").write_text(
        json.dumps({"baton": {"finance": {"limits": {"hard_cap": 5}}}})
    )
    with pytest.raises(PolicyLoadError, match="data.baton.finance.limits.hard_cap is set by both"):
        PolicyBundle(policy_copy).current()


def test_missing_directory_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="cannot read policy directory"):
        PolicyBundle(tmp_path / "nowhere").current()
    with pytest.raises(PolicyLoadError, match="no Rego policies found"):
        PolicyBundle(tmp_path).current()


# ---------------------------------------------------------------------------------------------
# OpaRestEngine
# ---------------------------------------------------------------------------------------------


class CannedOpaServer:
    """A test double speaking just enough of OPA's Data API: canned answers per document path."""

    def __init__(self, answers: dict[str, tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, request.query_string, await request.json()))
        status, body = self.answers.get(request.path, (200, {}))
        return web.json_response(body, status=status)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        port: int = sock.getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def canned_opa() -> AsyncIterator[tuple[CannedOpaServer, int]]:
    decision = {"allow": True, "deny": [], "require_approval": []}
    server = CannedOpaServer(
        {
            "/v1/data/baton/finance/posting/decision": (
                200,
                {"result": decision, "provenance": {"bundles": {"baton": {"revision": "r42"}}}},
            ),
            "/gateway/v1/data/baton/finance/posting/decision": (200, {"result": decision}),
            "/v1/data/baton/finance/garbage/decision": (200, {"result": {"allow": "true"}}),
            "/v1/data/baton/finance/broken/decision": (
                500,
                {"code": "internal_error", "message": "eval_conflict_error"},
            ),
        }
    )
    port = await server.start()
    yield server, port
    await server.stop()


async def test_rest_engine_queries_the_data_api(canned_opa: tuple[CannedOpaServer, int]) -> None:
    server, port = canned_opa
    engine = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=2)
    try:
        decision = await decide(engine, query(), "rest-1")
        assert (decision.verdict, decision.revision, decision.engine) == (
            "allow",
            "baton@r42",
            "opa-rest",
        )
        assert server.requests[-1] == (
            "/v1/data/baton/finance/posting/decision",
            "provenance=true&strict-builtin-errors=true",
            {"input": BASE},
        )

        undefined = await decide(engine, query(policy="baton/finance/unknown"), "rest-2")
        assert (undefined.reasons, undefined.revision) == (
            ["policy returned no decision (undefined)"],
            "remote",
        )

        garbage = await decide(engine, query(policy="baton/finance/garbage"), "rest-3")
        assert garbage.reasons == ["policy 'allow' is not a boolean: 'true'"]

        broken = await decide(engine, query(policy="baton/finance/broken"), "rest-4")
        assert broken.verdict == "deny"
        # OPA's 500 is an evaluation error (a builtin error under strict builtin errors):
        # deterministic, so a deny naming it, not "engine unavailable" (which may be waited out).
        assert broken.reasons[0].startswith("policy evaluation failed: OPA answered 500")
    finally:
        await engine.aclose()

    prefixed = OpaRestEngine(f"http://127.0.0.1:{port}/gateway/", timeout=2)
    try:
        decision = await decide(prefixed, query(), "rest-5")
        assert (decision.verdict, decision.revision) == ("allow", "remote")
    finally:
        await prefixed.aclose()


async def test_rest_engine_unreachable_server_denies() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=2)
    try:
        decision = await decide(engine, query(), "rest-6")
    finally:
        await engine.aclose()
    assert decision.verdict == "deny"
    assert decision.reasons[0].startswith("policy engine unavailable: ClientConnectorError")


def test_rest_engine_refuses_urls_it_cannot_use() -> None:
    for bad in ["opa:8181", "ftp://opa", "http://"]:
        with pytest.raises(ValueError):
            OpaRestEngine(bad)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def test_rest_engine_through_local_opa_server_matches_embedded() -> None:
    opa_server = pytest.importorskip("baton.devstack.opa_server")
    server = opa_server.OpaCompatibleServer(POLICY_DIR)
    port = await _maybe_await(server.start("127.0.0.1", 0))
    rest = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    embedded = EmbeddedOpaEngine(POLICY_DIR)
    try:
        table = [(POSTING, case, doc) for case, doc in POSTING_CASES.items()]
        table += [("baton/finance/approval", case, doc) for case, doc in APPROVAL_CASES.items()]
        for policy, case, document in table:
            via_rest = await decide(rest, query(document, policy), case)
            local = await decide(embedded, query(document, policy), case)
            assert via_rest.engine == "opa-rest"
            assert _comparable(via_rest) == _comparable(local), case
    finally:
        await rest.aclose()
        await _maybe_await(server.stop())


def _comparable(decision: PolicyDecision) -> tuple[str, list[str], Obligations]:
    return decision.verdict, decision.reasons, decision.obligations


# ---------------------------------------------------------------------------------------------
# The posting activity's input document against the real policy
# ---------------------------------------------------------------------------------------------


def post_entry(amount: str, **fields: Any) -> Any:
    from workflows.contracts import AdjustingEntry, PostEntryInput

    entry = AdjustingEntry(
        entry_id="ADJ-B0042",
        account="6100-bank-fees",
        amount=Decimal(amount),
        source_ids=["B0042"],
        rationale="bank fee",
    )
    return PostEntryInput(
        tenant="acme",
        period="2026-10",
        entry=entry,
        preparer="agent:reconciler",
        requested_by="alice",
        idempotency_key="k1",
        **fields,
    )


async def test_posting_policy_input_speaks_the_policy_shape(local_engine: PolicyEngine) -> None:
    from activities.finance import posting_policy_input
    from workflows.contracts import ApprovalGrant

    def grant(*approvers: str, level: int = 0) -> ApprovalGrant:
        return ApprovalGrant(
            request_id="apr-1",
            approvers=list(approvers),
            action_digest="d1",
            escalation_level=level,
        )

    async def verdict(inp: Any) -> PolicyDecision:
        return await decide(local_engine, query(posting_policy_input(inp, "open")), "pi")

    document = posting_policy_input(post_entry("75000.00", approval=grant("carol")), "open")
    assert document["amended_by"] is None
    assert document["approval"] == {
        "request_id": "apr-1",
        "approvers": ["carol"],
        "action_digest": "d1",
        "escalation_level": 0,
    }
    assert (await verdict(post_entry("75000.00"))).verdict == "require_approval"
    assert (await verdict(post_entry("75000.00", approval=grant("carol")))).verdict == (
        "require_approval"
    )
    assert (await verdict(post_entry("75000.00", approval=grant("carol", "dave")))).verdict == (
        "allow"
    )
    assert (
        await verdict(post_entry("75000.00", approval=grant("carol", "grace", level=2)))
    ).verdict == "allow"
    amended = await verdict(
        post_entry("75000.00", amended_by="carol", approval=grant("carol", "dave"))
    )
    assert amended.reasons == [
        "segregation of duties: carol amended this entry and cannot approve it"
    ]
