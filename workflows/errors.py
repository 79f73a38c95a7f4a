"""Baton's errors, in one place: the ``BatonError`` root every Baton exception class derives
from, and the catalogue of failure types (``ApplicationError.type``) users can match on.

A failure type is a string because it crosses Temporal: a workflow or activity fails with
``ApplicationError(type=...)`` and a client, the CLI or another workflow reads ``err.cause.type``.
:data:`FAILURE_TYPES` lists every type Baton raises with what it means; each workflow failure is
non-retryable (a denied, rejected or expired action will not change by retrying the run).

This module imports only temporalio's exception types: every layer (workflows, activities,
clients, the CLI) may import it.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


class BatonError(Exception):
    """Root of every exception class Baton defines, so ``except BatonError`` catches Baton's
    own refusals (bad input, refused approvals, invalid definitions) and nothing else. Raised
    inside a workflow, it fails the run instead of retrying the workflow task forever
    (registered by workflows/plugin.py)."""


# -- workflow failures -----------------------------------------------------------------------
POLICY_DENIED = "PolicyDenied"
APPROVAL_REJECTED = "ApprovalRejected"
APPROVAL_EXPIRED = "ApprovalExpired"
PERIOD_CLOSED = "PeriodClosed"
INJECTED_FAILURE = "InjectedFailure"
KILL_SWITCH_CANCELLED = "KillSwitchCancelled"
#: No policy decision could be had (engine unreachable). Raised non-retryable by activities in
#: wait mode (the step runner waits and retries), and by the workflow when it stops waiting.
POLICY_UNAVAILABLE = "PolicyUnavailable"
KILL_SWITCH_ENGAGED = "KillSwitchEngaged"
BUDGET_EXCEEDED = "BudgetExceeded"
PLAN_INVALID = "PlanInvalid"
PLAN_NOT_CARRIED_OUT = "PlanNotCarriedOut"
IDENTITY_NOT_VERIFIED = "IdentityNotVerified"
BLACKBOARD_CONFLICTS = "BlackboardConflicts"
DEFINITION_ERROR = "ProcessDefinitionError"
INPUT_INVALID = "ProcessInputInvalid"
LOOP_LIMIT = "LoopLimitExceeded"
EVENT_TIMEOUT = "EventTimeout"
BRANCHES_FAILED = "ParallelBranchesFailed"
AUCTION_NO_BIDS = "AuctionNoBids"
AUCTION_ALL_WINNERS_FAILED = "AuctionAllWinnersFailed"
NO_ELIGIBLE_MODEL = "NoEligibleModel"
AGENT_LIMIT = "AgentLimitReached"
#: Another run (another workflow id) holds the run's business key: nothing was done. Raised
#: non-retryable by the claim check (activities/claims.py); details name the owner.
BUSINESS_KEY_CLAIMED = "BusinessKeyClaimed"

#: Every failure type Baton raises, and what it means to the user who reads it.
FAILURE_TYPES: dict[str, str] = {
    POLICY_DENIED: "policy denied an action (nothing of it was done; the run undid the rest)",
    APPROVAL_REJECTED: "an approver rejected the request (or too many rounds of changes)",
    APPROVAL_EXPIRED: "no decision before the last escalation tier's deadline: failed safe",
    PERIOD_CLOSED: "the accounting period is already closed",
    INJECTED_FAILURE: "a failure injected on purpose (fail_after_* inputs, tests and demos)",
    KILL_SWITCH_CANCELLED: "the kill switch was engaged with --cancel",
    POLICY_UNAVAILABLE: "no policy decision could be had in time (fail closed)",
    KILL_SWITCH_ENGAGED: "an activity was stopped by the kill switch (the run holds or cancels)",
    BUDGET_EXCEEDED: "a model call would pass the run's or tenant's budget; nobody raised it",
    PLAN_INVALID: "the planner's plan cannot be run (a step twice, no intro email, not a customer)",
    PLAN_NOT_CARRIED_OUT: "the agent finished without committing every action of the plan",
    IDENTITY_NOT_VERIFIED: "the new hire's identity is not verified: no access is granted",
    BLACKBOARD_CONFLICTS: "blackboard agents kept writing stale state past the retry limit",
    DEFINITION_ERROR: "a YAML process definition cannot run on this data",
    INPUT_INVALID: "a YAML process run or step got input that does not fit its model",
    LOOP_LIMIT: "a YAML loop passed its max_iterations",
    EVENT_TIMEOUT: "a YAML wait_event step got no event in time",
    BRANCHES_FAILED: "too few branches of a YAML parallel step succeeded",
    AUCTION_NO_BIDS: "no agent tier bid on a document review task",
    AUCTION_ALL_WINNERS_FAILED: "every winning tier of a document review task failed",
    NO_ELIGIBLE_MODEL: "no model in the catalogue may take the call (tier, region, budget)",
    AGENT_LIMIT: "an agent that acts used its turns, tool calls or tokens without finishing",
    "UnknownTool": "a tool call named no tool the worker offers",
    "UnknownAgentStep": "an agent run named no declared agent step (workflows/agent_steps.py)",
    BUSINESS_KEY_CLAIMED: "another run owns the business key (e.g. the tenant's period): "
    "this run did nothing; the failure names the owner's workflow id and run id",
    "AgentOutputInvalid": "the model's answer stayed invalid after its repair turns",
    "LLMUnavailable": "the model endpoint was unreachable or timed out",
    "LLMRateLimited": "the model endpoint rate-limited the call (retried by Temporal)",
    "LLMServerError": "the model endpoint answered 5xx (retried by Temporal)",
    "LLMRequestRejected": "the model endpoint refused the request (4xx): not retried",
    "LowConfidence": "the model's answer was below the task's confidence floor",
    "RedactionFailed": "redaction could not be applied before a model call: nothing was sent",
    "UnknownProcessVersion": "the run's process version is not in PROCESS_VERSIONS",
    "PeriodNotFound": "the tenant has no such accounting period",
}


def failure(kind: str, message: str, **details: object) -> ApplicationError:
    """A non-retryable workflow failure of type ``kind`` (one of :data:`FAILURE_TYPES`)."""
    extra = [details] if details else []
    return ApplicationError(message, *extra, type=kind, non_retryable=True)


__all__ = [
    "AGENT_LIMIT",
    "APPROVAL_EXPIRED",
    "APPROVAL_REJECTED",
    "AUCTION_ALL_WINNERS_FAILED",
    "AUCTION_NO_BIDS",
    "BLACKBOARD_CONFLICTS",
    "BRANCHES_FAILED",
    "BUDGET_EXCEEDED",
    "BUSINESS_KEY_CLAIMED",
    "BatonError",
    "DEFINITION_ERROR",
    "EVENT_TIMEOUT",
    "FAILURE_TYPES",
    "IDENTITY_NOT_VERIFIED",
    "INJECTED_FAILURE",
    "INPUT_INVALID",
    "KILL_SWITCH_CANCELLED",
    "KILL_SWITCH_ENGAGED",
    "LOOP_LIMIT",
    "NO_ELIGIBLE_MODEL",
    "PERIOD_CLOSED",
    "PLAN_INVALID",
    "PLAN_NOT_CARRIED_OUT",
    "POLICY_DENIED",
    "POLICY_UNAVAILABLE",
    "failure",
]
