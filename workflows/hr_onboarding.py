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
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow

from workflows import errors, visibility
from workflows.approval_gate import ApprovalGate, merge_obligations, new_request, reasons_of
from workflows.audit_trail import AuditTrail
from workflows.blackboard import Blackboard, ConflictRetriesExhausted, StaleWrite, cooperate
from workflows.contracts import (
    BOARD_HISTORY_QUERY,
    STATUS_QUERY,
    ApprovalGrant,
    ApprovalOutcome,
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
    PolicyDecision,
    RevokeInput,
    digest,
)
from workflows.kill_switch_gate import KillSwitchGate
from workflows.presets import PRESETS
from workflows.process_base import GovernedProcess, RunCost, set_search_attributes
from workflows.saga import Saga

with workflow.unsafe.imports_passed_through():
    from activities.agents import AgentActivities
    from activities.hr import ENTITLEMENT_POLICY, HrActivities

R = TypeVar("R")

PROCESS = "hr_onboarding"
BOARD = "onboarding"
NEW_HIRE_NOT_VERIFIED = "IdentityNotVerified"
CONFLICTS_EXHAUSTED = "BlackboardConflicts"


@workflow.defn(name="HrOnboarding")
class HrOnboardingWorkflow(GovernedProcess):
    @workflow.init
    def __init__(self, inp: OnboardingInput) -> None:
        self.inp = inp
        self.stage = "starting"
        self.audit = AuditTrail()
        self.gate = ApprovalGate(PROCESS, self.audit, inp.approval_trust)
        self.kill_switch = KillSwitchGate(self.audit)
        self.board = Blackboard(BOARD)
        self.saga = Saga()
        self.granted: list[GrantedEntitlement] = []
        self.cost = RunCost()  # the run's model tokens and cost, in its search attributes
        self.pending_decisions: dict[str, PolicyDecision] = {}

    @workflow.run
    async def run(self, inp: OnboardingInput) -> OnboardingResult:
        set_search_attributes(
            [
                visibility.PROCESS.value_set(PROCESS),
                visibility.TENANT.value_set(inp.tenant),
                visibility.APPROVAL_STATE.value_set("none"),
                visibility.RISK.value_set("low"),
                visibility.COST_USD.value_set(0.0),
                visibility.TOKENS.value_set(0),
                visibility.SHADOW.value_set(inp.shadow),
                visibility.VERSION.value_set(inp.version),
            ]
        )
        self.audit.record(
            inp.requested_by,
            "onboarding.started",
            detail={
                "tenant": inp.tenant,
                "employee_id": inp.employee_id,
                "version": inp.version,
                "shadow": inp.shadow,
            },
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
        approvals: list[ApprovalOutcome] = []
        if waiting:
            outcome = await self._ask_manager(hire, waiting)
            approvals.append(outcome)
            request = outcome.request
            if outcome.outcome == "expired":
                raise errors.failure(
                    errors.APPROVAL_EXPIRED,
                    f"approval request {request.request_id} expired ({outcome.rationale}); "
                    "failing safe: every access granted is revoked",
                )
            if outcome.outcome != "approved":
                raise errors.failure(
                    errors.APPROVAL_REJECTED,
                    f"{outcome.decided_by} {outcome.outcome} {request.request_id}: "
                    f"{outcome.rationale}",
                )
            self.stage = "granting approved accesses"
            grant = ApprovalGrant(
                request_id=request.request_id,
                approvers=outcome.approvers,
                action_digest=request.action_digest,
                escalation_level=request.escalation_level,
            )
            for ent in waiting:
                if await self._grant(hire, ent, grant) is None:
                    raise errors.failure(
                        errors.POLICY_DENIED,
                        f"{ent.label} still needs approval after "
                        f"{', '.join(outcome.approvers)} approved it",
                    )

        slot = self.board.read("grants")
        self.board.write(
            "grants",
            [f"{g.system}:{g.name}" for g in self.granted],
            slot.version,
            "baton:workflow",
            "accesses granted in the identity provider",
        )
        await self._persist_board()
        self.stage = "done"
        self.audit.record(
            "baton:workflow",
            "onboarding.completed",
            detail={
                "granted": [f"{g.system}:{g.name}" for g in self.granted],
                "board_version": self.board.version,
                "conflicts": len(self.board.conflicts),
            },
        )
        await self.audit.flush()
        return OnboardingResult(
            tenant=inp.tenant,
            employee_id=inp.employee_id,
            identity=identity,
            policies=self.board.value("policies", []),
            granted=self.granted,
            approvals=approvals,
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
            self.cost.add(proposal.usage)
            return proposal.writes

        def conflict(err: StaleWrite, attempt: int) -> None:
            self.audit.record(
                author,
                "blackboard.stale_write",
                detail={"key": err.key, "read": err.expected, "current": err.current},
                rationale=f"re-running on fresh state (retry {attempt})",
            )

        try:
            await cooperate(
                self.board,
                author,
                propose,
                max_retries=self.inp.max_conflict_retries,
                on_conflict=conflict,
            )
        except ConflictRetriesExhausted as err:
            raise errors.failure(CONFLICTS_EXHAUSTED, str(err)) from err

    async def _persist_board(self) -> None:
        entries = list(self.board.unpersisted())
        if not entries:
            return
        preset = PRESETS["connector"]
        await workflow.execute_activity_method(
            HrActivities.persist_blackboard,
            PersistBoardInput(board=BOARD, entries=entries),
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
            summary=f"blackboard: persist {len(entries)} entries",
        )
        self.board.mark_persisted(len(entries))

    # -- the sensitive step ---------------------------------------------------------------

    async def _grant(
        self, hire: NewHire, ent: Entitlement, approval: ApprovalGrant | None = None
    ) -> str | None:
        """Grant one entitlement; the grant id, or None when policy requires an approval."""
        key = f"{workflow.info().workflow_id}/grant/{ent.label}/{digest(approval)[:12]}"
        self.saga.add(
            f"revoke {ent.label}",
            lambda: self._step(
                "compensation",
                HrActivities.revoke_entitlement,
                RevokeInput(
                    original_key=key,
                    reason=f"onboarding of {self.inp.employee_id} undone",
                    idempotency_key=f"{key}/revoke",
                    shadow=self.inp.shadow,
                ),
                f"compensation: revoke {ent.label}",
            ),
        )
        outcome = await self._step(
            "connector",
            HrActivities.grant_entitlement,
            GrantInput(
                tenant=self.inp.tenant,
                employee_id=self.inp.employee_id,
                hire=hire,
                entitlement=ent,
                requested_by=self.inp.requested_by,
                reason="proposed by the entitlement prompter on the blackboard",
                approval=approval,
                idempotency_key=key,
                shadow=self.inp.shadow,
            ),
            f"grant {ent.label} (policy {ENTITLEMENT_POLICY}{', approved' if approval else ''})",
        )
        verdict = outcome.decision.verdict
        if verdict == "deny":
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy denied granting {ent.label}: {'; '.join(outcome.decision.reasons)}",
                decision_id=outcome.decision.decision_id,
            )
        if verdict == "require_approval":
            self.pending_decisions[ent.label] = outcome.decision
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

    async def _ask_manager(self, hire: NewHire, waiting: list[Entitlement]) -> ApprovalOutcome:
        obligations = merge_obligations(
            [self.pending_decisions[e.label].obligations for e in waiting]
        )
        labels = [e.label for e in waiting]
        request = new_request(
            process=PROCESS,
            action="grant_entitlements",
            action_digest=digest({"employee_id": hire.employee_id, "entitlements": labels}),
            summary=f"grant {', '.join(labels)} to {hire.employee_id} "
            f"({hire.role}, {hire.department})",
            obligations=obligations,
            policy_reasons=reasons_of([self.pending_decisions[e.label] for e in waiting]),
            action_payload={
                "employee_id": hire.employee_id,
                "entitlements": [e.model_dump(mode="json") for e in waiting],
            },
            requested_by=self.inp.requested_by,
            excluded=[self.inp.requested_by],
        )
        workflow.upsert_search_attributes([visibility.RISK.value_set("medium")])
        if self.inp.shadow:  # nobody is asked: policy's candidates stand in, recorded
            return self.gate.simulate(request)
        self.stage = "waiting for manager approval"
        outcome = await self.gate.request(
            request, timedelta(seconds=self.inp.approval_timeout_seconds)
        )
        self.stage = f"approval {outcome.outcome}"
        return outcome

    # -- approvals ------------------------------------------------------------------------

    # -- queries --------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> OnboardingStatus:
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

    # -- helpers --------------------------------------------------------------------------


def _entitlement(item: Any) -> Entitlement:
    system, _, name = str(item).partition(":")
    return Entitlement(system=system.strip(), name=name.strip() or "(none)")
