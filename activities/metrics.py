"""The worker's own metrics: counted from the audit rows it writes, and gauges read from state.

- :func:`observe_audit` is the audit ledger's observer (``AuditLedger.observer``): every row the
  ledger actually writes (a retried write of the same row is not counted again) is read by
  activities/audit_facts.py and counted on ``activity.metric_meter()``: agent calls, tokens and
  cost per agent and model, policy decisions and denies per policy. Rows written outside an
  activity (the CLI engaging the kill switch) have no worker meter and are not counted here.
  Rows are counted when inserted, inside the writer's transaction: a transaction that then rolls
  back (its side effect failed) was still counted once; the ledger stays the record.
- :class:`StateGauges` sets gauges from state every few seconds: approvals pending and the age of
  the oldest (visibility: running runs with ``BatonApprovalState="pending"`` on this worker's task
  queue; the ledger: when each open request was made) and the kill switch's engagements.

Names: workflows/telemetry.py. Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.common import MetricMeter

from activities import audit_facts
from activities.audit import AuditRecord
from activities.database import Database, as_utc
from activities.kill_switch import KillSwitch
from workflows import telemetry as names
from workflows import visibility
from workflows.contracts import PROCESS_BY_WORKFLOW_TYPE, AuditEvent

log = logging.getLogger("baton.metrics")


def observe_audit(events: Iterable[AuditEvent]) -> None:
    """Count what newly written audit rows say (the ledger calls this; it never raises)."""
    if not activity.in_activity():
        return
    try:
        meter = activity.metric_meter()
        for e in events:
            usage = audit_facts.agent_usage(e.actor, e.action, e.model, e.tokens, e.cost_usd)
            if usage is not None:
                labels = {"agent": usage.agent, "model": usage.model}
                meter.create_counter(names.AGENT_CALLS, "agent (LLM) calls that answered").add(
                    1, labels
                )
                meter.create_counter(names.AGENT_TOKENS, "tokens used by agent calls").add(
                    usage.tokens, labels
                )
                meter.create_histogram_float(
                    names.AGENT_COST_USD, "USD per agent call (the sum is the spend)", "USD"
                ).record(usage.cost_usd, labels)
                continue
            verdict = audit_facts.policy_verdict(e.actor, e.action)
            if verdict is not None:
                labels = {"policy": verdict.policy, "verdict": verdict.verdict}
                meter.create_counter(names.POLICY_DECISIONS, "policy decisions, by verdict").add(
                    1, labels
                )
                if verdict.verdict == "deny":
                    meter.create_counter(names.POLICY_DENIES, "policy denies").add(
                        1, {"policy": verdict.policy}
                    )
    except Exception:  # metrics must never fail the audited side effect
        log.exception("could not count audit rows in metrics")


@dataclass
class StateSnapshot:
    """What the gauges were set to (returned for tests and logs)."""

    pending: dict[str, int] = field(default_factory=dict)  # process -> approvals pending
    oldest_seconds: dict[str, float] = field(default_factory=dict)  # process -> oldest's age
    kill_switch: dict[str, int] = field(default_factory=dict)  # scope -> 1 engaged / 0 cleared


class StateGauges:
    """Gauges read from visibility, the ledger and the kill switch, refreshed every ``interval``."""

    def __init__(
        self,
        meter: MetricMeter,
        client: Client,
        db: Database,
        switch: KillSwitch,
        *,
        task_queue: str,
        interval_seconds: float = 15.0,
    ) -> None:
        self.client = client
        self.db = db
        self.switch = switch
        self.task_queue = task_queue
        self.interval_seconds = interval_seconds
        self._pending = meter.create_gauge(names.APPROVALS_PENDING, "approval requests pending")
        self._oldest = meter.create_gauge_float(
            names.APPROVAL_OLDEST_PENDING_SECONDS, "age of the oldest pending approval", "s"
        )
        self._engaged = meter.create_gauge(
            names.KILL_SWITCH_ENGAGED, "1 while the kill switch is engaged for the scope"
        )
        self._scopes: set[str] = set()

    async def collect(self) -> StateSnapshot:
        snap = StateSnapshot()
        processes = set(PROCESS_BY_WORKFLOW_TYPE.values())
        waiting: dict[str, str] = {}  # workflow id -> process
        query = (
            f'{visibility.APPROVAL_STATE.name}="pending" AND ExecutionStatus="Running" '
            f'AND TaskQueue="{self.task_queue}"'
        )
        async for wf in self.client.list_workflows(query):
            process = wf.typed_search_attributes.get(visibility.PROCESS) or wf.workflow_type
            waiting[wf.id] = process
            processes.add(process)
        opened = await asyncio.to_thread(open_requests_since, self.db, list(waiting))
        now = datetime.now(UTC)
        for process in sorted(processes):
            ids = [wid for wid, p in waiting.items() if p == process]
            ages = [(now - opened[wid]).total_seconds() for wid in ids if wid in opened]
            snap.pending[process] = len(ids)
            snap.oldest_seconds[process] = round(max(ages), 3) if ages else 0.0
            self._pending.set(snap.pending[process], {"process": process})
            self._oldest.set(snap.oldest_seconds[process], {"process": process})
        engaged = {s.scope for s in await asyncio.to_thread(self.switch.active)}
        self._scopes |= engaged | {"global"}
        for scope in sorted(self._scopes):
            snap.kill_switch[scope] = int(scope in engaged)
            self._engaged.set(snap.kill_switch[scope], {"scope": scope})
        return snap

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until ``stop`` is set; a failed refresh is logged and tried again."""
        while not stop.is_set():
            try:
                await self.collect()
            except Exception:
                log.exception("could not refresh the state gauges")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds)
            except TimeoutError:
                pass


def open_requests_since(db: Database, workflow_ids: list[str]) -> dict[str, datetime]:
    """For each workflow, when its oldest still-open approval request was made (ledger)."""
    if not workflow_ids:
        return {}
    with db.read_session() as session:
        rows = session.exec(
            select(AuditRecord)
            .where(col(AuditRecord.workflow_id).in_(workflow_ids))
            .where(col(AuditRecord.action).startswith("approval."))
            .order_by(col(AuditRecord.position))
        ).all()
    requested: dict[tuple[str, str], datetime] = {}
    for row in rows:
        rid = str(json.loads(row.detail_json).get("request_id", ""))
        if row.action == audit_facts.APPROVAL_REQUESTED:
            requested[(row.workflow_id, rid)] = as_utc(row.recorded_at)
        elif row.action in audit_facts.APPROVAL_CLOSED:
            requested.pop((row.workflow_id, rid), None)
    oldest: dict[str, datetime] = {}
    for (wid, _), at in requested.items():
        oldest[wid] = min(at, oldest.get(wid, at))
    return oldest


__all__ = [
    "StateGauges",
    "StateSnapshot",
    "log",
    "observe_audit",
    "open_requests_since",
]
