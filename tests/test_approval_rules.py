"""The approval gate's rules as plain functions: slots, N-of-M assignment, eligibility, refusals.

These run without Temporal; tests/test_approvals.py proves the same rules through a real workflow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.approvals import fee_request
from workflows.approval_gate import (
    ApprovalGate,
    assign,
    describe,
    merge_obligations,
    refresh_tier,
    still_needed,
)
from workflows.audit_trail import AuditTrail
from workflows.contracts import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRequirement,
    ApprovalVote,
    EscalationTier,
    Obligations,
)

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
# people by role, as policy computes them from policy/data/directory.json (alice requested)
CANDIDATES = {
    "cfo": ["dave"],
    "finance-controller": ["carol", "dave", "frank"],
    "ceo": ["grace"],
}
ESCALATION = [
    EscalationTier(roles=["cfo"], sla_seconds=4 * 3600),
    EscalationTier(roles=["ceo"], sla_seconds=24 * 3600),
]


def request(
    *requirements: tuple[str, int], level: int = 0, voters: tuple[str, ...] = ()
) -> ApprovalRequest:
    r = fee_request(
        "ADJ-1",
        "-1200.00",
        "B1",
        summary="post 2 entries",
        requirements=[ApprovalRequirement(role=role, count=n) for role, n in requirements],
        approver_roles=[],
        eligible_approvers=[],
        candidates=CANDIDATES,
        escalation=ESCALATION,
        escalation_level=level,
        excluded=["agent:reconciler"],
        requested_at=NOW,
        deadline=NOW,
        approvals=[
            ApprovalVote(approver=v, role="?", at=NOW, rationale="ok", via="update") for v in voters
        ],
    )
    refresh_tier(r)
    return r


def decision(approver: str, verdict: str = "approve", **extra: Any) -> ApprovalDecision:
    return ApprovalDecision.model_validate(
        {
            "request_id": "apr-1",
            "approver": approver,
            "verdict": verdict,
            "rationale": "ok",
            "action_digest": "d" * 64,
            **extra,
        }
    )


def gate_with(r: ApprovalRequest) -> ApprovalGate:
    gate = ApprovalGate("finance_close", AuditTrail())
    gate.requests[r.request_id] = r
    return gate


def test_controller_plus_cfo_needs_two_distinct_people_in_any_order() -> None:
    r = request(("cfo", 1), ("finance-controller", 1))
    # dave holds both roles but fills one slot; carol fills the other, whoever comes first
    assert assign(r, ["dave", "carol"]) == {"dave": "cfo", "carol": "finance-controller"}
    assert assign(r, ["carol", "dave"]) == {"carol": "finance-controller", "dave": "cfo"}
    # two controllers cannot cover the cfo slot
    assert assign(r, ["carol", "frank"]) is None
    assert [
        x.model_dump()
        for x in still_needed(request(("cfo", 1), ("finance-controller", 1), voters=("frank",)))
    ] == [{"role": "cfo", "count": 1}]


def test_augmenting_path_moves_an_earlier_approver_to_another_slot() -> None:
    # dave first took the controller slot; when carol arrives he must move to the cfo slot
    r = request(("cfo", 1), ("finance-controller", 1))
    assert assign(r, ["dave"]) is not None
    assert assign(r, ["dave", "carol"]) == {"dave": "cfo", "carol": "finance-controller"}


def test_escalation_widens_who_may_fill_open_slots() -> None:
    r0 = request(("finance-controller", 2))
    assert r0.eligible_approvers == ["carol", "dave", "frank"]
    assert assign(r0, ["carol", "grace"]) is None  # the ceo is not eligible before tier 2
    r2 = request(("finance-controller", 2), level=2)
    assert "grace" in r2.eligible_approvers and "ceo" in r2.approver_roles
    assert assign(r2, ["carol", "grace"]) == {
        "carol": "finance-controller",
        "grace": "finance-controller",
    }


def test_merge_takes_the_strictest_count_and_common_candidates() -> None:
    a = Obligations(
        required_approvals=[ApprovalRequirement(role="finance-controller", count=1)],
        candidates={"finance-controller": ["carol", "dave", "frank"]},
        escalation=ESCALATION,
    )
    b = Obligations(
        required_approvals=[
            ApprovalRequirement(role="cfo", count=1),
            ApprovalRequirement(role="finance-controller", count=1),
        ],
        # frank amended entry b, so he may not approve it
        candidates={"cfo": ["dave"], "finance-controller": ["carol", "dave"]},
    )
    merged = merge_obligations([a, b])
    assert describe(merged.required_approvals) == "1 x cfo + 1 x finance-controller"
    assert merged.candidates == {"cfo": ["dave"], "finance-controller": ["carol", "dave"]}
    assert merged.escalation == ESCALATION


@pytest.mark.parametrize(
    ("d", "voters", "refusal"),
    [
        (decision("carol", request_id="apr-9"), (), "unknown approval request 'apr-9'"),
        (decision("carol", action_digest="e" * 64), (), "action digest mismatch"),
        (decision("alice"), (), "segregation of duties: alice requested"),
        (decision("agent:reconciler"), (), "segregation of duties: agent:reconciler prepared"),
        (decision("erin"), (), "erin may not decide on this request"),
        (decision("grace"), (), "grace may not decide"),  # ceo only after two escalations
        (decision("carol", rationale="again"), ("carol",), "carol has already approved"),
        (decision("frank"), ("carol",), "frank's roles are already covered"),
        (
            decision("carol", "amend", amendments=[{"entry_id": "ADJ-7", "amount": "1.00"}]),
            (),
            "amendment names entry 'ADJ-7'",
        ),
        (
            decision("carol", "amend", amendments=[{"entry_id": "ADJ-1", "amount": "-1200.00"}]),
            (),
            "changes nothing",
        ),
    ],
)
def test_refusals_name_the_reason(
    d: ApprovalDecision, voters: tuple[str, ...], refusal: str
) -> None:
    gate = gate_with(request(("cfo", 1), ("finance-controller", 1), voters=voters))
    check = gate.check(d)
    assert check.refusal is not None and refusal in check.refusal, check
    assert not check.duplicate


def test_an_identical_approval_is_a_duplicate_not_a_second_vote() -> None:
    gate = gate_with(request(("cfo", 1), ("finance-controller", 1), voters=("carol",)))
    check = gate.check(decision("carol"))  # same approver, digest and rationale as recorded
    assert check.duplicate and check.refusal is None


def test_decision_payload_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="verdict 'amend' needs at least one entry"):
        decision("carol", "amend")
    with pytest.raises(ValueError, match="only allowed with verdict 'amend'"):
        decision("carol", "approve", amendments=[{"entry_id": "ADJ-1", "amount": "1.00"}])
    with pytest.raises(ValueError, match="changes nothing"):
        decision("carol", "amend", amendments=[{"entry_id": "ADJ-1"}])
    with pytest.raises(ValueError, match="verdict"):
        decision("carol", "maybe")
