"""Failure types users can match on (``ApplicationError.type``), raised by workflows.

Each is non-retryable: a denied, rejected or expired action will not change by retrying the run.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

POLICY_DENIED = "PolicyDenied"
APPROVAL_REJECTED = "ApprovalRejected"
APPROVAL_EXPIRED = "ApprovalExpired"
PERIOD_CLOSED = "PeriodClosed"
INJECTED_FAILURE = "InjectedFailure"
KILL_SWITCH_CANCELLED = "KillSwitchCancelled"
#: No policy decision could be had (engine unreachable). Raised non-retryable by activities in
#: wait mode (the step runner waits and retries), and by the workflow when it stops waiting.
POLICY_UNAVAILABLE = "PolicyUnavailable"


def failure(kind: str, message: str, **details: object) -> ApplicationError:
    extra = [details] if details else []
    return ApplicationError(message, *extra, type=kind, non_retryable=True)
