"""HR onboarding (issue 5, first part): a blackboard of cooperating agents + a manager approval.

1. load the new hire from the HRIS;
2. three agents cooperate through a versioned blackboard (workflows/blackboard.py), in parallel:
   the identity verifier writes ``identity``, the policy educator ``policies`` (what applies to
   the hire's role and country), the entitlement prompter ``entitlements`` (the accesses the role
   needs); each also adds its item to the shared ``checklist``. Every agent reads a snapshot and
   proposes writes with the versions it read; a stale write is refused and the agent re-runs on
   fresh state (bounded). Every accepted write is persisted (table ``blackboard_entry``) and the
   history is queryable (query ``board_history``);
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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from temporalio import workflow

from workflows import errors
from workflows.approval_gate import reasons_of
from workflows.blackboard import Blackboard, cooperate_audited
from workflows.contracts import (
    BOARD_HISTORY_QUERY,
    STATUS_QUERY,
    ApprovalGrant,
    BoardAgentInput,
    BoardEntry,
    BoardProposal,
    BoardSlot,
    BoardWrite,
    Entitlement,
    GrantedEntitlement,
    GrantInput,
    LoadHireInput,
    NewHire,
    OnboardingInput,
    OnboardingResult,
    OnboardingStatus,
    PersistBoardInput,
    RevokeInput,
    digest,
)
from workflows.governed import ApprovalRound, Compensation, GovernedStep, grant
from workflows.process_base import GovernedProcess

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
class HrOnboardingWorkflow(GovernedProcess):
    undo_per_attempt_before_patch = True  # see workflows/governed.py UNDO_ONCE_PATCH
    keeps_claim_on_completion = True  # an onboarded employee is not onboarded again

    @workflow.init
    def __init__(self, inp: OnboardingInput) -> None:
        self.govern(inp, PROCESS, trust=inp.approval_trust)
        self.board = Blackboard(BOARD)
        self.granted: list[GrantedEntitlement] = []

    @workflow.run
    async def run(self, inp: OnboardingInput) -> OnboardingResult:
        self.begin(
            "onboarding.started",
            {
                "tenant": inp.tenant,
                "employee_id": inp.employee_id,
                "version": inp.version,
                "shadow": inp.shadow,
            },
            tenant=inp.tenant,
            shadow=inp.shadow,
            version=inp.version,
        )
        return await self._undoing_on_failure(
            self._onboard(inp),
            event="onboarding",
            what="onboarding",
            before_flush=self._persist_board,
        )

    async def _onboard(self, inp: OnboardingInput) -> OnboardingResult:
        self.stage = "loading hire"
        hire = await self._step(
            "connector",
            HrActivities.load_new_hire,
            LoadHireInput(tenant=inp.tenant, employee_id=inp.employee_id),
            f"HRIS: load new hire {inp.employee_id}",
        )
        self.board.write(
            "hire",
            {"role": hire.role, "department": hire.department, "country": hire.country},
            0,
            "connector:hris",
            "the HRIS record the onboarding starts from",
        )

        self.stage = "agents working on the blackboard"
        agents = AgentActivities
        await asyncio.gather(
            self._agent("identity_verifier", agents.verify_identity, hire),
            self._agent("policy_educator", agents.educate_policies, hire),
            self._agent("entitlement_prompter", agents.prompt_entitlements, hire),
        )
        await self._persist_board()

        identity = self.board.value("identity", [])
        if not identity or not str(identity[0]).startswith("verified"):
            raise errors.failure(
                NEW_HIRE_NOT_VERIFIED,
                f"identity of {inp.employee_id} is not verified: {identity}",
            )
        proposed = [_entitlement(item) for item in self.board.value("entitlements", [])]

        self.stage = "granting"
        waiting = [e for e in proposed if await self._grant(hire, e) is None]
        if waiting:
            labels = [e.label for e in waiting]
            outcome = await self.approve(
                ApprovalRound(
                    action="grant_entitlements",
                    payload={"employee_id": hire.employee_id, "entitlements": labels},
                    summary=f"grant {', '.join(labels)} to {hire.employee_id} "
                    f"({hire.role}, {hire.department})",
                    obligations=self.obligations(labels),
                    policy_reasons=reasons_of([self.held[label] for label in labels]),
                    action_payload={
                        "employee_id": hire.employee_id,
                        "entitlements": [e.model_dump(mode="json") for e in waiting],
                    },
                    risk="medium",
                    waiting="waiting for manager approval",
                    fail_safe="every access granted is revoked",
                )
            )
            self.stage = "granting approved accesses"
            for ent in waiting:
                await self._grant(hire, ent, grant(outcome))

        slot = self.board.read("grants")
        self.board.write(
            "grants",
            [f"{g.system}:{g.name}" for g in self.granted],
            slot.version,
            "baton:workflow",
            "accesses granted in the identity provider",
        )
        await self._persist_board()
        await self.finish(
            "onboarding.completed",
            {
                "granted": [f"{g.system}:{g.name}" for g in self.granted],
                "board_version": self.board.version,
                "conflicts": len(self.board.conflicts),
            },
        )
        return OnboardingResult(
            tenant=inp.tenant,
            employee_id=inp.employee_id,
            identity=identity,
            policies=self.board.value("policies", []),
            granted=self.granted,
            approvals=self.approvals,
            board_version=self.board.version,
            conflicts=len(self.board.conflicts),
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
        )

    # -- the blackboard agents ------------------------------------------------------------

    async def _agent(
        self,
        role: str,
        activity: Callable[[Any, BoardAgentInput], Awaitable[BoardProposal]],
        hire: NewHire,
    ) -> None:
        author = f"agent:{role}"

        async def propose(snapshot: dict[str, BoardSlot]) -> Sequence[BoardWrite]:
            proposal = await self._step(
                "agent",
                activity,
                BoardAgentInput(
                    version=self.inp.version,  # picks the agent's prompt and model
                    tenant=self.inp.tenant,
                    employee_id=self.inp.employee_id,
                    hire=hire,
                    board=snapshot,
                ),
                f"{role} (LLM): blackboard v{self.board.version}",
            )
            return proposal.writes

        await cooperate_audited(
            self.board,
            author,
            propose,
            max_retries=self.inp.max_conflict_retries,
            audit=self.audit,
        )

    async def _persist_board(self) -> None:
        entries = list(self.board.unpersisted())
        if not entries:
            return
        await self._step(
            "connector",
            HrActivities.persist_blackboard,
            PersistBoardInput(board=BOARD, entries=entries),
            f"blackboard: persist {len(entries)} entries",
        )
        self.board.mark_persisted(len(entries))

    # -- the sensitive step ---------------------------------------------------------------

    async def _grant(
        self, hire: NewHire, ent: Entitlement, approval: ApprovalGrant | None = None
    ) -> str | None:
        """Grant one entitlement; the grant id, or None when policy requires an approval."""
        key = f"{workflow.info().workflow_id}/grant/{ent.label}/{digest(approval)[:12]}"
        inp = self.inp
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
                summary=f"grant {ent.label} (policy {ENTITLEMENT_POLICY}"
                f"{', approved' if approval else ''})",
                key=key,
                subject=ent.label,
                undo=Compensation(
                    f"revoke {ent.label}",
                    HrActivities.revoke_entitlement,
                    RevokeInput(
                        original_key=key,
                        reason=f"onboarding of {inp.employee_id} undone",
                        idempotency_key=f"{key}/revoke",
                        shadow=inp.shadow,
                    ),
                    f"compensation: revoke {ent.label}",
                ),
                grant=approval,
            )
        )
        if outcome is None:
            return None
        assert outcome.grant_id is not None
        self.granted.append(
            GrantedEntitlement(
                system=ent.system,
                name=ent.name,
                grant_id=outcome.grant_id,
                approved_by=approval.approvers if approval else [],
            )
        )
        return outcome.grant_id

    # -- queries --------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> OnboardingStatus:  # type: ignore[override]  # its own model
        return OnboardingStatus(
            workflow_id=workflow.info().workflow_id,
            process=PROCESS,
            stage=self.stage,
            approval_state=self.gate.state,
            pending=self.gate.pending(),
            granted=self.granted,
            compensated=self.saga.compensated,
            board_version=self.board.version,
            conflicts=len(self.board.conflicts),
        )

    @workflow.query(name=BOARD_HISTORY_QUERY)
    def board_history(self) -> list[BoardEntry]:
        return self.board.history()


def _entitlement(item: Any) -> Entitlement:
    system, _, name = str(item).partition(":")
    return Entitlement(system=system.strip(), name=name.strip() or "(none)")
