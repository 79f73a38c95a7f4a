"""HR onboarding (issue 5, first part): a blackboard of cooperating agents + a manager approval.

1. load the new hire from the HRIS;
2. three agents cooperate in parallel through a versioned blackboard (``BlackboardProcess``,
   workflows/process_base.py): the identity verifier writes ``identity``, the policy educator
   ``policies`` (what applies to the hire's role and country), the entitlement prompter
   ``entitlements`` (the accesses the role needs); each also adds its item to the ``checklist``;
3. each proposed entitlement is granted through the sensitive activity, which asks policy
   (policy/hr/entitlements.rego) right before it writes; its revocation is registered first.
   Privileged ones (policy says require_approval) go to ONE approval request for the hire's
   department manager (the approval gate), then are granted with the approval attached;
4. the outcome goes on the blackboard (``grants``).

Shadow runs (``shadow=True``) run every agent and ask policy for real, but grants and revokes
are only recorded in the shadow outbox (``shadow_action``) and the manager's approval is
simulated from policy's candidates. The run's ``version`` (PROCESS_VERSIONS, assigned by the
process's canary) picks the agents' prompts and models.

A deny, a rejection, an expired approval, a failure or a cancellation revokes everything granted
so far (saga), audits why, and fails the run with a typed error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

from workflows import errors
from workflows.blackboard import Blackboard
from workflows.contracts import (
    STATUS_QUERY,
    ApprovalGrant,
    BoardAgentInput,
    BoardSlot,
    Entitlement,
    GrantedEntitlement,
    GrantInput,
    GrantOutcome,
    LoadHireInput,
    NewHire,
    OnboardingInput,
    OnboardingResult,
    OnboardingStatus,
    RevokeInput,
)
from workflows.governed import ApprovalRound, Compensation, GovernedStep, step_summary
from workflows.process_base import BlackboardProcess

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.hr import ENTITLEMENT_POLICY, HrActivities

__all__ = [
    "BOARD",
    "CONFLICTS_EXHAUSTED",
    "NEW_HIRE_NOT_VERIFIED",
    "PROCESS",
    "HrOnboardingWorkflow",
]

PROCESS = "hr_onboarding"
BOARD = "onboarding"
NEW_HIRE_NOT_VERIFIED = errors.IDENTITY_NOT_VERIFIED
CONFLICTS_EXHAUSTED = errors.BLACKBOARD_CONFLICTS


@workflow.defn(name="HrOnboarding")
class HrOnboardingWorkflow(BlackboardProcess):
    hire: NewHire  # loaded from the HRIS first
    undo_per_attempt_before_patch = True  # see workflows/governed.py UNDO_ONCE_PATCH
    keeps_claim_on_completion = True  # an onboarded employee is not onboarded again
    board_persist_activity = staticmethod(HrActivities.persist_blackboard)

    @workflow.init
    def __init__(self, inp: OnboardingInput) -> None:
        self.govern(inp, PROCESS, trust=inp.approval_trust)
        self.board = Blackboard(BOARD)
        self.granted: list[GrantedEntitlement] = []

    @workflow.run
    async def run(self, inp: OnboardingInput) -> OnboardingResult:
        return await self.run_governed(
            self._onboard(inp),
            "onboarding.started",
            {
                "tenant": inp.tenant,
                "employee_id": inp.employee_id,
                "version": inp.version,
                "shadow": inp.shadow,
            },
            event="onboarding",
            what="onboarding",
            before_flush=self.persist_board,
        )

    async def _onboard(self, inp: OnboardingInput) -> OnboardingResult:
        self.stage = "loading hire"
        self.hire = hire = await self._step(
            "connector",
            HrActivities.load_new_hire,
            LoadHireInput(tenant=inp.tenant, employee_id=inp.employee_id),
            f"HRIS: load new hire {inp.employee_id}",
        )
        hris = {"role": hire.role, "department": hire.department, "country": hire.country}
        self.board.put("hire", hris, "connector:hris", "the HRIS record the onboarding starts from")

        self.stage = "agents working on the blackboard"

        def ask(board: dict[str, BoardSlot]) -> BoardAgentInput:  # the version picks the model
            return BoardAgentInput(
                version=inp.version,
                tenant=inp.tenant,
                employee_id=inp.employee_id,
                hire=hire,
                board=board,
            )

        await asyncio.gather(
            self.board_agent("identity_verifier", AgentActivities.verify_identity, ask),
            self.board_agent("policy_educator", AgentActivities.educate_policies, ask),
            self.board_agent("entitlement_prompter", AgentActivities.prompt_entitlements, ask),
        )
        await self.persist_board()

        identity = self.board.value("identity", [])
        if not identity or not str(identity[0]).startswith("verified"):
            raise errors.failure(
                NEW_HIRE_NOT_VERIFIED, f"identity of {inp.employee_id} is not verified: {identity}"
            )
        proposed = [_entitlement(item) for item in self.board.value("entitlements", [])]

        self.stage = "granting"  # privileged accesses: ONE request to the hire's manager
        await self.act_then_approve(
            proposed, self._grant, self._manager_round, acting="granting approved accesses"
        )

        granted = [f"{g.system}:{g.name}" for g in self.granted]
        self.board.put(
            "grants", granted, "baton:workflow", "accesses granted in the identity provider"
        )
        await self.persist_board()
        await self.finish("onboarding.completed", {"granted": granted, **self.board_facts()})
        return self.result_as(
            OnboardingResult,
            tenant=inp.tenant,
            employee_id=inp.employee_id,
            identity=identity,
            policies=self.board.value("policies", []),
            granted=self.granted,
            **self.board_facts(),
        )

    def _manager_round(self, waiting: list[Entitlement]) -> ApprovalRound:
        hire, labels = self.hire, [e.label for e in waiting]
        ents = [e.model_dump(mode="json") for e in waiting]
        return ApprovalRound.over(
            [self.held[label] for label in labels],
            action="grant_entitlements",
            payload={"employee_id": hire.employee_id, "entitlements": labels},
            summary=f"grant {', '.join(labels)} to {hire.employee_id} "
            f"({hire.role}, {hire.department})",
            action_payload={"employee_id": hire.employee_id, "entitlements": ents},
            risk="medium",
            waiting="waiting for manager approval",
            fail_safe="every access granted is revoked",
        )

    async def _grant(self, ent: Entitlement, approval: ApprovalGrant | None) -> GrantOutcome | None:
        """Grant one entitlement to the hire; None when policy requires an approval first."""
        inp, hire, key = self.inp, self.hire, self.step_key("grant", ent.label, approval)
        outcome = await self.act(
            GovernedStep(
                what=f"granting {ent.label}",
                activity=HrActivities.grant_entitlement,
                arg=GrantInput(
                    tenant=inp.tenant,
                    employee_id=inp.employee_id,
                    hire=hire,
                    entitlement=ent,
                    requested_by=inp.requested_by,
                    reason="proposed by the entitlement prompter on the blackboard",
                    approval=approval,
                    idempotency_key=key,
                    shadow=inp.shadow,
                ),
                summary=step_summary(f"grant {ent.label}", ENTITLEMENT_POLICY, approval),
                key=key,
                subject=ent.label,
                undo=Compensation.by(
                    f"revoke {ent.label}",
                    HrActivities.revoke_entitlement,
                    RevokeInput(
                        original_key=key,
                        reason=f"onboarding of {inp.employee_id} undone",
                        idempotency_key=f"{key}/revoke",
                        shadow=inp.shadow,
                    ),
                ),
                grant=approval,
            )
        )
        if outcome is not None:
            gid, by = outcome.grant_id, approval.approvers if approval else []
            assert gid is not None
            self.granted.append(
                GrantedEntitlement(**ent.model_dump(), grant_id=gid, approved_by=by)
            )
        return outcome

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> OnboardingStatus:  # type: ignore[override]  # its own model
        return self.status_as(OnboardingStatus, granted=self.granted, **self.board_facts())


def _entitlement(item: Any) -> Entitlement:
    system, _, name = str(item).partition(":")
    return Entitlement(system=system.strip(), name=name.strip() or "(none)")
