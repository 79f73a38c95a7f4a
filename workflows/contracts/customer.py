"""Contracts of the customer-onboarding blueprint (workflows/customer_onboarding.py).

The CRM event that triggers a run, the run's input and result, the planner's plan, the
specialist agents' inputs and outputs, and the commit / revert of actions in the systems of
record. Imports only pydantic, the standard library and the shared contracts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from workflows.contracts.base import (
    EMPLOYEE_ID_PATTERN,
    NAME_PATTERN,
    Contract,
    ProcessInput,
    TokenUsage,
)
from workflows.contracts.governance import (
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalRequest,
    BusinessClaim,
    CompensationInput,
    PolicyDecision,
    claim_field,
)
from workflows.contracts.knowledge import KnowledgeHit
from workflows.contracts.security import Id, Name

NEW_HIGH_VALUE_CUSTOMER = "new_high_value_customer"
StepKind = Literal["intro_email", "discount_check", "onboarding_sequence"]
ActionKind = Literal["intro_email", "discount", "onboarding_task"]
STEP_KINDS: tuple[str, ...] = ("intro_email", "discount_check", "onboarding_sequence")


def _tenant(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError("tenant must be lowercase letters, digits, '.', '_' or '-' (1-63 chars)")
    return value


def _customer_id(value: str) -> str:
    if not EMPLOYEE_ID_PATTERN.match(value):
        raise ValueError("must be letters, digits, '_' or '-' (1-63 chars), e.g. 'cust-globex'")
    return value


#: The customer's id, as the CRM event and the run's input carry it.
CustomerId = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(_customer_id)]


class CrmEvent(Contract):
    """An event in the CRM's event table. ``event_id`` is the CRM's own id: a re-delivered event
    carries the same one."""

    event_id: str = Field(min_length=1, max_length=120)
    tenant: Annotated[str, AfterValidator(_tenant)]
    customer_id: CustomerId
    kind: str = NEW_HIGH_VALUE_CUSTOMER
    #: Where the customer's workspace is to be hosted (data residency is checked against it).
    hosting_region: str = Field(min_length=1)
    sanctions_screened: bool = Field(description="Screened against the sanctions lists (legal).")
    dpa_signed: bool = Field(default=False, description="DPA with SCCs signed (cross-region).")
    requested_by: Name = Field(default="crm:trigger", min_length=1)
    occurred_at: datetime


class CustomerOnboardingInput(ProcessInput):
    """One run per customer: the business key is ``customer-onboarding/<tenant>/<customer>``
    (``approval_timeout_seconds`` and ``budget``: ProcessInput)."""

    #: the CRM trigger asks by default; any requester that is not empty
    requested_by: Name = Field(default="crm:trigger", min_length=1)
    tenant: Annotated[Name, AfterValidator(_tenant)]
    customer_id: CustomerId
    event_id: Id = Field(min_length=1)
    hosting_region: Name = Field(min_length=1)
    sanctions_screened: bool
    dpa_signed: bool = False
    #: Tests and drills: fail after every action was committed, to see them compensated.
    fail_after_commits: bool = False
    #: The plan is carried out by an agent through governed tools (onboarding_executor); False:
    #: committed action by action by the workflow (the path of runs started before the agent).
    plan_by_agent: bool = True

    @classmethod
    def from_event(cls, event: CrmEvent) -> CustomerOnboardingInput:
        return cls(**event.model_dump(exclude={"kind", "occurred_at"}))

    def workflow_id(self) -> str:
        return customer_workflow_id(self.tenant, self.customer_id)


def customer_workflow_id(tenant: str, customer_id: str) -> str:
    return f"customer-onboarding/{tenant}/{customer_id}"


class CustomerBrief(Contract):
    """The customer as the agents see it: from the relation store (customer, first contract)."""

    customer_id: str
    name: str
    country: str
    region: str
    segment: str = ""
    language: str = "en"
    contract_id: str = ""
    plan: str = ""
    annual_value_eur: int = 0
    term_months: int = 0
    requested_discount_pct: float = 0.0
    seats: int = 0


class CustomerDossier(Contract):
    """Context fetched before planning: the relation store's view and what the knowledge layer
    retrieved (with provenance)."""

    customer: CustomerBrief
    contact: str = Field(description="Where the intro email goes (CRM contact).")
    notes: list[KnowledgeHit]
    policies: list[KnowledgeHit]

    def sources(self) -> list[str]:
        return [h.doc_id for h in [*self.notes, *self.policies]]


class CustomerAgentInput(Contract):
    """Input of every customer-onboarding agent: the customer and the retrieved texts."""

    tenant: str
    customer: CustomerBrief
    notes: list[str] = []
    policies: list[str] = []
    instructions: str = ""


class PlanStep(Contract):
    step_id: str = Field(min_length=1)
    kind: StepKind
    instructions: str = Field(min_length=1)


class OnboardingPlan(Contract):
    steps: list[PlanStep] = Field(min_length=1)
    rationale: str = Field(min_length=1)
    usage: TokenUsage


class IntroEmail(Contract):
    subject: str = Field(min_length=1)
    body: str = Field(min_length=1)
    language: str
    usage: TokenUsage


class DiscountAssessment(Contract):
    eligible: bool
    recommended_pct: float = Field(ge=0, le=100)
    rationale: str = Field(min_length=1)
    usage: TokenUsage


class OnboardingTask(Contract):
    name: str = Field(min_length=1)
    due_in_days: int = Field(ge=0, le=365)
    owner_role: str = Field(min_length=1)


class OnboardingSequence(Contract):
    tasks: list[OnboardingTask] = Field(min_length=1)
    usage: TokenUsage


class CustomerAction(Contract):
    """One final action on a system of record, as planned (policy decides on it)."""

    kind: ActionKind
    key: str = Field(min_length=1, description="Unique within the run, e.g. 'task/2'.")
    summary: str
    payload: dict[str, Any]
    discount_pct: float = 0.0


class CustomerCase(Contract):
    """What policy weighs with every action for a customer (the plan check and each commit):
    the customer, where it is hosted, its legal state, and who asked."""

    tenant: str
    customer: CustomerBrief
    hosting_region: str
    sanctions_screened: bool
    dpa_signed: bool
    requested_by: str


class PlanCheckInput(CustomerCase):
    actions: list[CustomerAction] = Field(min_length=1)


class PlanCheckResult(Contract):
    decisions: list[PolicyDecision]


class CommitInput(CustomerCase):
    action: CustomerAction
    rationale: str
    approval: ApprovalGrant | None = None
    idempotency_key: str
    claim: BusinessClaim | None = claim_field()


class CommitOutcome(Contract):
    decision: PolicyDecision
    commit_id: str | None = None


#: The policy every customer action asks (policy/customer/onboarding.rego).
CUSTOMER_POLICY = "baton/customer/onboarding"
#: The action policy is asked about: committing one planned action to a system of record.
COMMIT_ACTION = "commit_customer_action"


def customer_policy_input(case: CustomerCase, action: CustomerAction) -> dict[str, Any]:
    """The exact input document policy/customer/onboarding.rego sees for one action: asked by
    the plan check before anything is committed and again by each commit's own transaction
    (``case`` a CommitInput: the approval it carries)."""
    approval = case.approval if isinstance(case, CommitInput) else None
    return {
        "action": COMMIT_ACTION,
        "tenant": case.tenant,
        "kind": action.kind,
        "customer": {
            "id": case.customer.customer_id,
            "country": case.customer.country,
            "region": case.customer.region,
        },
        "hosting_region": case.hosting_region,
        "sanctions_screened": case.sanctions_screened,
        "dpa_signed": case.dpa_signed,
        "discount_pct": action.discount_pct,
        "requested_by": case.requested_by,
        "approval": approval.model_dump(mode="json") if approval is not None else None,
    }


class RevertInput(CompensationInput):
    """Revert the action committed under ``original_key``."""


class RevertOutcome(Contract):
    reverted: bool
    detail: str


class PlanRecordInput(Contract):
    """The checked (and, where policy asked, approved) plan the onboarding executor carries
    out: one CommitInput per action (its idempotency key is replaced by the tool call's)."""

    plan: list[CommitInput]


class PlanRecord(Contract):
    """Where the plan is stored (the payload store) for the tools to find it."""

    plan_id: str


class PlanOutcomeInput(Contract):
    plan_id: str
    workflow_id: str


class PlanOutcome(Contract):
    """What the tools committed from the plan in this run (read from the systems of record)."""

    committed: list[CommittedAction]
    missing: list[str]


class CommittedAction(Contract):
    kind: ActionKind
    key: str
    commit_id: str
    summary: str
    approved_by: list[str] = []


class CustomerOnboardingResult(Contract):
    tenant: str
    customer_id: str
    plan: OnboardingPlan
    committed: list[CommittedAction]
    approvals: list[ApprovalOutcome]
    sources: list[str] = Field(description="Knowledge documents the run was shown.")
    tokens: int
    cost_usd: float


class CustomerOnboardingStatus(Contract):
    workflow_id: str
    process: str
    stage: str
    approval_state: str
    pending: list[ApprovalRequest]
    committed: list[CommittedAction]
    compensated: list[str]


class TriggerOutcome(Contract):
    """What the trigger did with one CRM event."""

    event_id: str
    workflow_id: str
    started: bool = Field(description="False: the run existed already (a repeat or re-delivery).")
    run_id: str | None = None
    detail: str = ""


__all__ = [
    "PlanOutcome",
    "PlanOutcomeInput",
    "PlanRecord",
    "PlanRecordInput",
    "ActionKind",
    "COMMIT_ACTION",
    "CUSTOMER_POLICY",
    "CommitInput",
    "CommitOutcome",
    "CommittedAction",
    "CrmEvent",
    "CustomerAction",
    "CustomerAgentInput",
    "CustomerBrief",
    "CustomerCase",
    "CustomerDossier",
    "CustomerOnboardingInput",
    "CustomerOnboardingResult",
    "CustomerOnboardingStatus",
    "DiscountAssessment",
    "IntroEmail",
    "NEW_HIGH_VALUE_CUSTOMER",
    "OnboardingPlan",
    "OnboardingSequence",
    "OnboardingTask",
    "PlanCheckInput",
    "PlanCheckResult",
    "PlanStep",
    "RevertInput",
    "RevertOutcome",
    "STEP_KINDS",
    "StepKind",
    "TriggerOutcome",
    "customer_policy_input",
    "customer_workflow_id",
]
