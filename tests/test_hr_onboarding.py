"""HR onboarding against the real dev server: three agents cooperate on a versioned blackboard
(in parallel, so their writes to the shared checklist conflict and are retried on fresh state),
then the proposed accesses are granted through the policy gate, privileged ones after the
department manager approves. A rejection or a denied privileged access revokes everything
granted (saga) and the audit trail says why."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import WorkflowFailureError, WorkflowHandle

from activities.hr import BlackboardEntryRow, IdpEntitlement
from tests.conftest import Harness
from tests.support.approvals import decision, first_pending
from tests.support.hr import new_hire, start
from tests.test_finance_close import actions, failure_type
from workflows.client import ApprovalRefused
from workflows.contracts import ApprovalRequest, NewHire, OnboardingResult
from workflows.hr_onboarding import HrOnboardingWorkflow

ENGINEER_ACCESS = ["email:mailbox", "sso:user", "github:member", "jira:user", "aws:admin"]


async def wait_for_pending(h: Harness, workflow_id: str) -> ApprovalRequest:
    return await first_pending(lambda: h.client.onboarding_status(workflow_id), 30)


async def start_awaiting_approval(
    h: Harness, hire: NewHire
) -> tuple[WorkflowHandle[HrOnboardingWorkflow, OnboardingResult], ApprovalRequest]:
    """Start ``hire``'s onboarding and wait until it asks for an approval (the privileged
    access, its ordinary accesses granted by then): its handle and the pending request."""
    handle = await h.client.start_onboarding(start(h, hire))
    return handle, await wait_for_pending(h, handle.id)


def grants(h: Harness, employee_id: str) -> list[IdpEntitlement]:
    with h.db.read_session() as s:
        return list(
            s.exec(select(IdpEntitlement).where(IdpEntitlement.employee_id == employee_id)).all()
        )


def audit_rows(h: Harness, workflow_id: str, action: str) -> list[dict[str, Any]]:
    return [
        {"detail": json.loads(r.detail_json), "rationale": r.rationale}
        for r in h.runtime.ledger.trail(workflow_id)
        if r.action == action
    ]


async def test_happy_path_agents_cooperate_and_the_manager_approves_the_privileged_access(
    harness: Harness,
) -> None:
    h = harness
    hire = new_hire(h)
    async with h.worker():
        handle = await h.client.start_onboarding(start(h, hire))
        assert handle.id == f"onboarding/{h.tenant}/{hire.employee_id}"
        request = await wait_for_pending(h, handle.id)
        assert [(r.role, r.count) for r in request.requirements] == [("engineering-manager", 1)]
        assert request.candidates == {"engineering-manager": ["maya"]}
        assert "aws:admin" in request.summary
        # the ordinary accesses are granted already; the privileged one waits
        assert sorted(f"{g.system}:{g.name}" for g in grants(h, hire.employee_id)) == sorted(
            ENGINEER_ACCESS[:-1]
        )
        # the requester may not approve, nor someone who is not the department's manager
        with pytest.raises(ApprovalRefused):
            await h.client.decide(handle.id, decision(request, "hana"))
        with pytest.raises(ApprovalRefused):
            await h.client.decide(handle.id, decision(request, "oscar"))
        ack = await h.client.decide(handle.id, decision(request, "maya"))
        assert ack.accepted
        result = await handle.result()
        history = await h.client.board_history(handle.id)

    assert [f"{g.system}:{g.name}" for g in result.granted] == ENGINEER_ACCESS
    assert [g.approved_by for g in result.granted if g.name == "admin"] == [["maya"]]
    assert result.identity[0] == f"verified: {hire.employee_id}"
    assert any(p.startswith("gdpr-employee-data") for p in result.policies)  # country DE
    assert any(p.startswith("secure-development") for p in result.policies)  # role engineer
    rows = grants(h, hire.employee_id)
    assert len(rows) == 5 and all(r.revoked_at is None for r in rows)

    # the blackboard: every write versioned, attributed and reasoned; the three agents appended
    # to the shared checklist concurrently, so two of them went stale and re-ran on fresh state
    checklist = [e for e in history if e.key == "checklist"]
    assert [e.version for e in checklist] == [1, 2, 3]
    assert sorted(checklist[-1].value) == [
        "accesses proposed",
        "identity checked",
        "policies explained",
    ]
    assert {e.author for e in checklist} == {
        "agent:identity_verifier",
        "agent:policy_educator",
        "agent:entitlement_prompter",
    }
    assert result.conflicts >= 2
    assert len(audit_rows(h, handle.id, "blackboard.stale_write")) == result.conflicts
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert history[-1].key == "grants" and history[-1].value == ENGINEER_ACCESS
    assert all(e.reason and e.author for e in history)
    # ... and persisted, once per entry
    with h.db.read_session() as s:
        stored = s.exec(
            select(BlackboardEntryRow)
            .where(BlackboardEntryRow.workflow_id == handle.id)
            .order_by(BlackboardEntryRow.seq)  # type: ignore[arg-type]
        ).all()
    assert [(r.seq, r.key, r.version, r.author) for r in stored] == [
        (e.seq, e.key, e.version, e.author) for e in history
    ]
    trail = actions(h, handle.id)
    assert "idp.granted" in trail and "onboarding.completed" in trail
    assert "approval.requested" in trail or any(a.startswith("approval.") for a in trail)


async def test_a_rejection_revokes_every_access_granted_and_the_audit_says_why(
    harness: Harness,
) -> None:
    h = harness
    hire = new_hire(h)
    async with h.worker():
        handle, request = await start_awaiting_approval(h, hire)
        await h.client.decide(
            handle.id,
            decision(request, "maya", verdict="reject", rationale="no production admin yet"),
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await h.client.onboarding_status(handle.id)

    assert failure_type(failed.value) == "ApprovalRejected"
    rows = grants(h, hire.employee_id)
    assert len(rows) == 4 and all(r.revoked_at is not None for r in rows)
    assert len(status.compensated) >= 4
    assert len(audit_rows(h, handle.id, "idp.revoked")) == 4
    [failure] = audit_rows(h, handle.id, "onboarding.failed")
    assert "no production admin yet" in failure["detail"]["error"]


async def test_a_denied_privileged_access_revokes_what_was_granted(harness: Harness) -> None:
    """An engineer in a department without a manager in the directory: nobody may approve
    aws:admin, so policy denies it after the ordinary accesses were granted."""
    h = harness
    hire = new_hire(h, department="research")
    async with h.worker():
        handle = await h.client.start_onboarding(start(h, hire))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()

    assert failure_type(failed.value) == "PolicyDenied"
    rows = grants(h, hire.employee_id)
    assert sorted(f"{r.system}:{r.name}" for r in rows) == sorted(ENGINEER_ACCESS[:-1])
    assert all(r.revoked_at is not None for r in rows)
    denials = audit_rows(h, handle.id, "policy.deny")
    assert any(
        "nobody in the directory holds 'research-manager'" in reason
        for d in denials
        for reason in d["detail"]["reasons"]
    )
    [failure] = audit_rows(h, handle.id, "onboarding.failed")
    assert "research-manager" in failure["detail"]["error"]
    assert len(failure["detail"]["compensated"]) >= 4


async def test_an_unverified_identity_stops_before_any_access(harness: Harness) -> None:
    h = harness
    hire = new_hire(h, id_document_verified=False)
    async with h.worker():
        handle = await h.client.start_onboarding(start(h, hire))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        history = await h.client.board_history(handle.id)
    assert failure_type(failed.value) == "IdentityNotVerified"
    assert grants(h, hire.employee_id) == []
    assert [e.value for e in history if e.key == "identity"][0][0].startswith("unverified")


async def test_bad_input_fails_fast_and_an_unknown_hire_fails_clearly(harness: Harness) -> None:
    from pydantic import ValidationError

    h = harness
    with pytest.raises(ValidationError, match="employee_id"):
        await h.client.start_onboarding(
            {"tenant": h.tenant, "employee_id": "", "requested_by": "x"}
        )
    async with h.worker():
        handle = await h.client.start_onboarding(
            {"tenant": h.tenant, "employee_id": "NOBODY1", "requested_by": "hana"}
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert failure_type(failed.value) == "NewHireNotFound"


async def test_cli_drives_an_onboarding_end_to_end(harness: Harness) -> None:
    from tests.test_operations import approve_by_cli, run_cli

    h = harness
    employee = f"E{uuid.uuid4().hex[:8]}"
    hired = await run_cli(
        h, "onboard", "hire", "--tenant", h.tenant, "--employee-id", employee,
        "--role", "engineer", "--department", "engineering",
    )  # fmt: skip
    assert hired.returncode == 0, hired.stderr
    async with h.worker():
        started = await run_cli(
            h, "onboard", "start", "--tenant", h.tenant, "--employee-id", employee,
            "--requested-by", "hana",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        workflow_id = f"onboarding/{h.tenant}/{employee}"
        await wait_for_pending(h, workflow_id)
        status = await run_cli(h, "onboard", "status", workflow_id)
        assert status.returncode == 0 and '"engineering-manager"' in status.stdout
        await approve_by_cli(h, workflow_id, "maya", "needs prod access")
        result = await h.client.onboarding(workflow_id).result()
        history = await run_cli(h, "onboard", "history", workflow_id)
    assert [g.name for g in result.granted if g.system == "aws"] == ["admin"]
    assert history.returncode == 0
    assert "checklist@v3" in history.stdout and "agent:entitlement_prompter" in history.stdout


async def test_cancelling_during_the_approval_wait_revokes_every_access(harness: Harness) -> None:
    h = harness
    hire = new_hire(h)
    async with h.worker():
        handle, _ = await start_awaiting_approval(h, hire)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    rows = grants(h, hire.employee_id)
    assert len(rows) == 4 and all(r.revoked_at is not None for r in rows)
    assert len(audit_rows(h, handle.id, "onboarding.cancelled")) == 1


async def test_the_kill_switch_holds_grants_until_cleared(harness: Harness) -> None:
    """agent:entitlement_prompter stops the grants that agent proposed; clearing resumes them."""
    import asyncio

    from activities.kill_switch import KillSwitch

    h = harness
    hire = new_hire(h)
    switch = KillSwitch(h.db, h.runtime.ledger)
    async with h.worker():
        # the ordinary accesses are granted by then
        handle, request = await start_awaiting_approval(h, hire)
        switch.engage("agent:entitlement_prompter", reason="access review", by="ops")
        await h.client.decide(handle.id, decision(request, "maya"))
        async with asyncio.timeout(30):  # the approved privileged grant holds
            while "kill_switch.held" not in actions(h, handle.id):
                await asyncio.sleep(0.1)
        assert "aws:admin" not in {f"{g.system}:{g.name}" for g in grants(h, hire.employee_id)}
        switch.clear("agent:entitlement_prompter", reason="review done", by="ops")
        assert handle.id in await h.client.release_held()
        result = await handle.result()
    assert [f"{g.system}:{g.name}" for g in result.granted] == ENGINEER_ACCESS
    assert "kill_switch.released" in actions(h, handle.id)
