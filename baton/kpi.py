"""The KPI report: what Baton's processes achieved, per process and version, from visibility
(which runs, their status, start and close) and the audit ledger (what happened inside them).

Definitions (docs/operations/observability.md repeats them for operators):

- **runs**: runs of a Baton process started in the window (``--since``), shadow runs excluded.
  *closed* = completed + failed + cancelled + terminated; running runs count only in ``runs``.
- **completion rate** = completed / closed. **error rate** = failed (incl. timed out) / closed.
  Cancelled and terminated runs are an operator's doing: in ``closed``, in neither numerator.
- **cycle time p50/p95**: close time minus start time of the completed runs (seconds).
- **human escalation rate** = runs that asked a human (at least one ``approval.requested`` row) /
  runs. **SLA escalations**: ``approval.escalated`` rows (an approver tier missed its SLA).
- **approval wait p50/p95**: from each ``approval.requested`` row to the row that closed that
  request (approved, rejected, amended, changes requested, expired); withdrawn requests (the run
  failed or was cancelled) had no human outcome and are left out.
- **compensation rate** = closed runs with at least one compensation row (a reversal, a revoke,
  a reopened period) / closed runs.
- **tokens / cost per transaction** = tokens and USD of the runs' agent calls (their audit rows,
  read by activities/audit_facts.py) / runs.
- **MTTD** (mean time to detect) = mean over failed runs of close time minus start time: how long
  a failing transaction was in flight (retries, timeouts, waits) before Baton declared it failed
  and started compensating.
- **MTTR** (mean time to recover) = mean over failed runs of the time from the failure (its close)
  to the close of the next run of the same process and tenant that completed: how long that
  tenant's process stayed broken. Failures not followed by a completed run yet are counted in
  ``unrecovered`` and left out of the mean.

Must not: write anything (it only reads).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus

from activities import audit_facts
from activities.audit import AuditRecord
from activities.database import Database, as_utc
from workflows import visibility
from workflows.contracts import PROCESS_BY_WORKFLOW_TYPE, STABLE_VERSION

FORMATS = ("table", "json", "csv")
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Visibility statuses by KPI class.
ERROR = {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT}
OPERATOR = {WorkflowExecutionStatus.CANCELED, WorkflowExecutionStatus.TERMINATED}


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` before ``now``, or an ISO date/time (UTC if naive)."""
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since: expected a duration like 24h, 7d, 2w or an ISO date like 2026-11-01, "
            f"got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class Run:
    """One run as visibility lists it, plus what its audit rows say."""

    workflow_id: str
    run_id: str
    process: str
    version: str
    tenant: str
    status: WorkflowExecutionStatus
    started: datetime
    closed: datetime | None
    tokens: int = 0
    cost_usd: float = 0.0
    approvals_requested: int = 0
    escalations: int = 0
    compensations: int = 0
    approval_waits: list[float] = field(default_factory=list)  # seconds, per closed request

    @property
    def cycle_seconds(self) -> float | None:
        return (self.closed - self.started).total_seconds() if self.closed else None


@dataclass
class KpiRow:
    """The KPIs of one process version (see the module docstring for each definition)."""

    process: str
    version: str
    runs: int
    running: int
    completed: int
    failed: int
    cancelled: int
    completion_rate: float | None
    error_rate: float | None
    cycle_time_p50_s: float | None
    cycle_time_p95_s: float | None
    human_escalation_rate: float | None
    sla_escalations: int
    approval_wait_p50_s: float | None
    approval_wait_p95_s: float | None
    compensation_rate: float | None
    tokens_per_txn: float | None
    cost_usd_per_txn: float | None
    mttd_s: float | None
    mttr_s: float | None
    unrecovered: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between the closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 3)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def compute(runs: Sequence[Run]) -> list[KpiRow]:
    """KPIs per (process, version) of ``runs`` (their audit facts already read)."""
    recovery = _recoveries(runs)
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.process, run.version)].append(run)
    rows = []
    for (process, version), group in sorted(groups.items()):
        closed = [r for r in group if r.status != WorkflowExecutionStatus.RUNNING]
        completed = [r for r in closed if r.status == WorkflowExecutionStatus.COMPLETED]
        failed = [r for r in closed if r.status in ERROR]
        cycles = [r.cycle_seconds for r in completed if r.cycle_seconds is not None]
        waits = [w for r in group for w in r.approval_waits]
        recovered = [recovery[id(r)] for r in failed if recovery.get(id(r)) is not None]
        rows.append(
            KpiRow(
                process=process,
                version=version,
                runs=len(group),
                running=len(group) - len(closed),
                completed=len(completed),
                failed=len(failed),
                cancelled=sum(r.status in OPERATOR for r in closed),
                completion_rate=_ratio(len(completed), len(closed)),
                error_rate=_ratio(len(failed), len(closed)),
                cycle_time_p50_s=percentile(cycles, 50),
                cycle_time_p95_s=percentile(cycles, 95),
                human_escalation_rate=_ratio(
                    sum(r.approvals_requested > 0 for r in group), len(group)
                ),
                sla_escalations=sum(r.escalations for r in group),
                approval_wait_p50_s=percentile(waits, 50),
                approval_wait_p95_s=percentile(waits, 95),
                compensation_rate=_ratio(sum(r.compensations > 0 for r in closed), len(closed)),
                tokens_per_txn=round(sum(r.tokens for r in group) / len(group), 2),
                cost_usd_per_txn=round(sum(r.cost_usd for r in group) / len(group), 8),
                mttd_s=_mean([r.cycle_seconds for r in failed if r.cycle_seconds is not None]),
                mttr_s=_mean([s for s in recovered if s is not None]),
                unrecovered=len(failed) - len(recovered),
            )
        )
    return rows


def _recoveries(runs: Sequence[Run]) -> dict[int, float | None]:
    """Seconds from each failed run's close to the next completed close of the same process
    and tenant (None: not recovered yet)."""
    done: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for r in runs:
        if r.status == WorkflowExecutionStatus.COMPLETED and r.closed is not None:
            done[(r.process, r.tenant)].append(r.closed)
    found: dict[int, float | None] = {}
    for r in runs:
        if r.status in ERROR and r.closed is not None:
            after = [t for t in done[(r.process, r.tenant)] if t > r.closed]
            found[id(r)] = (min(after) - r.closed).total_seconds() if after else None
    return found


# -- gathering ---------------------------------------------------------------------------------


def runs_query(since: datetime, process: str | None, task_queue: str | None) -> str:
    """The visibility query of the runs a report covers."""
    for name, value in (("--process", process), ("--task-queue", task_queue)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:/-]+", value):
            raise ValueError(f"{name}: letters, digits and _.:/- only, got {value!r}")
    moment = as_utc(since).isoformat().replace("+00:00", "Z")
    processes = [process] if process else sorted(set(PROCESS_BY_WORKFLOW_TYPE.values()))
    clauses = [
        f"{visibility.PROCESS.name} IN ({', '.join(repr(p) for p in processes)})",
        f"StartTime >= '{moment}'",
    ]
    if task_queue:
        clauses.append(f"TaskQueue = '{task_queue}'")
    return " AND ".join(clauses)


async def list_runs(client: Client, query: str) -> list[Run]:
    runs = []
    async for wf in client.list_workflows(query):
        attrs = wf.typed_search_attributes
        if attrs.get(visibility.SHADOW) or wf.status is None:
            continue  # a shadow run changes nothing: not a transaction
        runs.append(
            Run(
                workflow_id=wf.id,
                run_id=wf.run_id,
                process=attrs.get(visibility.PROCESS)
                or PROCESS_BY_WORKFLOW_TYPE.get(wf.workflow_type, wf.workflow_type),
                version=attrs.get(visibility.VERSION) or STABLE_VERSION,
                tenant=attrs.get(visibility.TENANT) or "",
                status=wf.status,
                started=as_utc(wf.start_time),
                closed=as_utc(wf.close_time) if wf.close_time else None,
            )
        )
    return runs


def read_audit_facts(db: Database, runs: Iterable[Run]) -> None:
    """Fill each run's tokens, cost, approvals, escalations and compensations from its rows."""
    by_key = {(r.workflow_id, r.run_id): r for r in runs}
    ids = sorted({wid for wid, _ in by_key})
    requested: dict[tuple[str, str, str], datetime] = {}
    with db.read_session() as session:
        for start in range(0, len(ids), 500):
            rows = session.exec(
                select(AuditRecord)
                .where(col(AuditRecord.workflow_id).in_(ids[start : start + 500]))
                .order_by(col(AuditRecord.position))
            ).all()
            for row in rows:
                run = by_key.get((row.workflow_id, row.run_id))
                if run is None:
                    continue
                _apply(run, row, requested)


def _apply(run: Run, row: AuditRecord, requested: dict[tuple[str, str, str], datetime]) -> None:
    usage = audit_facts.agent_usage(row.actor, row.action, row.model, row.tokens, row.cost_usd)
    if usage is not None:
        run.tokens += usage.tokens
        run.cost_usd += usage.cost_usd
    elif audit_facts.is_compensation(row.action):
        run.compensations += 1
    elif row.action.startswith("approval."):
        rid = str(json.loads(row.detail_json).get("request_id", ""))
        key = (row.workflow_id, row.run_id, rid)
        if row.action == audit_facts.APPROVAL_REQUESTED:
            run.approvals_requested += 1
            requested[key] = as_utc(row.recorded_at)
        elif row.action == audit_facts.APPROVAL_ESCALATED:
            run.escalations += 1
        elif row.action in audit_facts.APPROVAL_CLOSED and key in requested:
            opened = requested.pop(key)
            if audit_facts.APPROVAL_CLOSED[row.action] != "withdrawn":
                run.approval_waits.append((as_utc(row.recorded_at) - opened).total_seconds())


async def gather(client: Client, db: Database, query: str) -> list[Run]:
    """The runs ``query`` (see :func:`runs_query`) lists, with their audit facts read."""
    runs = await list_runs(client, query)
    await asyncio.to_thread(read_audit_facts, db, runs)
    return runs


# -- output ------------------------------------------------------------------------------------

_TABLE_COLUMNS = [
    ("process", "process"), ("version", "version"), ("runs", "runs"), ("completed", "done"),
    ("failed", "failed"), ("completion_rate", "compl%"), ("error_rate", "err%"),
    ("cycle_time_p50_s", "cycle p50"), ("cycle_time_p95_s", "cycle p95"),
    ("human_escalation_rate", "human%"), ("approval_wait_p50_s", "wait p50"),
    ("approval_wait_p95_s", "wait p95"), ("compensation_rate", "comp%"),
    ("tokens_per_txn", "tok/txn"), ("cost_usd_per_txn", "$/txn"), ("mttd_s", "MTTD"),
    ("mttr_s", "MTTR"), ("unrecovered", "unrec"),
]  # fmt: skip


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name.endswith("_rate"):
        return f"{value * 100:.1f}"
    if name == "cost_usd_per_txn":
        return f"{value:.6f}"
    if isinstance(value, float):
        return _seconds(value) if name.endswith("_s") else f"{value:g}"
    return str(value)


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.2f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def render(rows: Sequence[KpiRow], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    data = [asdict(r) for r in rows]
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(KpiRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(data)
        return out.getvalue().rstrip("\n")
    if not rows:
        return "no runs of a Baton process in the window"
    header, body = table(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    ]
    return "\n".join(lines)


def table(rows: Sequence[KpiRow]) -> tuple[list[str], list[list[str]]]:
    """The table's column titles and its cells (``render`` aligns them; the CLI draws them)."""
    header = [title for _, title in _TABLE_COLUMNS]
    return header, [[_cell(name, asdict(r)[name]) for name, _ in _TABLE_COLUMNS] for r in rows]


# -- charts ------------------------------------------------------------------------------------


def daily(runs: Sequence[Run]) -> dict[str, list[tuple[str, KpiRow]]]:
    """Per process: (UTC day, KPIs of that day's runs, every version together)."""
    days: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        days[(r.process, r.started.date().isoformat())].append(r)
    trend: dict[str, list[tuple[str, KpiRow]]] = defaultdict(list)
    for (process, day), group in sorted(days.items()):
        merged = [replace(r, version="all") for r in group]
        trend[process].append((day, compute(merged)[0]))
    return dict(trend)


#: Charts --plot writes: file name, title, (KPI field, label) lines.
CHARTS = [
    ("kpi_rates.png", "Completion, error, escalation and compensation rate per day", [
        ("completion_rate", "completion"), ("error_rate", "error"),
        ("human_escalation_rate", "human escalation"), ("compensation_rate", "compensation"),
    ]),
    ("kpi_cycle_time.png", "Cycle time per day (s)", [
        ("cycle_time_p50_s", "p50"), ("cycle_time_p95_s", "p95"),
    ]),
    ("kpi_approval_wait.png", "Approval wait per day (s)", [
        ("approval_wait_p50_s", "p50"), ("approval_wait_p95_s", "p95"),
    ]),
    ("kpi_cost.png", "Cost per transaction per day (USD)", [("cost_usd_per_txn", "USD/txn")]),
]  # fmt: skip


def plot(runs: Sequence[Run], directory: Path) -> list[Path]:
    """Write the trend charts (one line per process and KPI) as PNG files; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    trend = daily(runs)
    written = []
    for filename, title, lines in CHARTS:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for process, points in sorted(trend.items()):
            for name, label in lines:
                xs = [day for day, row in points if getattr(row, name) is not None]
                ys = [getattr(row, name) for _, row in points if getattr(row, name) is not None]
                if xs:
                    ax.plot(xs, ys, marker="o", label=f"{process} {label}")
        ax.set_title(title)
        ax.set_xlabel("day (UTC, by start)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data in the window", ha="center", transform=ax.transAxes)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = directory / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
