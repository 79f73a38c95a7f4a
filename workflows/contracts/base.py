"""The shared base of every contract: the ``Contract`` model, ``digest``, the names of the
public contract (task queue, search attributes, handler names), patterns, process versions, the
run's model budget, the base of agent inputs and ``ProcessInput``, the fields every process's start
input repeats.

Money is carried as ``Decimal`` (serialised as a string) so that no cent is lost to floats.
Imports only pydantic, the standard library and workflows/contracts/security.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workflows.contracts.security import ApprovalTrust, Name

# --------------------------------------------------------------------------------------------
# Names that are part of the public contract (task queues, search attributes, handler names).
# --------------------------------------------------------------------------------------------

DEFAULT_TASK_QUEUE = "baton"

#: Custom search attributes registered by temporal-dev/ (and to register on production namespaces).
SEARCH_ATTRIBUTES: dict[str, str] = {
    "BatonProcess": "Keyword",
    "BatonTenant": "Keyword",
    "BatonRisk": "Keyword",
    "BatonApprovalState": "Keyword",
    "BatonPendingRoles": "KeywordList",
    "BatonCostUsd": "Double",
    "BatonShadow": "Bool",
    "BatonHeld": "Bool",
    "BatonVersion": "Keyword",
    "BatonTokens": "Int",
}

#: Baton's process names (search attribute BatonProcess, kill-switch scopes) by workflow type.
PROCESS_BY_WORKFLOW_TYPE: dict[str, str] = {
    "FinanceClose": "finance_close",
    "HrOnboarding": "hr_onboarding",
    "DocumentReviewAllocation": "document_review",
    "SupportCase": "support_escalation",
    "CustomerOnboarding": "customer_onboarding",
    "AgentRun": "agent_run",
}

#: Update/signal/query names a stock `temporal` CLI user types.
APPROVAL_UPDATE = "decide_approval"
KILL_SWITCH_RELEASED_SIGNAL = "kill_switch_released"
KILL_SWITCH_ERROR = "KillSwitchEngaged"
CANARY_CHANGED_SIGNAL = "canary_changed"
CANARY_STATUS_QUERY = "canary_status"
#: Memo key holding a run's process version (the canary assignment), next to search attribute
#: BatonVersion and the input's ``version``.
VERSION_MEMO = "baton_version"
APPROVAL_SIGNAL = "submit_approval"
#: Updates of the approver inbox: a comment on a request, and handing a request to a colleague
APPROVAL_COMMENT_UPDATE = "comment_approval"
APPROVAL_DELEGATE_UPDATE = "delegate_approval"
STATUS_QUERY = "status"
PENDING_APPROVALS_QUERY = "pending_approvals"
BOARD_HISTORY_QUERY = "board_history"

PERIOD_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
EMPLOYEE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
#: What NAME_PATTERN takes, as a validation error says it.
NAME_RULE = "lowercase letters, digits, '.', '_' or '-' (1-63 chars)"


def must_match(pattern: re.Pattern[str], value: str, rule: str) -> str:
    """``value`` when ``pattern`` matches it; else a ValueError: "must be <rule>" (a field
    validator's answer for an id or name of a fixed form)."""
    if not pattern.match(value):
        raise ValueError(f"must be {rule}")
    return value


Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


def digest(value: Any) -> str:
    """A stable sha256 of a JSON-able value (pydantic models are dumped in JSON mode first).

    Used to bind approvals to the exact action an approver saw and to build idempotency keys.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Contract(BaseModel):
    """Base of every contract: unknown fields are refused so typos fail fast."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Process versions: what a canary candidate changes (prompts, model routes), as data


STABLE_VERSION = "stable"


class ProcessVersion(Contract):
    """One version of a process that needs no new worker build: the prompt variant and/or the
    model each agent role uses. Workflow-code versions are Temporal's Worker Deployment Versions
    instead (see docs/governance/canaries.md)."""

    name: str
    description: str
    #: agent role -> prompt variant (activities/agents.py PROMPTS); unlisted roles: "stable"
    prompts: dict[str, str] = {}
    #: agent role -> model name (model route); unlisted roles: the worker's BATON_MODEL
    models: dict[str, str] = {}


def _versions(*candidates: ProcessVersion) -> dict[str, ProcessVersion]:
    """A process's versions by name: "stable" first, then its canary candidates."""
    stable = ProcessVersion(
        name=STABLE_VERSION, description="the prompts and model the workers are configured with"
    )
    return {version.name: version for version in (stable, *candidates)}


#: The versions each process knows, by process name. "stable" is what workers are configured
#: with; every other entry is a candidate a canary can route a share of new runs to.
PROCESS_VERSIONS: dict[str, dict[str, ProcessVersion]] = {
    "finance_close": _versions(
        ProcessVersion(
            name="reconciler-prompt-v2",
            description="reworded reconciler prompt (prefers no entry over a guess)",
            prompts={"reconciler": "v2"},
        ),
    ),
    "hr_onboarding": _versions(
        ProcessVersion(
            name="policy-educator-prompt-v2",
            description="reworded policy educator prompt (country policies first)",
            prompts={"policy_educator": "v2"},
        ),
    ),
}


def check_version(process: str, version: str) -> str:
    """``version`` if ``process`` knows it, else a ValueError naming the known versions."""
    known = PROCESS_VERSIONS.get(process, {})
    if version not in known:
        raise ValueError(
            f"unknown version {version!r} of {process}: expected one of {', '.join(known)}"
        )
    return version


def known_version(process: str) -> AfterValidator:
    """The check of a process input's ``version`` field: ``Annotated[Name,
    known_version("finance_close")]`` takes only a version ``process`` knows."""
    return AfterValidator(lambda version: check_version(process, version))


#: ApplicationError type of a routed agent call the run's or the tenant's budget refuses
#: (activities/router.py); non-retryable: the workflow asks a human (GovernedProcess.agent_step).
BUDGET_EXCEEDED = "BudgetExceeded"
OverBudget = Literal["refuse", "route_cheaper"]


class Budget(Contract):
    """Spending limits of one run's routed calls (the tenant's daily cap is policy data)."""

    run_usd: float | None = Field(
        default=None, ge=0, description="Cap for the whole run (USD); None: none."
    )
    over_budget: OverBudget | None = Field(
        default=None, description="refuse, or route to a cheaper model; None: the catalogue's."
    )


class TokenUsage(Contract):
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    #: Routed calls (activities/router.py): the run's totals as charged in the database so far,
    #: every request of every attempt (failed ones too); None for a call that is not routed.
    run_tokens: int | None = None
    run_cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AgentInput(Contract):
    """Base of every agent activity's input: which process version's prompt and model to use,
    and the run's budget. Set by the workflow from its own input; never sent to the model."""

    version: str = Field(default=STABLE_VERSION, description="Process version (PROCESS_VERSIONS).")
    budget: Budget = Field(default_factory=Budget, description="The run's model budget.")


# --------------------------------------------------------------------------------------------
# Process inputs: what every process's start input repeats
# --------------------------------------------------------------------------------------------


def _tenant_is_a_name(v: str) -> str:
    return must_match(NAME_PATTERN, v, NAME_RULE)


def _requested_by_not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must name a person or service, not be blank")
    return v.strip()


#: A tenant as a process input names it: lowercase letters, digits, '.', '_' or '-'.
TenantName = Annotated[Name, AfterValidator(_tenant_is_a_name)]
#: Who asked for a run: a person or service, stripped, never blank.
Requester = Annotated[Name, AfterValidator(_requested_by_not_blank)]
#: A run's approval issuer (the field ``approval_trust`` of the inputs that take one).
ApprovalIssuer = Annotated[
    ApprovalTrust | None,
    Field(
        description="Approval issuer: when set, every approval decision must carry a valid JWT "
        "from it (BatonClient fills it in from BATON_APPROVAL_TRUST).",
    ),
]


class ProcessInput(Contract):
    """The fields every process's start input repeats: who asked for the run, how long a human
    approval may be waited for, and the run's model budget. A process adds its business key
    (tenant and period, employee, customer, case) and may narrow these fields (a default
    requester, its own approval timeout)."""

    requested_by: Requester = Field(description="Person or service that asked for the run.")
    approval_timeout_seconds: int = Field(
        default=3 * 24 * 3600,
        ge=1,
        le=30 * 24 * 3600,
        description="How long to wait for an approver before failing safe (reject + compensate).",
    )
    budget: Budget = Field(
        default_factory=Budget,
        description="The run's model budget (run_usd, over_budget). A routed call it refuses "
        "goes to a person holding the process's budget role (policy/data/budget.json).",
    )


__all__ = [
    "APPROVAL_COMMENT_UPDATE",
    "APPROVAL_DELEGATE_UPDATE",
    "APPROVAL_SIGNAL",
    "APPROVAL_UPDATE",
    "ApprovalIssuer",
    "AgentInput",
    "BOARD_HISTORY_QUERY",
    "BUDGET_EXCEEDED",
    "Budget",
    "CANARY_CHANGED_SIGNAL",
    "CANARY_STATUS_QUERY",
    "Contract",
    "DEFAULT_TASK_QUEUE",
    "EMPLOYEE_ID_PATTERN",
    "KILL_SWITCH_ERROR",
    "KILL_SWITCH_RELEASED_SIGNAL",
    "Money",
    "NAME_PATTERN",
    "OverBudget",
    "PENDING_APPROVALS_QUERY",
    "PERIOD_PATTERN",
    "PROCESS_BY_WORKFLOW_TYPE",
    "PROCESS_VERSIONS",
    "ProcessInput",
    "ProcessVersion",
    "Requester",
    "SEARCH_ATTRIBUTES",
    "STABLE_VERSION",
    "STATUS_QUERY",
    "TenantName",
    "TokenUsage",
    "VERSION_MEMO",
    "check_version",
    "digest",
    "known_version",
]
