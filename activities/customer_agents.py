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

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from temporalio import activity

from activities import answer_checks
from activities.agents import PROMPTS, AgentActivities, _invalid_output, _Wire
from activities.answer_checks import Check
from activities.prompts import StablePrompts
from workflows.contracts import STABLE_VERSION
from workflows.contracts.customer import (
    CustomerAgentInput,
    DiscountAssessment,
    IntroEmail,
    OnboardingPlan,
    OnboardingSequence,
    StepKind,
)

C = TypeVar("C", bound=BaseModel)

#: The agents' prompts (activities/prompts/<role>.md, read on first use).
CUSTOMER_PROMPTS = StablePrompts(
    ["customer_planner", "intro_email_writer", "discount_analyst", "onboarding_sequencer"]
)


class _WireStep(_Wire):
    step_id: str = Field(description="Unique id of the step, e.g. 's1'.")
    kind: StepKind = Field(
        description="intro_email, discount_check (only when a discount was requested) or "
        "onboarding_sequence."
    )
    instructions: str = Field(description="What the specialist agent of this step should do.")


class _WirePlan(_Wire):
    steps: list[_WireStep] = Field(description="The steps, in order.")
    rationale: str = Field(description="Why this plan, in one or two sentences.")


class _WireEmail(_Wire):
    subject: str = Field(description="The email's subject line.")
    body: str = Field(description="The whole email text.")
    language: str = Field(description="The customer's language code, e.g. 'de'.")


class _WireDiscount(_Wire):
    eligible: bool = Field(description="True exactly when a discount above 0 is recommended.")
    recommended_pct: float = Field(
        description="Discount to grant, in percent, from 0 to the discount requested."
    )
    rationale: str = Field(description="Which policy rule decides it.")


class _WireTask(_Wire):
    name: str = Field(description="What is to be done.")
    due_in_days: int = Field(description="Days from today, 0..365.")
    owner_role: str = Field(description="The role that owns the task.")


class _WireSequence(_Wire):
    tasks: list[_WireTask] = Field(description="The onboarding tasks.")


class CustomerAgentActivities(AgentActivities):
    """Built in worker.py from the worker's AgentActivities (same client, policy, throttles)."""

    @classmethod
    def sharing(cls, agents: AgentActivities) -> CustomerAgentActivities:
        """These agents on ``agents``' client, ledger, policy engine, throttle and kill switch."""
        # The prompts join the one table agent calls route through (agents.route); registered
        # here, at the composition root, so agents.py needs no edit per process.
        for role in CUSTOMER_PROMPTS:
            PROMPTS.register(role, [STABLE_VERSION])
        made = cls.__new__(cls)
        made.__dict__.update(agents.__dict__)
        return made

    @activity.defn(name="plan_customer_onboarding")
    async def plan_customer_onboarding(self, inp: CustomerAgentInput) -> OnboardingPlan:
        return await self._ask_customer_agent(
            "customer_planner", "agent.planned_customer_onboarding", inp, _WirePlan,
            OnboardingPlan, answer_checks.customer_plan(inp.customer.requested_discount_pct),
            lambda plan: {"steps": [s.kind for s in plan.steps]},
        )  # fmt: skip

    @activity.defn(name="write_intro_email")
    async def write_intro_email(self, inp: CustomerAgentInput) -> IntroEmail:
        return await self._ask_customer_agent(
            "intro_email_writer", "agent.wrote_intro_email", inp, _WireEmail, IntroEmail,
            answer_checks.intro_email(inp.customer.language),
            lambda email: {"language": email.language},
        )  # fmt: skip

    @activity.defn(name="assess_discount")
    async def assess_discount(self, inp: CustomerAgentInput) -> DiscountAssessment:
        return await self._ask_customer_agent(
            "discount_analyst", "agent.assessed_discount", inp, _WireDiscount,
            DiscountAssessment, answer_checks.discount(inp.customer.requested_discount_pct),
            lambda assessment: {
                "requested_pct": inp.customer.requested_discount_pct,
                "recommended_pct": assessment.recommended_pct,
                "eligible": assessment.eligible,
            },
        )  # fmt: skip

    @activity.defn(name="plan_onboarding_sequence")
    async def plan_onboarding_sequence(self, inp: CustomerAgentInput) -> OnboardingSequence:
        return await self._ask_customer_agent(
            "onboarding_sequencer", "agent.planned_onboarding_sequence", inp, _WireSequence,
            OnboardingSequence, answer_checks.sequence,
            lambda sequence: {"tasks": len(sequence.tasks)},
        )  # fmt: skip

    async def _ask_customer_agent(
        self,
        agent: str,
        action: str,
        inp: CustomerAgentInput,
        wire_type: type[BaseModel],
        contract: type[C],
        check: Check,
        detail: Callable[[C], dict[str, Any]],
    ) -> C:
        """Ask ``agent``, read its answer as ``contract`` (the wire's fields and the usage) and
        audit it as ``action``: the customer id and ``detail`` of the answer. An answer the
        contract refuses fails the step (a non-retryable error naming the agent)."""
        wire, usage = await self._ask(agent, inp, wire_type, check=check)
        try:
            answer = contract(**wire.model_dump(), usage=usage)
        except ValidationError as err:
            raise _invalid_output(agent, err) from err
        await self._audit(
            agent,
            action,
            inp,
            wire,
            usage,
            {"customer_id": inp.customer.customer_id, **detail(answer)},
        )
        return answer


__all__ = [
    "CUSTOMER_PROMPTS",
    "CustomerAgentActivities",
]
