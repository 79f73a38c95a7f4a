"""The governed step and approval round (workflows/governed.py): the pure rules, and proof that
moving every process onto them keeps runs in flight working.

The ``*_before_governed.json`` histories were recorded on the code before the processes ran
through GovernedStep/ApprovalRound (each waited for a human, then finished); they must replay on
today's code. The ``*_governed.json`` ones were recorded once every process ran through them,
and the ``*_claimed.json`` ones once runs claimed their business key (CLAIMS_PATCH: the check at
the start, the claim before an approval, the claim's end). Regenerate only for a deliberate
change behind ``workflow.patched``: ``BATON_REGENERATE_GOLDEN=1`` writes the ``*_claimed.json``
files (``BATON_GOLDEN_SUFFIX=governed`` / ``before_governed`` on the older code wrote the
others)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from tests.conftest import Harness
from tests.support import golden
from workflows.contracts import (
    AdjustingEntry,
    ApprovalOutcome,
    ApprovalRequest,
    EntryAmendment,
    Obligations,
    PolicyDecision,
)
from workflows.customer_onboarding import CustomerOnboardingWorkflow
from workflows.governed import amend_entries, fail_if_denied, risk_of
from workflows.hr_onboarding import HrOnboardingWorkflow
from workflows.support import SupportCaseWorkflow

GOLDEN = golden.GOLDEN
SUFFIX = os.environ.get("BATON_GOLDEN_SUFFIX", "claimed")


# -- the pure rules -------------------------------------------------------------------------


def _decision(subject: str, verdict: str, *reasons: str) -> PolicyDecision:
    return PolicyDecision.model_validate(
        {
            "policy": "baton/test",
            "subject": subject,
            "verdict": verdict,
            "reasons": list(reasons),
            "decision_id": f"d-{subject}",
            "revision": "r1",
            "engine": "test",
        }
    )


def test_a_preflight_deny_names_every_denied_subject_and_its_decision() -> None:
    fail_if_denied([_decision("ADJ-1", "allow")])  # nothing denied: no failure
    with pytest.raises(ApplicationError) as err:
        fail_if_denied(
            [
                _decision("ADJ-1", "deny", "closed period"),
                _decision("ADJ-2", "require_approval", "large"),
                _decision("ADJ-3", "deny", "unknown account", "no rationale"),
            ]
        )
    assert err.value.type == "PolicyDenied" and err.value.non_retryable
    assert err.value.message == (
        "policy denied ADJ-1: closed period; ADJ-3: unknown account, no rationale"
    )
    assert err.value.details == ({"decision_ids": ["d-ADJ-1", "d-ADJ-3"]},)


def test_risk_is_high_only_when_a_cfo_must_approve() -> None:
    assert risk_of(Obligations(approver_roles=["cfo", "finance-controller"])) == "high"
    assert risk_of(Obligations(approver_roles=["finance-controller"])) == "medium"


def test_amendments_change_only_the_named_entries_and_remember_the_amender() -> None:
    entries = [
        AdjustingEntry.model_validate(
            {
                "entry_id": i,
                "account": "6100",
                "amount": "-1200.00",
                "source_ids": [f"BNK-{i}"],
                "rationale": "bank fee",
            }
        )
        for i in ("ADJ-A", "ADJ-B")
    ]
    request = ApprovalRequest.model_validate(
        {
            "request_id": "apr-1",
            "process": "finance_close",
            "action": "post_journal_entries",
            "action_digest": "x",
            "summary": "s",
            "requirements": [{"role": "finance-controller", "count": 1}],
            "approver_roles": ["finance-controller"],
            "eligible_approvers": ["carol"],
            "requested_by": "alice",
            "requested_at": "2026-01-01T00:00:00Z",
            "deadline": "2026-01-01T00:00:00Z",
        }
    )
    outcome = ApprovalOutcome(
        request=request,
        outcome="amended",
        decided_by="carol",
        rationale="half of it",
        amendments=[EntryAmendment(entry_id="ADJ-A", amount=Decimal("-600.00"))],
    )
    amended_by: dict[str, str] = {}
    revised = amend_entries(entries, outcome, amended_by)
    assert [e.amount for e in revised] == [Decimal("-600.00"), Decimal("-1200.00")]
    assert revised[0].account == "6100" and "amended by carol: half of it" in revised[0].rationale
    assert revised[1] == entries[1]
    assert amended_by == {"ADJ-A": "carol"}


# -- histories: recorded runs replay on today's code ----------------------------------------


async def _wait(check: Callable[[], Awaitable[Any]]) -> Any:
    async with asyncio.timeout(60):
        while not (found := await check()):
            await asyncio.sleep(0.1)
        return found


async def _hr_run(h: Harness) -> Any:
    from tests.test_hr_onboarding import new_hire, start

    hire = new_hire(h)
    handle = await h.client.start_onboarding(start(h, hire))
    await _wait(lambda: h.client.pending_approvals(handle.id))
    await h.client.approve(handle.id, approver="maya", rationale="golden")
    await handle.result()
    return handle


async def _customer_run(h: Harness) -> Any:
    from tests.test_customer_onboarding import customer_like, event
    from workflows.contracts.customer import CustomerOnboardingInput

    customer = await customer_like(h, "cust-globex")  # 15% discount: a sales manager approves
    handle, _ = await h.client.start_customer_onboarding(
        CustomerOnboardingInput.from_event(event(h, customer))
    )
    await _wait(lambda: h.client.pending_approvals(handle.id))
    await h.client.approve(handle.id, approver="oscar", rationale="golden")
    await handle.result()
    return handle


async def _support_run(h: Harness) -> Any:
    from workflows.contracts.support import SupportCase, SupportCaseInput
    from workflows.support_client import SupportClient

    case = SupportCase.model_validate(
        {
            "case_id": f"C-{uuid.uuid4().hex[:8]}",
            "tenant": h.tenant,
            "customer": "Initech",
            "customer_value_usd": 50000,  # a high-value customer: a support lead approves
            "subject": "Refund",
            "body": "Please refund invoice 4411, I was charged twice this month",
            "priority": "P3",
        }
    )
    handle = await SupportClient(h.client).start_case(SupportCaseInput(case=case))
    await _wait(lambda: h.client.pending_approvals(handle.id))
    await h.client.approve(handle.id, approver="sam", rationale="golden")
    await handle.result()
    return handle


RUNS: dict[str, tuple[Callable[[Harness], Awaitable[Any]], type]] = {
    "hr_onboarding_approved": (_hr_run, HrOnboardingWorkflow),
    "customer_onboarding_approved": (_customer_run, CustomerOnboardingWorkflow),
    "support_case_approved": (_support_run, SupportCaseWorkflow),
}


@pytest.mark.parametrize("suffix", ["before_governed", "governed", "claimed"])
@pytest.mark.parametrize("name", sorted(RUNS))
async def test_recorded_history_replays(harness: Harness, name: str, suffix: str) -> None:
    run, workflow_class = RUNS[name]
    path = GOLDEN / f"{name}_{suffix}.json"
    if golden.regenerating() and suffix == SUFFIX:
        async with harness.worker():
            handle = await run(harness)
        await golden.record(path, handle)
    await golden.load_and_replay(path, f"golden-{name}", workflow_class)


# -- the process registry --------------------------------------------------------------------


def test_the_registry_drives_the_worker_and_names_each_process_once() -> None:
    from worker import WORKFLOWS
    from workflows.registry import PROCESSES, UnknownProcess, spec_for, spec_named

    assert {s.workflow for s in PROCESSES} <= set(WORKFLOWS)
    assert len({s.name for s in PROCESSES}) == len(PROCESSES)
    assert spec_named("hr_onboarding").workflow is HrOnboardingWorkflow
    with pytest.raises(UnknownProcess, match="known: finance_close"):
        spec_named("payroll")
    with pytest.raises(UnknownProcess, match="no process takes a Obligations"):
        spec_for(Obligations())


async def test_one_start_for_any_process_uses_its_business_key(harness: Harness) -> None:
    from tests.test_hr_onboarding import new_hire
    from workflows.client import ProcessAlreadyStarted
    from workflows.contracts import OnboardingInput

    h = harness
    hire = new_hire(h)
    inp = OnboardingInput(tenant=h.tenant, employee_id=hire.employee_id, requested_by="hana")
    async with h.worker():
        handle = await h.client.start(inp)
        assert handle.id == f"onboarding/{h.tenant}/{hire.employee_id}"
        with pytest.raises(ProcessAlreadyStarted):  # the same business key, still running
            await h.client.start(inp)
        [request] = await _wait(lambda: h.client.pending_approvals(handle.id))
        assert request.action == "grant_entitlements"
        await h.client.cancel(handle.id)
    desc = await handle.describe()
    assert desc.search_attributes.get("BatonProcess") == ["hr_onboarding"]


async def test_baton_start_runs_any_registered_process_from_json(harness: Harness) -> None:
    """`baton start PROCESS --input JSON` is BatonClient.start from the shell: a bad input is
    named and nothing starts (exit 2), an unknown process is named with the known ones."""
    from tests.test_hr_onboarding import new_hire
    from tests.test_operations import run_cli

    h = harness
    unknown = await run_cli(h, "start", "payroll", "--input", "{}")
    assert unknown.returncode == 2 and "known: finance_close" in unknown.stderr
    hire = new_hire(h)
    bad = await run_cli(h, "start", "hr_onboarding", "--input", json.dumps({"tenant": h.tenant}))
    assert bad.returncode == 2 and "employee_id" in bad.stderr
    good = {"tenant": h.tenant, "employee_id": hire.employee_id, "requested_by": "hana"}
    async with h.worker():
        started = await run_cli(h, "start", "hr_onboarding", "--input", json.dumps(good))
        assert started.returncode == 0, started.stderr
        workflow_id = f"onboarding/{h.tenant}/{hire.employee_id}"
        assert f"started {workflow_id}" in started.stdout
        [request] = await _wait(lambda: h.client.pending_approvals(workflow_id))
        assert request.action == "grant_entitlements"
        await h.client.cancel(workflow_id)
