"""Contracts of the model router (issue 6) and the customer-support escalation (issue 5).

Built on workflows/contracts/base.py and governance.py; imports only pydantic, the standard
library and those modules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from workflows.contracts.base import (
    BUDGET_EXCEEDED,
    AgentInput,
    Budget,
    Contract,
    OverBudget,
    ProcessInput,
)
from workflows.contracts.governance import (
    ApprovalGrant,
    ApprovalOutcome,
    BusinessClaim,
    PolicyDecision,
    claim_field,
)
from workflows.contracts.security import Document, Id, Name, Text

# ---------------------------------------------------------------------------------------------
# Router
# ---------------------------------------------------------------------------------------------

#: Model tiers, cheapest first. "tier0" is the router's own rules: no model call, no cost.
Tier = Literal["tier0", "cheap", "strong"]
TIER_ORDER: tuple[str, ...] = ("tier0", "cheap", "strong")
CallOutcome = Literal[
    "ok", "invalid_output", "low_confidence", "server_error", "residency_denied", "over_budget"
]

#: ApplicationError type of a routed call no catalogue model may serve (BUDGET_EXCEEDED, the
#: other one a workflow may handle, lives in workflows/contracts/base.py with Budget).
NO_ELIGIBLE_MODEL = "NoEligibleModel"
#: the module's public names (Budget, OverBudget and BUDGET_EXCEEDED are re-exported: older
#: imports keep working)
__all__ = [
    "BUDGET_EXCEEDED",
    "Budget",
    "CATEGORIES",
    "CallOutcome",
    "CaseSummary",
    "Category",
    "CoordinatorStatus",
    "ENQUEUE_CASE_SIGNAL",
    "ENQUEUE_CASE_UPDATE",
    "EnqueueAck",
    "ModelCall",
    "NO_ELIGIBLE_MODEL",
    "OverBudget",
    "Passage",
    "Priority",
    "QueuedCase",
    "Research",
    "ResearchInput",
    "RoutedAgentInput",
    "RoutedUsage",
    "SLA_SECONDS",
    "SUPPORT_COORDINATOR_WORKFLOW",
    "SUPPORT_PROCESS",
    "SUPPORT_STATUS_QUERY",
    "SUPPORT_WORKFLOW",
    "SummaryInput",
    "SupportCase",
    "SupportCaseInput",
    "SupportCaseResult",
    "SupportCoordinatorInput",
    "SupportInput",
    "TIER_ORDER",
    "TicketDraft",
    "TicketDraftInput",
    "TicketStatus",
    "TicketUpdateInput",
    "TicketUpdateOutcome",
    "Tier",
    "Triage",
    "TriageInput",
]


class RoutedAgentInput(AgentInput):
    """Base of every routed agent call: the agent names a task class, never a model."""

    tenant: str
    min_tier: Tier = Field(default="tier0", description="Skip tiers below (policy obligation).")


class ModelCall(Contract):
    """One model request an activity attempt made, as charged (a 5xx answer costs nothing)."""

    model: str
    endpoint: str
    tier: Tier
    region: str
    outcome: CallOutcome
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    note: str = ""


class RoutedUsage(Contract):
    """What the router did for one answered call: the model that answered and what it cost.

    ``run_tokens``/``run_cost_usd`` are the run's totals as charged in the database (every
    attempt actually made, retried and failed ones included), read after this call."""

    task_class: str
    model: str
    tier: Tier
    endpoint: str = ""
    region: str = ""
    calls: list[ModelCall] = []
    tokens: int = 0
    cost_usd: float = 0.0
    run_tokens: int = 0
    run_cost_usd: float = 0.0
    overhead_ms: float = 0.0


# ---------------------------------------------------------------------------------------------
# Customer support
# ---------------------------------------------------------------------------------------------

SUPPORT_WORKFLOW = "SupportCase"
SUPPORT_COORDINATOR_WORKFLOW = "SupportCoordinator"
SUPPORT_PROCESS = "support_escalation"
ENQUEUE_CASE_UPDATE = "enqueue_case"
ENQUEUE_CASE_SIGNAL = "enqueue_case_signal"
SUPPORT_STATUS_QUERY = "support_status"

Priority = Literal["P1", "P2", "P3", "P4"]
Category = Literal["billing", "technical", "account", "shipping", "cancellation"]
CATEGORIES: tuple[str, ...] = ("billing", "technical", "account", "shipping", "cancellation")
#: Default SLA per priority (seconds to a ticket update).
SLA_SECONDS: dict[str, int] = {"P1": 3600, "P2": 4 * 3600, "P3": 24 * 3600, "P4": 72 * 3600}
TicketStatus = Literal["open", "pending_customer", "resolved"]


class SupportCase(Contract):
    case_id: Id = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    tenant: Name = Field(min_length=1)
    customer: Name = Field(min_length=1)
    customer_value_usd: float = Field(ge=0, description="Annual value of the customer.")
    subject: Text = Field(min_length=1)
    body: Document = Field(min_length=1)
    priority: Priority = "P3"


class SupportInput(ProcessInput):
    """What a support case and the support queue's coordinator take from ProcessInput, narrowed:
    the support queue asks, and an approval is waited for 4 hours (in seconds, a float)."""

    requested_by: Name = "support-queue"
    #: a float, as support runs have always carried it (stored inputs keep decoding the same)
    approval_timeout_seconds: float = Field(default=4 * 3600, gt=0)  # type: ignore[assignment]


class SupportCaseInput(SupportInput):
    case: SupportCase
    #: seconds to a ticket update; None: SLA_SECONDS[priority]
    sla_seconds: float | None = Field(default=None, gt=0)
    l2_agent: bool | None = Field(
        default=None,
        description="The L2 researcher acts: a tool-using agent (workflows/agent_loop.py) that "
        "looks the customer and contract up, searches the knowledge base, may propose a credit "
        "and drafts the reply, each a governed tool call. None (the default): it acts in cases "
        "started on code that has it as the default; False: one routed answer instead.",
    )


class TriageInput(RoutedAgentInput):
    case_id: str
    subject: str
    body: str


class Triage(Contract):
    category: Category
    confidence: float = Field(ge=0, le=1)
    usage: RoutedUsage


class Passage(Contract):
    """A knowledge passage with its provenance."""

    passage_id: str
    source: str
    text: str
    score: float = 0.0


class ResearchInput(RoutedAgentInput):
    case_id: str
    category: str
    subject: str
    body: str


class Research(Contract):
    answer: str
    cited: list[str]
    passages: list[Passage]
    usage: RoutedUsage


class SummaryInput(RoutedAgentInput):
    case_id: str
    category: str
    subject: str
    body: str
    research: str = ""


class CaseSummary(Contract):
    summary: str
    usage: RoutedUsage


class TicketDraftInput(RoutedAgentInput):
    case_id: str
    category: str
    summary: str
    research: str = ""


class TicketDraft(Contract):
    status: TicketStatus
    reply: str
    tags: list[str]
    usage: RoutedUsage


class TicketUpdateInput(Contract):
    case: SupportCase
    category: str
    status: TicketStatus
    reply: str
    tags: list[str] = []
    requested_by: str
    approval: ApprovalGrant | None = None
    idempotency_key: str
    claim: BusinessClaim | None = claim_field()

    @classmethod
    def probe(cls, case: SupportCase, requested_by: str) -> TicketUpdateInput:
        """The update as the ticket policy sees it before anything is drafted (preflight)."""
        return cls(
            case=case,
            category="",
            status="open",
            reply="x",
            requested_by=requested_by,
            idempotency_key="preflight",
        )


class TicketUpdateOutcome(Contract):
    decision: PolicyDecision
    ticket_version: int | None = None
    applied: bool = False


class SupportCaseResult(Contract):
    case_id: str
    category: str
    escalated: bool
    model_tiers: dict[str, str]
    status: TicketStatus | None
    ticket_version: int | None
    sla_breached: bool
    approvals: list[ApprovalOutcome] = []
    tokens: int = 0
    cost_usd: float = 0.0
    #: the L2 researcher's governed tool calls when it acted: those that ran, and those policy
    #: or a support lead refused, per tool
    tool_calls: dict[str, int] = {}
    tool_refusals: dict[str, int] = {}


class SupportCoordinatorInput(SupportInput):
    tenant: str
    #: a tenant may run several queues (e.g. per region); workflow id support-queue-<tenant>-<name>
    name: Name = Field(default="main", pattern=r"^[A-Za-z0-9._-]+$")
    #: cases this run handles before it continues as new (history stays bounded)
    continue_after: int = Field(default=200, ge=1)
    max_parallel: int = Field(default=2, ge=1)
    sla_seconds: dict[str, float] = {}
    #: carried across continue-as-new
    queue: list[QueuedCase] = []
    handled: int = 0
    seen: list[str] = []
    done: dict[str, str] = {}
    runs: int = 1


class QueuedCase(Contract):
    case: SupportCase
    enqueued_at: datetime
    seq: int


class EnqueueAck(Contract):
    case_id: str
    accepted: bool
    position: int
    workflow_id: str = ""
    reason: str = ""


class CoordinatorStatus(Contract):
    queued: list[str]
    running: list[str]
    done: dict[str, str]
    handled: int
    runs: int


SupportCoordinatorInput.model_rebuild()
