"""Contracts of the supervisor (workflows/supervisor.py, activities/supervisor.py).

Pydantic and the standard library only, like the rest of workflows/contracts/.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workflows.contracts.base import Contract

SUPERVISOR_WORKFLOW_ID = "baton-supervisor"
SUPERVISOR_SCHEDULE_ID = "baton-supervisor-keeper"
#: The policy asked before the supervisor acts on an anomaly (policy/supervisor/actions.rego).
SUPERVISOR_POLICY = "baton/supervisor/actions"

AnomalyKind = Literal[
    "error_rate", "error_rate_spike", "cost_per_txn", "cost_spike", "approval_backlog",
    "approval_sla",
]  # fmt: skip


class SupervisorThresholds(Contract):
    """When a KPI is an anomaly. Rates are fractions (0.2 = 20 %)."""

    error_rate_max: float = Field(0.2, ge=0, le=1, description="Error rate above this alerts.")
    cost_per_txn_max_usd: float | None = Field(
        None, ge=0, description="Cost per transaction above this alerts (unset: no limit)."
    )
    spike_factor: float = Field(
        2.0, gt=1, description="A KPI above baseline x this is a spike (error rate, cost)."
    )
    approvals_pending_max: int = Field(20, ge=0, description="More pending approvals alerts.")
    approval_age_max_seconds: float = Field(
        4 * 3600, gt=0, description="A pending approval older than this is an SLA breach."
    )
    min_runs: int = Field(3, ge=1, description="Rates of fewer closed runs are not judged.")


class ProcessBaseline(Contract):
    """A process's KPIs from the last check that found nothing wrong with it."""

    error_rate: float = 0.0
    cost_per_txn: float = 0.0


class SupervisorInput(Contract):
    """The supervisor's configuration, plus the state it carries across continue-as-new."""

    task_queue: str | None = Field(None, description="Runs watched (unset: every task queue).")
    window_seconds: int = Field(
        3600, ge=60, description="KPIs over the runs started this recently (seconds)."
    )
    interval_seconds: float = Field(300, gt=0, description="Time between two checks.")
    checks_per_run: int = Field(
        50, ge=1, description="Checks before the workflow continues as new (bounded history)."
    )
    thresholds: SupervisorThresholds = SupervisorThresholds()
    notify_roles: list[str] = Field(default=["operations"], min_length=1)
    act: bool = Field(True, description="May engage the kill switch when policy allows.")
    # carried state
    baselines: dict[str, ProcessBaseline] = {}
    open_anomalies: list[str] = Field(default=[], description="Keys alerted and not yet cleared.")
    generation: int = Field(0, ge=0, description="How often the supervisor continued as new.")


class Anomaly(Contract):
    key: str = Field(description="<kind>/<process>: one alert per key until it clears.")
    kind: AnomalyKind
    process: str
    value: float
    threshold: float
    runs: int = 0
    summary: str


class SupervisorCheckInput(Contract):
    task_queue: str | None = None
    window_seconds: int
    thresholds: SupervisorThresholds
    baselines: dict[str, ProcessBaseline] = {}


class SupervisorCheckResult(Contract):
    kpis: list[dict[str, object]] = Field(description="KPI rows per process (baton/kpi.py).")
    anomalies: list[Anomaly]
    baselines: dict[str, ProcessBaseline]


class SupervisorActInput(Contract):
    anomaly: Anomaly


class SupervisorActResult(Contract):
    verdict: str
    action: Literal["kill_switch.engaged", "none"]
    detail: str = ""


__all__ = [
    "Anomaly",
    "AnomalyKind",
    "ProcessBaseline",
    "SUPERVISOR_POLICY",
    "SUPERVISOR_SCHEDULE_ID",
    "SUPERVISOR_WORKFLOW_ID",
    "SupervisorActInput",
    "SupervisorActResult",
    "SupervisorCheckInput",
    "SupervisorCheckResult",
    "SupervisorInput",
    "SupervisorThresholds",
]
