"""The supervisor agent's activities: check the KPIs for anomalies, and act on one when policy
allows. The supervisor workflow (workflows/supervisor.py) runs them every interval.

- ``supervisor_check``: the KPI report (baton/kpi.py) over the runs started in the window, per
  process (versions together), plus the approval backlog (visibility + ledger, as the metrics
  gauges read it); anomalies against the configured thresholds and against each process's
  baseline (its KPIs at the last check that found nothing wrong with it). Audited as one
  ``supervisor.checked`` row with the KPIs and the anomalies.
- ``supervisor_act``: asks ``baton/supervisor/actions`` (policy/supervisor/actions.rego) whether
  to engage the kill switch for the misbehaving process; the decision is audited, and an allowed
  engagement writes its own ``kill_switch.engaged`` row (activities/kill_switch.py) by
  ``agent:supervisor``.

The supervisor is rule-based (thresholds, baselines, policy), not an LLM.

Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.audit import AuditLedger, activity_event, decision_event
from activities.kill_switch import KillSwitch, KillSwitchError
from activities.metrics import open_requests_since
from activities.policy import PolicyEngine, decide
from baton import kpi
from workflows import visibility
from workflows.contracts import PolicyQuery, digest
from workflows.contracts.supervisor import (
    SUPERVISOR_POLICY,
    Anomaly,
    ProcessBaseline,
    SupervisorActInput,
    SupervisorActResult,
    SupervisorCheckInput,
    SupervisorCheckResult,
    SupervisorThresholds,
)

ACTOR = "agent:supervisor"
ENGAGE = "kill_switch.engage"


def find_anomalies(
    rows: list[kpi.KpiRow],
    baselines: dict[str, ProcessBaseline],
    t: SupervisorThresholds,
    backlog: dict[str, tuple[int, float]],
) -> tuple[list[Anomaly], dict[str, ProcessBaseline]]:
    """Anomalies per process, and the baselines to carry (unchanged for a process with one)."""
    found: list[Anomaly] = []

    def add(kind: str, process: str, value: float, limit: float, runs: int, what: str) -> None:
        found.append(
            Anomaly(
                key=f"{kind}/{process}",
                kind=kind,  # type: ignore[arg-type]
                process=process,
                value=round(value, 6),
                threshold=round(limit, 6),
                runs=runs,
                summary=what,
            )
        )

    new_baselines = dict(baselines)
    for row in rows:
        p, closed = row.process, row.completed + row.failed + row.cancelled
        before = len(found)
        base = baselines.get(p)
        judged = closed >= t.min_runs
        if judged and row.error_rate is not None:
            if row.error_rate > t.error_rate_max:
                add(
                    "error_rate",
                    p,
                    row.error_rate,
                    t.error_rate_max,
                    closed,
                    f"{p}: error rate {row.error_rate:.0%} over {closed} closed runs "
                    f"(limit {t.error_rate_max:.0%})",
                )
            if base is not None:
                spike = max(base.error_rate * t.spike_factor, base.error_rate + 0.05)
                if row.error_rate > spike:
                    add(
                        "error_rate_spike",
                        p,
                        row.error_rate,
                        spike,
                        closed,
                        f"{p}: error rate {row.error_rate:.0%}, baseline {base.error_rate:.0%}",
                    )
        cost = row.cost_usd_per_txn
        if cost is not None and row.runs >= t.min_runs:
            if t.cost_per_txn_max_usd is not None and cost > t.cost_per_txn_max_usd:
                add(
                    "cost_per_txn",
                    p,
                    cost,
                    t.cost_per_txn_max_usd,
                    row.runs,
                    f"{p}: ${cost:.6f} per transaction (limit ${t.cost_per_txn_max_usd:.6f})",
                )
            if base and base.cost_per_txn > 0 and cost > base.cost_per_txn * t.spike_factor:
                add(
                    "cost_spike",
                    p,
                    cost,
                    base.cost_per_txn * t.spike_factor,
                    row.runs,
                    f"{p}: ${cost:.6f} per transaction, baseline ${base.cost_per_txn:.6f}",
                )
        if len(found) == before and judged:
            new_baselines[p] = ProcessBaseline(
                error_rate=row.error_rate or 0.0, cost_per_txn=cost or 0.0
            )
    for p, (pending, oldest) in sorted(backlog.items()):
        if pending > t.approvals_pending_max:
            add(
                "approval_backlog",
                p,
                pending,
                t.approvals_pending_max,
                pending,
                f"{p}: {pending} approvals pending (limit {t.approvals_pending_max})",
            )
        if oldest > t.approval_age_max_seconds:
            add(
                "approval_sla",
                p,
                oldest,
                t.approval_age_max_seconds,
                pending,
                f"{p}: an approval has waited {oldest / 3600:.1f} h "
                f"(SLA {t.approval_age_max_seconds / 3600:.1f} h)",
            )
    return found, new_baselines


class SupervisorActivities:
    def __init__(self, ledger: AuditLedger, policy: PolicyEngine, switch: KillSwitch) -> None:
        self.ledger = ledger
        self.policy = policy
        self.switch = switch

    @activity.defn(name="supervisor_check")
    async def supervisor_check(self, inp: SupervisorCheckInput) -> SupervisorCheckResult:
        client = activity.client()
        since = datetime.now(UTC) - timedelta(seconds=inp.window_seconds)
        runs = await kpi.gather(client, self.ledger.db, kpi.runs_query(since, None, inp.task_queue))
        # per process, every version together
        rows = kpi.compute([replace(r, version="all") for r in runs])
        backlog = await self._backlog(inp.task_queue)
        anomalies, baselines = find_anomalies(rows, inp.baselines, inp.thresholds, backlog)
        kpis = [asdict(r) for r in rows]
        event = activity_event(
            "supervisor/check",
            actor=ACTOR,
            action="supervisor.checked",
            detail={
                "window_seconds": inp.window_seconds,
                "task_queue": inp.task_queue,
                "kpis": kpis,
                "backlog": {p: {"pending": n, "oldest_s": a} for p, (n, a) in backlog.items()},
                "anomalies": [a.model_dump() for a in anomalies],
            },
            input_digest=digest(inp),
        )
        await asyncio.to_thread(self.ledger.append, [event])
        return SupervisorCheckResult(kpis=kpis, anomalies=anomalies, baselines=baselines)

    async def _backlog(self, task_queue: str | None) -> dict[str, tuple[int, float]]:
        """Per process: approvals pending now, and the oldest one's age in seconds."""
        query = f'{visibility.APPROVAL_STATE.name}="pending" AND ExecutionStatus="Running"'
        if task_queue:
            query += f" AND TaskQueue='{task_queue}'"
        waiting: dict[str, str] = {}
        async for wf in activity.client().list_workflows(query):
            waiting[wf.id] = wf.typed_search_attributes.get(visibility.PROCESS) or wf.workflow_type
        opened = await asyncio.to_thread(open_requests_since, self.ledger.db, list(waiting))
        now = datetime.now(UTC)
        backlog: dict[str, tuple[int, float]] = {}
        for wid, process in waiting.items():
            count, oldest = backlog.get(process, (0, 0.0))
            age = (now - opened[wid]).total_seconds() if wid in opened else 0.0
            backlog[process] = (count + 1, max(oldest, age))
        return backlog

    @activity.defn(name="supervisor_act")
    async def supervisor_act(self, inp: SupervisorActInput) -> SupervisorActResult:
        info = activity.info()
        anomaly = inp.anomaly
        scope = f"process:{anomaly.process}"
        query = PolicyQuery(
            policy=SUPERVISOR_POLICY,
            input={"action": ENGAGE, "scope": scope, "anomaly": anomaly.model_dump()},
            subject="supervisor",
            workflow_id=info.workflow_id or "",
        )
        decision_id = f"{info.workflow_id}/act/{info.activity_id}/supervisor/{info.attempt}"
        decision = await decide(self.policy, query, decision_id)
        await asyncio.to_thread(
            self.ledger.append,
            [
                decision_event(
                    f"supervisor/policy/{info.attempt}",
                    decision,
                    {
                        "subject": "supervisor",
                        "action": ENGAGE,
                        "scope": scope,
                        "anomaly": anomaly.key,
                    },
                    input_digest=digest(query.input),
                    actor=f"policy:{SUPERVISOR_POLICY}",
                )
            ],
        )
        if decision.verdict != "allow":
            return SupervisorActResult(
                verdict=decision.verdict, action="none", detail="; ".join(decision.reasons)
            )
        try:
            state = await asyncio.to_thread(
                self.switch.engage, scope, reason=anomaly.summary, by=ACTOR
            )
        except KillSwitchError as err:
            return SupervisorActResult(verdict="allow", action="none", detail=str(err))
        return SupervisorActResult(
            verdict="allow",
            action="kill_switch.engaged",
            detail=f"{state.scope} engaged ({state.mode}) by {state.engaged_by}",
        )


__all__ = [
    "ACTOR",
    "ENGAGE",
    "SupervisorActivities",
    "find_anomalies",
]
