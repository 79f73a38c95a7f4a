"""The LLM agents of the customer-onboarding blueprint, on the same governed call path as every
Baton agent (activities/agents.py: base policy, redaction, throttles, kill switch, Temporal-owned
retries, audit row with model, tokens and cost).

* ``plan_customer_onboarding`` (planner): a multi-step plan as structured data;
* ``write_intro_email`` (specialist): the introduction email;
* ``assess_discount`` (specialist): is the requested discount within the discount policy;
* ``plan_onboarding_sequence`` (specialist): the onboarding tasks and their due dates.

Activity names are public (workflow histories name them).

Must not: write to systems of record (activities/customer.py commits, under policy).
"""

from __future__ import annotations

from pydantic import ValidationError
from temporalio import activity

from activities.agents import PROMPTS, AgentActivities, _invalid_output, _Wire
from workflows.contracts import STABLE_VERSION
from workflows.contracts_customer import (
    CustomerAgentInput,
    DiscountAssessment,
    IntroEmail,
    OnboardingPlan,
    OnboardingSequence,
    OnboardingTask,
    PlanStep,
)

PLANNER_PROMPT = """agent: customer_planner
You plan the onboarding of a new high-value customer. The input holds the customer (from the CRM),
CRM notes and company policies retrieved for it. Answer a plan: ordered steps, each of kind
intro_email, discount_check (only when a discount was requested) or onboarding_sequence, with
instructions for the specialist agent, and a short rationale."""

INTRO_EMAIL_PROMPT = """agent: intro_email_writer
You write the introduction email from the customer success team to a new customer, in the
customer's language. It is a transactional onboarding email: no promotions or offers."""

DISCOUNT_PROMPT = """agent: discount_analyst
You check whether the discount a new customer requested is within the discount policy in the
input, given the contract's term. Answer eligible, the discount you recommend and why."""

SEQUENCER_PROMPT = """agent: onboarding_sequencer
You schedule the onboarding sequence of a new customer following the onboarding playbook: tasks
with a due date in days from today and the role that owns each."""

CUSTOMER_PROMPTS: dict[str, str] = {
    "customer_planner": PLANNER_PROMPT,
    "intro_email_writer": INTRO_EMAIL_PROMPT,
    "discount_analyst": DISCOUNT_PROMPT,
    "onboarding_sequencer": SEQUENCER_PROMPT,
}


class _WireStep(_Wire):
    step_id: str
    kind: str
    instructions: str


class _WirePlan(_Wire):
    steps: list[_WireStep]
    rationale: str


class _WireEmail(_Wire):
    subject: str
    body: str
    language: str


class _WireDiscount(_Wire):
    eligible: bool
    recommended_pct: float
    rationale: str


class _WireTask(_Wire):
    name: str
    due_in_days: int
    owner_role: str


class _WireSequence(_Wire):
    tasks: list[_WireTask]


class CustomerAgentActivities(AgentActivities):
    """Built in worker.py from the worker's AgentActivities (same client, policy, throttles)."""

    @classmethod
    def sharing(cls, agents: AgentActivities) -> CustomerAgentActivities:
        """These agents on ``agents``' client, ledger, policy engine, throttle and kill switch."""
        # The prompts join the one table agent calls route through (agents.route); registered
        # here, at the composition root, so agents.py needs no edit per process.
        for role, prompt in CUSTOMER_PROMPTS.items():
            PROMPTS.setdefault(role, {STABLE_VERSION: prompt})
        made = cls.__new__(cls)
        made.__dict__.update(agents.__dict__)
        return made

    @activity.defn(name="plan_customer_onboarding")
    async def plan_customer_onboarding(self, inp: CustomerAgentInput) -> OnboardingPlan:
        wire, usage = await self._ask("customer_planner", inp, _WirePlan)
        try:
            plan = OnboardingPlan(
                steps=[PlanStep.model_validate(s.model_dump()) for s in wire.steps],
                rationale=wire.rationale,
                usage=usage,
            )
        except ValidationError as err:
            raise _invalid_output("customer_planner", err) from err
        await self._audit(
            "customer_planner",
            "agent.planned_customer_onboarding",
            inp,
            wire,
            usage,
            {"customer_id": inp.customer.customer_id, "steps": [s.kind for s in plan.steps]},
        )
        return plan

    @activity.defn(name="write_intro_email")
    async def write_intro_email(self, inp: CustomerAgentInput) -> IntroEmail:
        wire, usage = await self._ask("intro_email_writer", inp, _WireEmail)
        try:
            email = IntroEmail(**wire.model_dump(), usage=usage)
        except ValidationError as err:
            raise _invalid_output("intro_email_writer", err) from err
        await self._audit(
            "intro_email_writer",
            "agent.wrote_intro_email",
            inp,
            wire,
            usage,
            {"customer_id": inp.customer.customer_id, "language": email.language},
        )
        return email

    @activity.defn(name="assess_discount")
    async def assess_discount(self, inp: CustomerAgentInput) -> DiscountAssessment:
        wire, usage = await self._ask("discount_analyst", inp, _WireDiscount)
        try:
            assessment = DiscountAssessment(**wire.model_dump(), usage=usage)
        except ValidationError as err:
            raise _invalid_output("discount_analyst", err) from err
        await self._audit(
            "discount_analyst",
            "agent.assessed_discount",
            inp,
            wire,
            usage,
            {
                "customer_id": inp.customer.customer_id,
                "requested_pct": inp.customer.requested_discount_pct,
                "recommended_pct": assessment.recommended_pct,
                "eligible": assessment.eligible,
            },
        )
        return assessment

    @activity.defn(name="plan_onboarding_sequence")
    async def plan_onboarding_sequence(self, inp: CustomerAgentInput) -> OnboardingSequence:
        wire, usage = await self._ask("onboarding_sequencer", inp, _WireSequence)
        try:
            sequence = OnboardingSequence(
                tasks=[OnboardingTask.model_validate(t.model_dump()) for t in wire.tasks],
                usage=usage,
            )
        except ValidationError as err:
            raise _invalid_output("onboarding_sequencer", err) from err
        await self._audit(
            "onboarding_sequencer",
            "agent.planned_onboarding_sequence",
            inp,
            wire,
            usage,
            {"customer_id": inp.customer.customer_id, "tasks": len(sequence.tasks)},
        )
        return sequence


__all__ = [
    "CUSTOMER_PROMPTS",
    "CustomerAgentActivities",
    "DISCOUNT_PROMPT",
    "INTRO_EMAIL_PROMPT",
    "PLANNER_PROMPT",
    "SEQUENCER_PROMPT",
]
