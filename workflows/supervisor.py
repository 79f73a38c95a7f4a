"""The supervisor agent: one long-running workflow per environment that watches the KPIs.

Every ``interval_seconds`` it runs ``supervisor_check`` (activities/supervisor.py: the KPIs of
the runs started in the window, the approval backlog, anomalies against the thresholds and each
process's baseline). For each anomaly it has not alerted yet it

1. alerts through the notifier (the ``notify`` activity, kind ``supervisor.alert``, to
   ``notify_roles``): outbox row or webhook, audited by the notifier;
2. when ``act`` is on, runs ``supervisor_act``: policy (``baton/supervisor/actions``) decides
   whether the kill switch is engaged for the misbehaving process; both are audited;
3. records ``supervisor.alerted`` in the run's audit trail.

An anomaly alerts once; when a check no longer finds it, it is ``supervisor.cleared`` and would
alert again on a recurrence. It continues as new after ``checks_per_run`` checks (or when
Temporal suggests it), carrying the baselines and the open anomalies, so its history stays
bounded. A Temporal Schedule (``baton supervisor start``) keeps it running: it starts the
supervisor under its fixed id every few minutes and skips while one runs.

Deterministic: no I/O, no clock but ``workflow.now()``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from workflows.audit_trail import AuditTrail
from workflows.contracts import Notification
from workflows.contracts.supervisor import (
    Anomaly,
    SupervisorActInput,
    SupervisorActResult,
    SupervisorCheckInput,
    SupervisorCheckResult,
    SupervisorInput,
)
from workflows.presets import PRESETS

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from activities.supervisor import SupervisorActivities

SUPERVISOR_STATUS_QUERY = "supervisor_status"


@workflow.defn(name="BatonSupervisor")
class SupervisorWorkflow:
    def __init__(self) -> None:
        self.audit = AuditTrail()
        self.last: SupervisorCheckResult | None = None
        self.checks = 0

    @workflow.run
    async def run(self, inp: SupervisorInput) -> None:
        preset = PRESETS["canary"]  # a read-mostly control-plane step, like the canary's
        open_keys = set(inp.open_anomalies)
        baselines = dict(inp.baselines)
        for _ in range(inp.checks_per_run):
            self.last = await workflow.execute_activity_method(
                SupervisorActivities.supervisor_check,
                SupervisorCheckInput(
                    task_queue=inp.task_queue,
                    window_seconds=inp.window_seconds,
                    thresholds=inp.thresholds,
                    baselines=baselines,
                ),
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"supervisor: KPIs of the last {inp.window_seconds}s, anomalies",
            )
            self.checks += 1
            baselines = dict(self.last.baselines)
            found = {a.key: a for a in self.last.anomalies}
            for key in sorted(open_keys - found.keys()):
                self.audit.record("agent:supervisor", "supervisor.cleared", detail={"key": key})
                open_keys.discard(key)
            for key, anomaly in sorted(found.items()):
                if key not in open_keys:
                    await self._alert(inp, anomaly)
                    open_keys.add(key)
            await self.audit.flush()
            workflow.set_current_details(
                f"supervisor: check {self.checks} at {workflow.now():%Y-%m-%d %H:%M:%S} UTC; "
                f"open anomalies: {', '.join(sorted(open_keys)) or 'none'}; every "
                f"{inp.interval_seconds:g}s"
            )
            if workflow.info().is_continue_as_new_suggested():
                break
            await workflow.sleep(timedelta(seconds=inp.interval_seconds))
        workflow.continue_as_new(
            inp.model_copy(
                update={
                    "baselines": baselines,
                    "open_anomalies": sorted(open_keys),
                    "generation": inp.generation + 1,
                }
            )
        )

    async def _alert(self, inp: SupervisorInput, anomaly: Anomaly) -> None:
        info = workflow.info()
        notification = PRESETS["notification"]
        alerted = True
        try:
            await workflow.execute_activity_method(
                NotifyActivities.notify,
                Notification(
                    kind="supervisor.alert",
                    workflow_id=info.workflow_id,
                    request_id=anomaly.key,
                    process=anomaly.process,
                    summary=anomaly.summary,
                    roles=inp.notify_roles,
                    recipients=[],
                    idempotency_key=f"{info.workflow_id}/{info.run_id}/{anomaly.key}/{self.checks}",
                ),
                start_to_close_timeout=notification.start_to_close,
                retry_policy=notification.retry,
                summary=f"alert {', '.join(inp.notify_roles)}: {anomaly.summary}"[:200],
            )
        except ActivityError as err:  # the audit row still says what was found
            if is_cancelled_exception(err):
                raise
            workflow.logger.warning(f"supervisor alert not sent: {err}")
            alerted = False
        acted: SupervisorActResult | None = None
        if inp.act:
            preset = PRESETS["policy"]
            acted = await workflow.execute_activity_method(
                SupervisorActivities.supervisor_act,
                SupervisorActInput(anomaly=anomaly),
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"supervisor: may the kill switch stop {anomaly.process}? (policy)",
            )
        self.audit.record(
            "agent:supervisor",
            "supervisor.alerted",
            detail={
                "anomaly": anomaly.model_dump(),
                "notified_roles": inp.notify_roles if alerted else [],
                "notification_failed": not alerted,
                "acted": acted.model_dump() if acted else None,
            },
            rationale=anomaly.summary,
        )

    @workflow.query(name=SUPERVISOR_STATUS_QUERY)
    def status(self) -> SupervisorCheckResult | None:
        return self.last


__all__ = [
    "SUPERVISOR_STATUS_QUERY",
    "SupervisorWorkflow",
]
