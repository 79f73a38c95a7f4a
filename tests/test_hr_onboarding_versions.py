"""HR onboarding with the finance close's shadow and canary machinery, on the real dev server:
a shadow onboarding grants nothing in the identity provider, simulates the manager's approval
from policy and diffs clean against production; a denied shadow run "revokes" only in the
shadow outbox; a canary routes new onboardings to a candidate version whose prompt reaches the
model, and its KPIs are measured per version."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlmodel import select
from temporalio.client import WorkflowFailureError

from activities.agents import IDENTITY_VERIFIER_PROMPT, POLICY_EDUCATOR_PROMPT_V2
from activities.canary import measure
from activities.database import ShadowAction
from tests.conftest import Harness
from tests.test_finance_close import failure_type
from tests.test_hr_onboarding import (
    ENGINEER_ACCESS,
    audit_rows,
    decision,
    grants,
    new_hire,
    start,
    start_awaiting_approval,
    wait_for_pending,
)
from workflows import visibility
from workflows.contracts import VERSION_MEMO, CanaryConfig

CANDIDATE = "policy-educator-prompt-v2"


def shadow_actions(h: Harness, workflow_id: str) -> list[tuple[str, str]]:
    with h.db.read_session() as s:
        rows = s.exec(select(ShadowAction).where(ShadowAction.workflow_id == workflow_id)).all()
        return sorted((r.action, r.entry_id) for r in rows)


async def test_a_shadow_onboarding_grants_nothing_simulates_the_manager_and_diffs_clean(
    harness: Harness,
) -> None:
    from tests.test_operations import run_cli

    h = harness
    hire = new_hire(h)
    async with h.worker():
        prod, request = await start_awaiting_approval(h, hire)
        await h.client.decide(prod.id, decision(request, "maya"))
        await prod.result()
        shadow = await h.client.start_onboarding({**start(h, hire), "shadow": True})
        assert shadow.id == f"shadow/onboarding/{h.tenant}/{hire.employee_id}"
        result = await shadow.result()  # nobody was asked to approve
        diff = await h.client.shadow_diff(shadow.id)
        described = await shadow.describe()
        cli = await run_cli(h, "shadow", "diff", shadow.id)

    assert described.typed_search_attributes.get(visibility.SHADOW) is True
    assert [f"{g.system}:{g.name}" for g in result.granted] == ENGINEER_ACCESS
    assert all(g.grant_id.startswith("S-") for g in result.granted)
    assert [g.approved_by for g in result.granted if g.name == "admin"] == [["maya"]]
    # the identity provider holds production's grants only
    rows = grants(h, hire.employee_id)
    assert len(rows) == 5 and {r.workflow_id for r in rows} == {prod.id}
    assert shadow_actions(h, shadow.id) == sorted(("grant", a) for a in ENGINEER_ACCESS)
    [simulated] = audit_rows(h, shadow.id, "approval.simulated")
    assert simulated["detail"]["approvers"] == ["maya"]
    assert len(audit_rows(h, shadow.id, "shadow.granted")) == 5
    assert audit_rows(h, shadow.id, "idp.granted") == []
    # the diff: same accesses, same approval shape
    assert diff.differences == [] and diff.same_actions == 5
    assert diff.production_approvals == ["maya"] and diff.shadow_approvals == ["maya"]
    assert cli.returncode == 0, cli.stderr
    assert "same actions: 5; different: 0" in cli.stdout


async def test_a_denied_shadow_onboarding_revokes_only_in_the_shadow_outbox(
    harness: Harness,
) -> None:
    h = harness
    hire = new_hire(h, department="research")  # nobody may approve aws:admin: policy denies
    async with h.worker():
        shadow = await h.client.start_onboarding({**start(h, hire), "shadow": True})
        with pytest.raises(WorkflowFailureError) as failed:
            await shadow.result()
    assert failure_type(failed.value) == "PolicyDenied"
    assert grants(h, hire.employee_id) == []
    ordinary = ENGINEER_ACCESS[:-1]
    assert shadow_actions(h, shadow.id) == sorted(
        [*(("grant", a) for a in ordinary), *(("revoke", a) for a in ordinary)]
    )
    assert len(audit_rows(h, shadow.id, "shadow.revoked")) == 4
    assert audit_rows(h, shadow.id, "idp.revoked") == []


def educator_prompt(h: Harness, employee_id: str, agent: str = "policy_educator") -> list[str]:
    return [
        str(r["body"]["messages"][0]["content"])
        for r in h.model.requests
        if r["agent"] == agent and employee_id in r["raw"]
    ]


async def test_a_canary_routes_new_onboardings_to_the_candidate_and_measures_it(
    harness: Harness,
) -> None:
    h = harness
    status, _ = h.runtime.canary.start(
        CanaryConfig.model_validate(
            {"process": "hr_onboarding", "candidate": CANDIDATE, "share": 1.0}
        ),
        by="ops",
        reason="try the reworded educator prompt",
    )
    routed, pinned = new_hire(h), new_hire(h)
    async with h.worker():
        runs = [
            await h.client.start_onboarding(start(h, routed)),  # the canary assigns
            await h.client.start_onboarding({**start(h, pinned), "version": "stable"}),
        ]
        for run in runs:
            request = await wait_for_pending(h, run.id)
            await h.client.decide(run.id, decision(request, "maya"))
            await run.result()
        # visibility lags the runs' ends under load: measure once both show as finished
        for _ in range(100):
            baseline, candidate = await measure(
                h.temporal, h.runtime.ledger, status, h.client.task_queue
            )
            if baseline.running == candidate.running == 0:
                break
            await asyncio.sleep(0.1)

    for run, version in zip(runs, (CANDIDATE, "stable"), strict=True):
        described = await run.describe()
        assert described.typed_search_attributes.get(visibility.VERSION) == version
        assert (await described.memo())[VERSION_MEMO] == version
        [started] = audit_rows(h, run.id, "onboarding.started")
        assert started["detail"]["version"] == version
    # the candidate's prompt reached the model for the educator only; stable kept its own
    assert educator_prompt(h, routed.employee_id)[0] == POLICY_EDUCATOR_PROMPT_V2
    assert educator_prompt(h, pinned.employee_id)[0] != POLICY_EDUCATOR_PROMPT_V2
    assert set(educator_prompt(h, routed.employee_id, "identity_verifier")) == {
        IDENTITY_VERIFIER_PROMPT
    }
    writes = [
        json.loads(r.detail_json)
        for r in h.runtime.ledger.trail(runs[0].id)
        if r.action == "agent.proposed_board_writes" and r.actor == "agent:policy_educator"
    ]
    assert writes and all((w["version"], w["prompt_variant"]) == (CANDIDATE, "v2") for w in writes)
    # KPIs per version: one finished run each, both needed the manager
    assert (baseline.version, baseline.completed, baseline.approvals) == ("stable", 1, 1)
    assert (candidate.version, candidate.completed, candidate.approvals) == (CANDIDATE, 1, 1)


def test_an_unknown_onboarding_version_fails_fast_naming_the_field() -> None:
    from pydantic import ValidationError

    from workflows.contracts import OnboardingInput

    with pytest.raises(ValidationError, match="version") as err:
        OnboardingInput.model_validate(
            {"tenant": "acme", "employee_id": "E1", "requested_by": "x", "version": "v9"}
        )
    assert CANDIDATE in str(err.value)
