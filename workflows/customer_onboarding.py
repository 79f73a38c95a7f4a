"""Customer onboarding, the brief's end-to-end blueprint: a new high-value customer in the CRM.

1. trigger: a CRM event starts this run (baton/crm_trigger.py) under the business key
   ``customer-onboarding/<tenant>/<customer>``: a re-delivered event never starts a second run;
2. context: the relation store (customer -> accounts -> contracts) and the knowledge layer (CRM
   notes about the customer, the company policies that apply), every retrieval audited;
3. plan: the planner agent answers a multi-step plan as data (intro email, discount
   eligibility check when a discount was requested, onboarding sequence);
4. execute: a specialist agent per step (email writer, discount analyst, sequencer), in parallel;
5. policy check: every final action goes through policy/customer/onboarding.rego (data
   residency, legal constraints, discount limits) in the generic preflight, each decision audited
   (runs started before ``customer-plan-check-by-preflight`` ask ``check_customer_plan``, the
   process's own activity); a deny stops the run with nothing committed;
6. human approval: plan exceptions (a discount above the self-approval limit) go to ONE request
   for the role policy names;
7. commit & log: the onboarding executor carries the plan out through governed tools (runs
   started before it commit each action as a governed step): policy is asked again inside each
   write, the approval attached, its revert registered first; rationale, sources, plan audited.

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
from workflows.contracts import STATUS_QUERY, ApprovalGrant
from workflows.contracts.customer import (
    CUSTOMER_POLICY,
    CommittedAction,
    CustomerAction,
    CustomerAgentInput,
    CustomerDossier,
    CustomerOnboardingInput,
    CustomerOnboardingResult,
    CustomerOnboardingStatus,
    PlanCheckInput,
    PlanOutcomeInput,
    PlanRecordInput,
    PlanStep,
    RevertInput,
    customer_policy_input,
)
from workflows.customer_plan import (
    agent_input,
    brief_of,
    commit_input,
    committed_action,
    exceptions_round,
    executor_task,
    plan_kinds,
    planned_actions,
    policy_facts,
)
from workflows.governed import Compensation, GovernedStep, fail_if_drilled, step_summary
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.customer import CustomerActivities
    from activities.customer_agents import CustomerAgentActivities as Agents
    from activities.customer_tools import TOOL_OF_KIND, CustomerToolActivities

__all__ = [
    "PLAN_BY_AGENT_PATCH",
    "PLAN_CHECK_PATCH",
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
#: Replay safety: runs started before the plan check became the preflight ask check_customer_plan.
PLAN_CHECK_PATCH = "customer-plan-check-by-preflight"
NOTES_PER_DOSSIER = 5
POLICIES_PER_DOSSIER = 4
POLICY_QUESTION = (
    "discount approval limits, data residency for customer data, onboarding emails and consent"
)
SPECIALISTS = {  # the specialist agent of each plan step kind
    "intro_email": ("intro_email_writer", Agents.write_intro_email),
    "discount_check": ("discount_analyst", Agents.assess_discount),
    "onboarding_sequence": ("onboarding_sequencer", Agents.plan_onboarding_sequence),
}


@workflow.defn(name="CustomerOnboarding")
class CustomerOnboardingWorkflow(GovernedProcess):
    keeps_claim_on_completion = True  # a customer is onboarded once
    dossier: CustomerDossier  # the customer and what was retrieved about them, fetched first
    rationale: str  # the planner's, carried by every commit

    @workflow.init
    def __init__(self, inp: CustomerOnboardingInput) -> None:
        self.govern(inp, PROCESS)
        self.committed: list[CommittedAction] = []

    @workflow.run
    async def run(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        return await self.run_governed(
            self._onboard(inp),
            "customer_onboarding.started",
            inp.model_dump(include={"tenant", "customer_id", "event_id", "hosting_region"}),
            event="customer_onboarding",
            what="onboarding",
        )

    async def _onboard(self, inp: CustomerOnboardingInput) -> CustomerOnboardingResult:
        self.stage = "fetching context"
        self.dossier = dossier = await self._dossier(inp)
        brief, agents_see = dossier.customer, agent_input(inp.tenant, dossier)

        self.stage = "planning"
        plan = await self._step(
            "agent",
            Agents.plan_customer_onboarding,
            agents_see,
            f"customer_planner (LLM): plan the onboarding of {brief.name}",
        )
        kinds, self.rationale = plan_kinds(plan), plan.rationale
        self.audit.record(
            "agent:customer_planner",
            "customer_onboarding.planned",
            detail={"steps": [s.model_dump() for s in plan.steps], "sources": dossier.sources()},
            rationale=plan.rationale,
        )

        self.stage = "specialists working"
        outputs = await asyncio.gather(*(self._specialist(s, agents_see) for s in plan.steps))
        actions = planned_actions(brief, dossier.contact, dict(zip(kinds, outputs, strict=True)))

        self.stage = "policy check"  # a deny stops the run with nothing committed
        check = PlanCheckInput(**policy_facts(inp, brief), actions=actions)
        summary = f"policy {CUSTOMER_POLICY}: {len(actions)} planned actions"
        if workflow.patched(PLAN_CHECK_PATCH):  # the generic preflight audits each decision
            docs = {a.key: customer_policy_input(check, a) for a in actions}
            decisions = await self.preflight(CUSTOMER_POLICY, docs, summary)
        else:  # runs started before it: the process's own plan check
            old = await self._step("policy", CustomerActivities.check_customer_plan, check, summary)
            decisions = old.decisions
        approvals = await self.approve_held(  # plan exceptions: ONE request, to policy's role
            [a.key for a in actions],
            decisions,
            lambda held: exceptions_round(brief, actions, held),
            denied_prefix="",
        )

        self.stage = "committing"
        if inp.plan_by_agent and workflow.patched(PLAN_BY_AGENT_PATCH):
            await self._carry_out_by_agent(actions, approvals)
        else:
            for action in actions:
                await self._commit(action, approvals[action.key])
        fail_if_drilled(
            inp.fail_after_commits, "injected failure after committing (fail_after_commits)"
        )

        await self.finish(
            "customer_onboarding.completed",
            {
                "committed": [c.model_dump() for c in self.committed],
                "sources": dossier.sources(),
                "plan": kinds,
                **self.cost.facts(),
            },
            rationale=plan.rationale,
        )
        return self.result_as(
            CustomerOnboardingResult,
            tenant=inp.tenant,
            customer_id=inp.customer_id,
            plan=plan,
            committed=self.committed,
            sources=dossier.sources(),
        )

    async def _dossier(self, inp: CustomerOnboardingInput) -> CustomerDossier:
        who = inp.customer_id
        tree = await self.look_up(who, f"relation store: {who} -> accounts -> contracts")
        if tree.root.kind != "customer":
            raise errors.failure(PLAN_INVALID, f"{who} is a {tree.root.kind}, not a customer")
        notes, policies = await asyncio.gather(
            self.search(
                f"knowledge: notes about {who}",
                query=f"{tree.root.name}: requirements, stakeholders, language, concerns",
                k=NOTES_PER_DOSSIER,
                entity_id=who,
            ),
            self.search(
                "knowledge: policies and playbook",
                query=POLICY_QUESTION,
                k=POLICIES_PER_DOSSIER,
                kinds=["policy", "product_doc"],
            ),
        )
        contact = str(tree.root.attributes.get("contact", ""))
        return CustomerDossier(
            customer=brief_of(tree), contact=contact, notes=notes, policies=policies
        )

    async def _specialist(self, step: PlanStep, base: CustomerAgentInput) -> Any:
        role, activity = SPECIALISTS[step.kind]
        inp = base.model_copy(update={"instructions": step.instructions})
        return await self._step("agent", activity, inp, f"{role} (LLM)")

    async def _commit(self, action: CustomerAction, approval: ApprovalGrant | None) -> None:
        """Commit one action, its revert registered first (runs started before the agent)."""
        inp, brief = self.inp, self.dossier.customer
        key = self.step_key("commit", action.key, approval)
        why = f"onboarding of {brief.customer_id} undone"
        outcome = await self.act(
            GovernedStep(
                what=f"committing {action.key}",
                activity=CustomerActivities.commit_customer_action,
                arg=commit_input(inp, brief, self.rationale, action, approval, key),
                summary=step_summary(f"commit {action.key}", CUSTOMER_POLICY, approval),
                key=key,
                subject=action.key,
                undo=Compensation.by(
                    f"revert {action.key}",
                    CustomerActivities.revert_customer_action,
                    RevertInput(original_key=key, reason=why, idempotency_key=f"{key}/revert"),
                ),
                grant=approval,
            )
        )
        self.committed.append(committed_action(action, outcome, approval))

    async def _carry_out_by_agent(
        self, actions: list[CustomerAction], approvals: dict[str, ApprovalGrant | None]
    ) -> None:
        """The executor's tools (activities/customer_tools.py) commit; what they committed is
        read back, and a plan not carried out in full fails the run (the saga reverts)."""
        wid, executor = workflow.info().workflow_id, ONBOARDING_EXECUTOR.name
        inp, brief = self.inp, self.dossier.customer
        plan = [
            commit_input(inp, brief, self.rationale, a, approvals[a.key], f"{wid}/plan/{a.key}")
            for a in actions
        ]
        record = await self._step(
            "connector",
            CustomerToolActivities.record_customer_plan,
            PlanRecordInput(plan=plan),
            f"the checked plan for {executor}: {len(actions)} actions",
        )
        loop = AgentLoop.acting_for(self, ONBOARDING_EXECUTOR)
        self.stage = f"{executor} carrying out the plan"
        answer = await loop.carry_out(executor_task(brief, actions, record.plan_id, TOOL_OF_KIND))
        outcome = await self._step(
            "connector",
            CustomerToolActivities.customer_plan_outcome,
            PlanOutcomeInput(plan_id=record.plan_id, workflow_id=wid),
            "systems of record: what the plan committed",
        )
        self.committed, done = outcome.committed, [c.key for c in outcome.committed]
        self.audit.record(
            f"agent:{executor}",
            "customer_onboarding.carried_out",
            detail={"committed": done, "missing": outcome.missing, **loop.facts()},
            rationale=answer.get("summary", ""),
        )
        if outcome.missing:
            missing = ", ".join(outcome.missing)
            raise errors.failure(PLAN_NOT_CARRIED_OUT, f"{executor} did not carry out {missing}")

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CustomerOnboardingStatus:  # type: ignore[override]  # its own model
        return self.status_as(CustomerOnboardingStatus, committed=self.committed)
