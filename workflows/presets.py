"""Timeout and retry presets: the one table every process uses, per kind of activity.

Why these numbers:
- agent: models are slow and flaky; 3 attempts bound cost and turn a persistently malformed answer
  into a clear failure within seconds; heartbeats let cancellation reach a call in flight. One
  attempt may hold up to four model requests (the answer, a repair turn, the stronger model and
  its repair), each bounded by its catalogue timeout_s (180 s for the local 0.5B model on a CPU):
  15 minutes let such an attempt finish; a dead worker is still noticed by the 20 s heartbeat.
- policy: pure evaluation, fast; retried a few times, then the gate fails closed.
- connector: systems of record may be briefly down; keep trying for about ten minutes.
- compensation / audit: must eventually happen, so they retry until they succeed.
- notification: one webhook POST (client timeout 10 s) inside a 15 s attempt. 408/429/5xx and
  network errors retry from 1 s, doubling, at most 30 s apart (Retry-After wins when sent), for 8
  attempts (about 1.5 minutes of waiting), so a short receiver outage is ridden out, while a
  receiver that stays down fails the step soon enough for the workflow to record it and decide
  what to do, instead of a notification hanging for hours. Receivers drop repeats by the
  Idempotency-Key, so retries are safe. A rejected notification (other 4xx: bad path, auth,
  schema) will not pass on a retry: NotificationRejected stops at once.
- canary: one evaluation (a visibility listing + a ledger read, a rollback transaction) in 30 s;
  retried every few seconds up to a minute: a failed round is just tried again next interval.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio.common import RetryPolicy

ActivityKind = Literal[
    "agent", "policy", "connector", "compensation", "audit", "notification", "canary"
]

R = TypeVar("R")

#: an activity method as workflows pass it (unbound, ``SomeActivities.method``): ``(self, arg)``
ActivityMethod = Callable[[Any, Any], Awaitable[R]]

# Errors that no retry can fix: stop at once.
NON_RETRYABLE = ["LLMRequestRejected", "PeriodNotFound", "ValidationError"]


@dataclass(frozen=True)
class Preset:
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None


def _backoff(
    first: timedelta,
    attempts: int = 0,
    *,
    ceiling: timedelta = timedelta(seconds=30),
    stop_on: list[str] | None = None,
) -> RetryPolicy:
    """Retry ``first`` after a failure, then doubling the wait up to ``ceiling``, for at most
    ``attempts`` attempts (0: until one succeeds); an error type in ``stop_on`` stops at once."""
    return RetryPolicy(
        initial_interval=first,
        backoff_coefficient=2.0,
        maximum_interval=ceiling,
        maximum_attempts=attempts,
        non_retryable_error_types=stop_on,
    )


#: compensation and audit: they must eventually happen, so retried until they succeed
_UNTIL_DONE = Preset(
    start_to_close=timedelta(seconds=30), retry=_backoff(timedelta(milliseconds=200))
)

PRESETS: dict[ActivityKind, Preset] = {
    "agent": Preset(
        start_to_close=timedelta(minutes=15),
        heartbeat=timedelta(seconds=20),
        retry=_backoff(timedelta(milliseconds=500), 3, stop_on=NON_RETRYABLE),
    ),
    "policy": Preset(
        start_to_close=timedelta(seconds=10),
        retry=RetryPolicy(maximum_attempts=5, non_retryable_error_types=NON_RETRYABLE),
    ),
    "connector": Preset(
        start_to_close=timedelta(seconds=30),
        retry=_backoff(timedelta(milliseconds=200), 30, stop_on=NON_RETRYABLE),
    ),
    "compensation": _UNTIL_DONE,
    "audit": _UNTIL_DONE,
    "notification": Preset(
        start_to_close=timedelta(seconds=15),
        retry=_backoff(timedelta(seconds=1), 8, stop_on=[*NON_RETRYABLE, "NotificationRejected"]),
    ),
    "canary": Preset(
        start_to_close=timedelta(seconds=30),
        retry=_backoff(timedelta(seconds=1), 6, ceiling=timedelta(seconds=10)),
    ),
}

__all__ = [
    "ActivityKind",
    "ActivityMethod",
    "NON_RETRYABLE",
    "PRESETS",
    "Preset",
]
