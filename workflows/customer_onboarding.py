"""Customer onboarding, the brief's end-to-end blueprint: a new high-value customer in the CRM.

1. trigger: a CRM event "new high-value customer" starts this run (baton/crm_trigger.py), the
   business key ``customer-onboarding/<tenant>/<customer>`` as workflow id, so a re-delivered
   event never starts a second run;
2. context fetch: the relation store (customer -> accounts -> contracts) and the knowledge layer
   (CRM notes about the customer, the company policies that apply), with provenance: every
   retrieval is an audit row naming its sources;
3. plan: the planner agent answers a multi-step plan as structured data (intro email, discount
   eligibility check when a discount was requested, onboarding sequence);
4. execute: a specialist agent per step (email writer, discount analyst, sequencer), in parallel;
5. policy check: every final action goes through policy/customer/onboarding.rego (data
   residency, legal constraints, discount limits) before anything is committed; a deny stops
   the run with nothing committed;
6. human approval: plan exceptions (a discount above the self-approval limit) go to ONE approval
   request (the approval gate) for the role policy names;
7. commit & log: each action is committed to the systems of record (policy asked again inside
   the write transaction, the approval attached), its revert registered first (saga); the
   planner's rationale, the sources and the plan go to the audit trail.

A deny, a rejection, an expired approval, a failure or a cancellation reverts everything
committed so far, audits why, and fails the run with a typed error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

from workflows import errors
from workflows.agent_loop import AgentLoop
from workflows.agent_steps import ONBOARDING_EXECUTOR
from workflows.approval_gate import reasons_of
from workflows.contracts import STATUS_QUERY, ApprovalGrant, digest
from workflows.contracts.customer import (
    CommitInput,
    CommittedAction,
    CustomerAction,
    CustomerAgentInput,
    CustomerBrief,
    CustomerDossier,
    CustomerOnboardingInput,
    CustomerOnboardingResult,
    CustomerOnboardingStatus,
    DiscountAssessment,
    IntroEmail,
    OnboardingSequence,
    PlanCheckInput,
    PlanOutcome,
    PlanOutcomeInput,
    PlanRecord,
    PlanRecordInput,
    RevertInput,
)
from workflows.contracts.knowledge import (
    KnowledgeHit,
    KnowledgeQuery,
    KnowledgeResult,
    RelationQuery,
    RelationResult,
)
from workflows.contracts.tools import ToolPrincipal
from workflows.customer_plan import brief_of, planned_actions
from workflows.governed import ApprovalRound, Compensation, GovernedStep, fail_if_denied, grant
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.customer import CUSTOMER_POLICY, CustomerActivities
    from activities.customer_agents import CustomerAgentActivities
    from activities.customer_tools import TOOL_OF_KIND, CustomerToolActivities
    from activities.knowledge import KnowledgeActivities

__all__ = [
    "PLAN_BY_AGENT_PATCH",
    "PLAN_INVALID",
    "PLAN_NOT_CARRIED_OUT",
    "PROCESS",
    "CustomerOnboardingWorkflow",
]

PROCESS = "customer_onboarding"
PLAN_INVALID = errors.PLAN_INVALID
PLAN_NOT_CARRIED_OUT = errors.PLAN_NOT_CARRIED_OUT
#: Replay safety: runs started before the plan was carried out by an agent commit it themselves.
PLAN_BY_AGENT_PATCH = "customer-plan-carried-out-by-agent"
NOTES_PER_DOSSIER = 5
POLICIES_PER_DOSSIER = 4
POLICY_QUESTION = (
    "discount approval limits, data residency for customer data, onboarding emails and consent"
)


@workflow.defn(name="CustomerOnboarding")
class CustomerOnboardingWorkflow(GovernedProcess):
    keeps_claim_on_completion = True  # a customer is onboarded once

    @workflow.init
    def __init__(self, inp: CustomerOnboardingInput) -> None:
        self.govern(inp, PROCESS)
        self.committed: list[CommittedAction] = []

    @workflow.run
    async def run(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        self.begin(
            "customer_onboarding.started",
            {
                "tenant": inp.tenant,
                "customer_id": inp.customer_id,
                "event_id": inp.event_id,
                "hosting_region": inp.hosting_region,
            },
            tenant=inp.tenant,
        )
        return await self._undoing_on_failure(
            self._onboard(inp), event="customer_onboarding", what="onboarding"
        )

    async def _onboard(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        self.stage = "fetching context"
        dossier = await self._dossier(inp)
        brief = dossier.customer
        agent_input = CustomerAgentInput(
            tenant=inp.tenant,
            customer=brief,
            notes=[f"{h.title}: {h.text}" for h in dossier.notes],
            policies=[f"{h.title}: {h.text}" for h in dossier.policies],
        )

        self.stage = "planning"
        agents = CustomerAgentActivities
        plan = await self._step(
            "agent",
            agents.plan_customer_onboarding,
            agent_input,
            f"customer_planner (LLM): plan the onboarding of {brief.name}",
        )
        kinds = [s.kind for s in plan.steps]
        if len(set(kinds)) != len(kinds) or "intro_email" not in kinds:
            raise errors.failure(
                PLAN_INVALID,
                f"the plan must hold one intro_email step and no step twice, got {kinds}",
            )
        self.audit.record(
            "agent:customer_planner",
            "customer_onboarding.planned",
            detail={
                "steps": [s.model_dump() for s in plan.steps],
                "sources": dossier.sources(),
            },
            rationale=plan.rationale,
        )

        self.stage = "specialists working"
        outputs = await asyncio.gather(
            *(self._specialist(step.kind, step.instructions, agent_input) for step in plan.steps)
        )
        by_kind = dict(zip(kinds, outputs, strict=True))
        actions = planned_actions(brief, dossier.contact, by_kind)

        self.stage = "policy check"
        check = await self._step(
            "policy",
            CustomerActivities.check_customer_plan,
            PlanCheckInput(**self._facts(brief), actions=actions),
            f"policy {CUSTOMER_POLICY}: {len(actions)} planned actions",
        )
        fail_if_denied(check.decisions, prefix="")  # nothing is committed
        exceptions = [
            (a, d)
            for a, d in zip(actions, check.decisions, strict=True)
            if d.verdict == "require_approval"
        ]
        approval: ApprovalGrant | None = None
        if exceptions:
            outcome = await self.approve(
                ApprovalRound(
                    action="customer_plan_exceptions",
                    payload={
                        "customer_id": brief.customer_id,
                        "actions": [a.model_dump() for a, _ in exceptions],
                    },
                    summary=f"{brief.name}: "
                    + "; ".join(f"{a.summary} ({', '.join(d.reasons)})" for a, d in exceptions),
                    obligations=[d.obligations for _, d in exceptions],
                    policy_reasons=reasons_of([d for _, d in exceptions]),
                    action_payload={
                        "customer_id": brief.customer_id,
                        "actions": [a.model_dump(mode="json") for a, _ in exceptions],
                    },
                    risk="medium",
                    waiting="waiting for approval of plan exceptions",
                )
            )
            approval = grant(outcome)

        self.stage = "committing"
        needs_approval = {a.key for a, _ in exceptions}
        if self.inp.plan_by_agent and workflow.patched(PLAN_BY_AGENT_PATCH):
            await self._carry_out_by_agent(brief, actions, plan.rationale, approval, needs_approval)
        else:
            for action in actions:
                await self._commit(
                    brief,
                    action,
                    plan.rationale,
                    approval if action.key in needs_approval else None,
                )
        if inp.fail_after_commits:
            raise errors.failure(
                errors.INJECTED_FAILURE, "injected failure after committing (fail_after_commits)"
            )

        await self.finish(
            "customer_onboarding.completed",
            {
                "committed": [c.model_dump() for c in self.committed],
                "sources": dossier.sources(),
                "plan": kinds,
                "tokens": self.cost.tokens,
                "cost_usd": self.cost.cost_usd,
            },
            rationale=plan.rationale,
        )
        return CustomerOnboardingResult(
            tenant=inp.tenant,
            customer_id=inp.customer_id,
            plan=plan,
            committed=self.committed,
            approvals=self.approvals,
            sources=dossier.sources(),
            tokens=self.cost.tokens,
            cost_usd=self.cost.cost_usd,
        )

    # -- context --------------------------------------------------------------------------

    async def _dossier(self, inp: CustomerOnboardingInput) -> CustomerDossier:
        knowledge = KnowledgeActivities
        tree: RelationResult = await self._step(
            "connector",
            knowledge.knowledge_relations,
            RelationQuery(
                tenant=inp.tenant, entity_id=inp.customer_id, requested_by="customer_onboarding"
            ),
            f"relation store: {inp.customer_id} -> accounts -> contracts",
        )
        if tree.root.kind != "customer":
            raise errors.failure(
                PLAN_INVALID, f"{inp.customer_id} is a {tree.root.kind}, not a customer"
            )
        notes, policies = await asyncio.gather(
            self._search(
                KnowledgeQuery(
                    tenant=inp.tenant,
                    query=f"{tree.root.name}: requirements, stakeholders, language, concerns",
                    k=NOTES_PER_DOSSIER,
                    entity_id=inp.customer_id,
                    requested_by="customer_onboarding",
                ),
                f"knowledge: notes about {inp.customer_id}",
            ),
            self._search(
                KnowledgeQuery(
                    tenant=inp.tenant,
                    query=POLICY_QUESTION,
                    k=POLICIES_PER_DOSSIER,
                    kinds=["policy", "product_doc"],
                    requested_by="customer_onboarding",
                ),
                "knowledge: policies and playbook",
            ),
        )
        return CustomerDossier(
            customer=brief_of(tree),
            contact=str(tree.root.attributes.get("contact", "")),
            notes=notes,
            policies=policies,
        )

    async def _search(self, query: KnowledgeQuery, summary: str) -> list[KnowledgeHit]:
        result: KnowledgeResult = await self._step(
            "connector", KnowledgeActivities.knowledge_search, query, summary
        )
        return result.hits

    # -- specialists ----------------------------------------------------------------------

    async def _specialist(self, kind: str, instructions: str, base: CustomerAgentInput) -> Any:
        agents = CustomerAgentActivities
        inp = base.model_copy(update={"instructions": instructions})
        output: IntroEmail | DiscountAssessment | OnboardingSequence
        if kind == "intro_email":
            output = await self._step(
                "agent", agents.write_intro_email, inp, "intro_email_writer (LLM)"
            )
        elif kind == "discount_check":
            output = await self._step(
                "agent", agents.assess_discount, inp, "discount_analyst (LLM)"
            )
        else:
            output = await self._step(
                "agent", agents.plan_onboarding_sequence, inp, "onboarding_sequencer (LLM)"
            )
        return output

    # -- approval and commit ---------------------------------------------------------------

    async def _commit(
        self,
        brief: CustomerBrief,
        action: CustomerAction,
        rationale: str,
        approval: ApprovalGrant | None,
    ) -> None:
        key = f"{workflow.info().workflow_id}/commit/{action.key}/{digest(approval)[:12]}"
        outcome = await self.act(
            GovernedStep(
                what=f"committing {action.key}",
                activity=CustomerActivities.commit_customer_action,
                arg=CommitInput(
                    **self._facts(brief),
                    action=action,
                    rationale=rationale,
                    approval=approval,
                    idempotency_key=key,
                ),
                summary=f"commit {action.key} (policy {CUSTOMER_POLICY}"
                f"{', approved' if approval else ''})",
                key=key,
                subject=action.key,
                undo=Compensation(
                    f"revert {action.key}",
                    CustomerActivities.revert_customer_action,
                    RevertInput(
                        original_key=key,
                        reason=f"onboarding of {brief.customer_id} undone",
                        idempotency_key=f"{key}/revert",
                    ),
                    f"compensation: revert {action.key}",
                ),
                grant=approval,
            )
        )
        if outcome is None or outcome.commit_id is None:  # the plan check let it through
            raise errors.failure(
                errors.POLICY_DENIED,
                f"policy did not allow committing {action.key} without an approval",
            )
        self.committed.append(
            CommittedAction(
                kind=action.kind,
                key=action.key,
                commit_id=outcome.commit_id,
                summary=action.summary,
                approved_by=approval.approvers if approval else [],
            )
        )

    async def _carry_out_by_agent(
        self,
        brief: CustomerBrief,
        actions: list[CustomerAction],
        rationale: str,
        approval: ApprovalGrant | None,
        needs_approval: set[str],
    ) -> None:
        """The plan carried out by the onboarding executor through governed tools (the
        entitlement API, the email sender: activities/customer_tools.py); what it committed is
        read back from the systems of record, and a plan not carried out in full fails the run
        (its grants are revoked in reverse by the saga)."""
        wid = workflow.info().workflow_id
        record: PlanRecord = await self._step(
            "connector",
            CustomerToolActivities.record_customer_plan,
            PlanRecordInput(
                plan=[
                    CommitInput(
                        **self._facts(brief),
                        action=action,
                        rationale=rationale,
                        approval=approval if action.key in needs_approval else None,
                        idempotency_key=f"{wid}/plan/{action.key}",
                    )
                    for action in actions
                ]
            ),
            f"the checked plan for {ONBOARDING_EXECUTOR.name}: {len(actions)} actions",
        )
        loop = AgentLoop(
            self,
            ONBOARDING_EXECUTOR,
            ToolPrincipal(
                process=PROCESS,
                tenant=self.inp.tenant,
                agent=ONBOARDING_EXECUTOR.name,
                requested_by=self.inp.requested_by,
            ),
            None,
        )
        task = {
            "customer_id": brief.customer_id,
            "customer": brief.name,
            "plan_id": record.plan_id,
            "actions": [
                {
                    "action_key": a.key,
                    "kind": a.kind,
                    "tool": TOOL_OF_KIND[a.kind],
                    "summary": a.summary,
                }
                for a in actions
            ],
        }
        self.stage = f"{ONBOARDING_EXECUTOR.name} carrying out the plan"
        answer = await loop.run(task, self._budget or self.inp.budget)
        assert answer is not None  # the step never continues as new (continue_after_events)
        outcome: PlanOutcome = await self._step(
            "connector",
            CustomerToolActivities.customer_plan_outcome,
            PlanOutcomeInput(plan_id=record.plan_id, workflow_id=wid),
            "systems of record: what the plan committed",
        )
        self.committed = outcome.committed
        self.audit.record(
            f"agent:{ONBOARDING_EXECUTOR.name}",
            "customer_onboarding.carried_out",
            detail={
                "committed": [c.key for c in outcome.committed],
                "missing": outcome.missing,
                "turns": loop.turns,
                "tool_calls": loop.history.total_calls,
                "denials": loop.history.denials,
            },
            rationale=answer.get("summary", ""),
        )
        if outcome.missing:
            raise errors.failure(
                PLAN_NOT_CARRIED_OUT,
                f"{ONBOARDING_EXECUTOR.name} did not carry out {', '.join(outcome.missing)}",
            )

    def _facts(self, brief: CustomerBrief) -> dict[str, Any]:
        """What policy decides a customer action on: the same for the plan check and a commit."""
        inp = self.inp
        return {
            "tenant": inp.tenant,
            "customer": brief,
            "hosting_region": inp.hosting_region,
            "sanctions_screened": inp.sanctions_screened,
            "dpa_signed": inp.dpa_signed,
            "requested_by": inp.requested_by,
        }

    # -- queries ------------------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CustomerOnboardingStatus:  # type: ignore[override]  # its own model
        return CustomerOnboardingStatus(
            workflow_id=workflow.info().workflow_id,
            process=PROCESS,
            stage=self.stage,
            approval_state=self.gate.state,
            pending=self.gate.pending(),
            committed=self.committed,
            compensated=self.saga.compensated,
        )
