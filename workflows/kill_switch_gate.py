"""Holding a run while the kill switch is engaged (see activities/kill_switch.py).

A stopped activity fails at once with the non-retryable ``KillSwitchEngaged`` error, having done
nothing. :meth:`KillSwitchGate.run` catches exactly that error and then:

* mode ``cancel``: fails the step with ``KillSwitchCancelled``, so the process compensates;
* mode ``hold``: marks the run held (search attribute ``BatonHeld``, Web UI current details, audit
  trail) and waits, durably, until the switch no longer stops it: the ``kill_switch_released``
  signal (sent by ``baton kill clear`` to every held run) wakes it at once, and it also asks the
  database every ``poll`` in case no signal comes. Then the same step runs again.

Workers and servers may restart while a run holds: the wait is a timer and a condition in history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import errors, visibility
from workflows.audit_trail import AuditTrail
from workflows.contracts import KILL_SWITCH_ERROR, KillSwitchCheck, KillSwitchState
from workflows.presets import PRESETS, ActivityKind

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


class KillSwitchGate:
    def __init__(self, audit: AuditTrail) -> None:
        self.audit = audit
        self.released = False  # set by the kill_switch_released signal
        self.held_by: KillSwitchState | None = None

    async def run(self, step: str, call: Callable[[], Awaitable[R]]) -> R:
        """Run ``call`` (one activity); while the kill switch stops it, hold, then run it again."""
        while True:
            try:
                return await call()
            except ActivityError as err:
                stopped = engaged(err)
                if stopped is None:
                    raise
            await self._hold(step, *stopped)

    async def step(
        self,
        kind: ActivityKind,
        activity: Callable[[Any, Any], Awaitable[R]],
        arg: Any,
        summary: str,
    ) -> R:
        """Run one activity method with its kind's timeouts and retries (workflows/presets.py).
        Agent and connector steps are the ones the kill switch can stop: they hold, then run
        again; compensations, audit, policy and notifications never hold."""
        preset = PRESETS[kind]

        def call() -> Awaitable[R]:
            return workflow.execute_activity_method(
                activity,
                arg,  # type: ignore[arg-type]
                start_to_close_timeout=preset.start_to_close,
                heartbeat_timeout=preset.heartbeat,
                retry_policy=preset.retry,
                summary=summary[:200],
            )

        if kind in ("agent", "connector"):
            return await self.run(summary, call)
        return await call()

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
