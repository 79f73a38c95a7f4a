"""Holding a run while the kill switch is engaged (see activities/kill_switch.py).

A stopped activity fails at once with the non-retryable ``KillSwitchEngaged`` error, having done
nothing. :meth:`KillSwitchGate.run` catches exactly that error and then:

* mode ``cancel``: fails the step with ``KillSwitchCancelled``, so the process compensates;
* mode ``hold``: marks the run held (search attribute ``BatonHeld``, Web UI current details, audit
  trail) and waits, durably, until the switch no longer stops it: the ``kill_switch_released``
  signal (sent by ``baton kill clear`` to every held run) wakes it at once, and it also asks the
  database every ``poll`` in case no signal comes. Then the same step runs again.

The same runner waits for a policy engine that does not answer when workers are set to wait
(``BATON_POLICY_UNAVAILABLE=wait``): the step failed at once with the non-retryable
``PolicyUnavailable`` error, having done nothing; the run shows it in the Web UI's current details,
audits ``policy.waiting``, sleeps 1 s, 2 s, 4 s ... (at most 30 s apart) and runs the step again,
audits ``policy.available`` when it passes, or fails with ``PolicyUnavailable`` after the limit.

Workers and servers may restart while a run holds: the wait is a timer and a condition in history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import errors, visibility
from workflows.audit_trail import AuditTrail
from workflows.contracts import KILL_SWITCH_ERROR, KillSwitchCheck, KillSwitchState
from workflows.presets import PRESETS, ActivityKind, ActivityMethod

with workflow.unsafe.imports_passed_through():
    from activities.kill_switch import KillSwitchActivities

R = TypeVar("R")

POLL = timedelta(seconds=30)


def engaged(err: BaseException) -> tuple[KillSwitchState, KillSwitchCheck] | None:
    """The engagement and the stopped subject an activity failure carries, if the kill switch
    is what stopped it."""
    cause = err.cause if isinstance(err, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type == KILL_SWITCH_ERROR:
        state, check = cause.details[:2]
        return KillSwitchState.model_validate(state), KillSwitchCheck.model_validate(check)
    return None


def policy_unavailable(err: BaseException) -> float | None:
    """The longest a step may wait for the policy engine, if a policy engine that did not
    answer (wait mode, activities.policy.unavailable_error) is what failed it."""
    cause = err.cause if isinstance(err, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type == errors.POLICY_UNAVAILABLE:
        # only wait mode says how long to wait; in deny mode the step's retries were spent
        details = cause.details[0] if cause.details else None
        if isinstance(details, dict) and "max_wait_seconds" in details:
            return float(details["max_wait_seconds"])
    return None


@dataclass(frozen=True)
class NamedActivity:
    """An activity known by its registered name (an extension's, baton/extensions.py) rather
    than by a method; its result is read as ``result_type``. Usable wherever a step or a
    compensation takes an activity method (``GovernedStep``, ``Compensation``)."""

    name: str
    result_type: type

    async def __call__(self, _owner: Any, arg: Any) -> Any:  # the activity-method shape
        raise TypeError(f"activity {self.name!r} runs through the workflow, not by a call")


class KillSwitchGate:
    def __init__(self, audit: AuditTrail) -> None:
        self.audit = audit
        self.released = False  # set by the kill_switch_released signal
        self.held_by: KillSwitchState | None = None

    async def run(self, step: str, call: Callable[[], Awaitable[R]]) -> R:
        """Run ``call`` (one activity); while the kill switch stops it, hold, then run it again.
        While the policy engine does not answer (and the worker is set to wait for it), wait
        with a growing timer and run it again, up to the limit the activity reports."""
        waited = 0.0  # seconds spent waiting for the policy engine before this step
        while True:
            try:
                result = await call()
            except ActivityError as err:
                stopped = engaged(err)
                if stopped is not None:
                    await self._hold(step, *stopped)
                    continue
                limit = policy_unavailable(err)
                if limit is None:
                    raise
                waited = await self._wait_for_policy(step, err, waited, limit)
                continue
            if waited:
                workflow.set_current_details("")
                self.audit.record(
                    "baton:workflow",
                    "policy.available",
                    detail={"step": step, "waited_seconds": waited},
                )
            return result

    async def step(
        self, kind: ActivityKind, activity: ActivityMethod[R], arg: Any, summary: str
    ) -> R:
        """Run one activity method with its kind's timeouts and retries (workflows/presets.py).
        Agent and connector steps are the ones the kill switch can stop: they hold, then run
        again; agent, connector and policy steps wait for a policy engine that does not answer
        (wait mode); compensations, audit and notifications never hold."""
        preset = PRESETS[kind]

        def call() -> Awaitable[R]:
            if isinstance(activity, NamedActivity):  # an extension's activity, by its name
                return workflow.execute_activity(
                    activity.name,
                    arg,
                    start_to_close_timeout=preset.start_to_close,
                    heartbeat_timeout=preset.heartbeat,
                    retry_policy=preset.retry,
                    summary=summary[:200],
                    result_type=activity.result_type,
                )
            return workflow.execute_activity_method(
                activity,
                arg,  # type: ignore[arg-type]
                start_to_close_timeout=preset.start_to_close,
                heartbeat_timeout=preset.heartbeat,
                retry_policy=preset.retry,
                summary=summary[:200],
            )

        if kind in ("agent", "connector", "policy"):
            return await self.run(summary, call)
        return await call()

    async def _wait_for_policy(
        self, step: str, err: ActivityError, waited: float, limit: float
    ) -> float:
        """One wait for the policy engine before ``step`` runs again: the seconds waited so far
        after it. Past ``limit`` the step fails with ``PolicyUnavailable`` (the run compensates)."""
        message = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
        if waited >= limit:
            raise errors.failure(
                errors.POLICY_UNAVAILABLE,
                f"no policy decision for {step} after waiting {waited:g} s: {message}",
            )
        if not waited:
            self.audit.record(
                "baton:workflow",
                "policy.waiting",
                detail={"step": step, "error": message, "max_wait_seconds": limit},
            )
            await self.audit.flush()
        workflow.set_current_details(
            f"**Waiting for the policy engine** before `{step}` (fail closed: nothing is done "
            f"without a decision); waited {waited:g} s of at most {limit:g} s.\n\n{message}"
        )
        # 1 s, 2 s, 4 s ... at most 30 s between attempts, never past the limit
        delay = min(max(1.0, waited), 30.0, max(limit - waited, 1.0))
        await workflow.sleep(delay)
        return waited + delay

    def release(self) -> None:
        self.released = True

    async def _hold(self, step: str, state: KillSwitchState, check: KillSwitchCheck) -> None:
        self.audit.record(
            "baton:workflow",
            "kill_switch.held",
            detail={"step": step, "scope": state.scope, "mode": state.mode, "id": state.id},
            rationale=state.reason,
        )
        if state.mode == "cancel":
            raise errors.failure(
                errors.KILL_SWITCH_CANCELLED,
                f"kill switch {state.scope} engaged by {state.engaged_by} with --cancel: "
                f"{state.reason}",
            )
        self.held_by = state
        workflow.upsert_search_attributes([visibility.HELD.value_set(True)])
        await self.audit.flush()
        blocking: KillSwitchState | None = state
        while blocking is not None:
            self.held_by = blocking
            workflow.set_current_details(
                f"**Held by the kill switch** before `{step}`: {blocking.scope} engaged by "
                f"{blocking.engaged_by} at {blocking.engaged_at.isoformat(timespec='seconds')}: "
                f"{blocking.reason}\n\nResumes when it is cleared (`baton kill clear --scope "
                f"{blocking.scope} --reason ...`)."
            )
            self.released = False
            try:
                await workflow.wait_condition(lambda: self.released, timeout=POLL)
            except TimeoutError:
                pass
            preset = PRESETS["connector"]
            status = await workflow.execute_activity_method(
                KillSwitchActivities.kill_switch_status,
                check,
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"kill switch: still engaged for {step}?",
            )
            blocking = status.blocking
            if blocking is not None and blocking.mode == "cancel":
                self.held_by = None
                await self._hold(step, blocking, check)  # audits and raises
        self.held_by = None
        workflow.upsert_search_attributes([visibility.HELD.value_set(False)])
        workflow.set_current_details("")
        self.audit.record("baton:workflow", "kill_switch.released", detail={"step": step})


__all__ = [
    "NamedActivity",
    "KillSwitchGate",
    "POLL",
    "engaged",
    "policy_unavailable",
]
