"""CanaryMonitor: evaluates one process's canary every interval and rolls it back when worse.

One per process and task queue (id ``canary-monitor/<process>/<task queue>``), started by
``baton canary start``. Each round runs the ``evaluate_canary`` activity (activities/canary.py),
which measures both versions' KPIs and rolls the candidate back itself when it is worse beyond
the configured margins; the monitor ends when the canary is no longer active (rolled back,
promoted, or superseded), returning the last evaluation. The wait between rounds is a durable
timer; the ``canary_changed`` signal (sent by the CLI on a change) wakes it at once. It continues
as new after ``iterations_per_run`` rounds (or when Temporal suggests it), so its history stays
bounded however long a canary runs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import VersioningBehavior

from workflows.contracts import (
    CANARY_CHANGED_SIGNAL,
    CANARY_STATUS_QUERY,
    CanaryEvaluateInput,
    CanaryEvaluation,
    CanaryMonitorInput,
)
from workflows.presets import PRESETS

with workflow.unsafe.imports_passed_through():
    from activities.canary import CanaryActivities


def monitor_id(process: str, task_queue: str) -> str:
    return f"canary-monitor/{process}/{task_queue}"


@workflow.defn(name="CanaryMonitor")
class CanaryMonitorWorkflow:
    def __init__(self) -> None:
        self.changed = False
        self.last: CanaryEvaluation | None = None

    @workflow.run
    async def run(self, inp: CanaryMonitorInput) -> CanaryEvaluation:
        preset = PRESETS["canary"]
        done = inp.evaluations
        for _ in range(inp.iterations_per_run):
            self.changed = False
            self.last = await workflow.execute_activity_method(
                CanaryActivities.evaluate_canary,
                CanaryEvaluateInput(process=inp.process, task_queue=workflow.info().task_queue),
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"canary of {inp.process}: measure KPIs, roll back if worse",
            )
            done += 1
            canary = self.last.canary
            if canary is None or canary.state != "active":
                workflow.set_current_details(f"canary of {inp.process}: {self.last.verdict}")
                return self.last
            workflow.set_current_details(
                f"canary of {inp.process}: {canary.candidate} on {canary.share:.0%} of new runs "
                f"vs {canary.baseline}; last verdict {self.last.verdict} "
                f"({'; '.join(self.last.reasons) or 'no reasons'}); evaluation {done}, every "
                f"{inp.interval_seconds:g}s"
            )
            try:
                await workflow.wait_condition(
                    lambda: self.changed, timeout=timedelta(seconds=inp.interval_seconds)
                )
            except TimeoutError:
                pass
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(inp.model_copy(update={"evaluations": done}))

    @workflow.signal(name=CANARY_CHANGED_SIGNAL)
    def canary_changed(self) -> None:
        """Sent by the CLI when the canary changes: evaluate again now."""
        self.changed = True

    @workflow.query(name=CANARY_STATUS_QUERY)
    def status(self) -> CanaryEvaluation | None:
        return self.last


@workflow.defn(name="CanaryMonitor", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class AutoUpgradeCanaryMonitorWorkflow(CanaryMonitorWorkflow):
    """The same monitor for versioned workers (Worker Deployment Versioning, code canaries):
    not pinned to the build it started on but moved to the current version, so retiring an old
    build never strands it. (A versioning behavior on an unversioned worker is an error, hence
    two registrations of one workflow type; worker.py picks one.)"""

    @workflow.run
    async def run(self, inp: CanaryMonitorInput) -> CanaryEvaluation:
        return await super().run(inp)


__all__ = [
    "AutoUpgradeCanaryMonitorWorkflow",
    "CanaryMonitorWorkflow",
    "monitor_id",
]
