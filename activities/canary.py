"""Canaries: a new version of a process gets a share of new runs; worse KPIs roll it back.

A version here is data (``PROCESS_VERSIONS`` in workflows/contracts/base.py: a prompt variant
and/or a model route per agent role), so a canary needs no new worker build: every worker already
runs every version, and the run's input says which one it uses.

* **Configuration** lives in the database every worker and client shares (table ``canary``; rows
  are never deleted, so the table is the canaries' history; each start, change, rollback and
  promotion is also an audit row under ``baton:canary``). The newest row of a process is its
  current canary.
* **Assignment** (:meth:`Canary.assign`) is sticky per business key: the key (the workflow id) is
  hashed with the candidate's name to a number in [0, 1); below ``share`` means the candidate.
  Re-starting the same key gets the same version while the canary runs; raising the share only
  adds keys. The client records the assignment in the run's input, search attribute
  ``BatonVersion`` and memo, so a running run keeps its version whatever happens to the canary.
* **KPIs** (:func:`measure`) per version over the runs of the process on one task queue started
  since the canary started: error rate (failed or timed out / finished) and cost per run
  (``BatonCostUsd``) from Temporal visibility; escalations (runs with an ``approval.escalated``
  row) and approvals needed (runs with an ``approval.requested`` row) from the audit ledger.
  Cancelled and terminated runs are operator decisions, not the version's: they do not count.
* **Judgement** (:func:`judge`): once both arms have ``min_runs`` finished runs, the candidate is
  worse when its error rate or escalation rate exceeds the baseline's by more than the configured
  absolute margin, or its cost per run by more than the configured fraction.
* **Rollback** (:func:`evaluate`, run every few seconds by the CanaryMonitor workflow, or by
  ``baton canary evaluate``): state ``rolled_back``, share 0, an audit row with both arms' KPIs,
  the margins and the reasons. New runs then get the baseline.

Code canaries (``kind="code"``) use Temporal's Worker Deployment Versioning instead: the candidate
is a build id of a Worker Deployment, Temporal routes ``share`` of new (pinned) workflows to it as
the ramping version (sticky per workflow id) and records it in ``TemporalWorkerDeploymentVersion``;
the KPIs are grouped by that search attribute, and a rollback sets the ramp to 0%
(:func:`apply_routing`); a promotion makes the candidate the current version.

Must not: be imported by workflows except through ``imports_passed_through``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio import activity
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from activities.audit import AuditLedger, AuditRecord, operator_event
from activities.database import Database, as_utc, utcnow
from workflows import visibility
from workflows.contracts import (
    PROCESS_VERSIONS,
    STABLE_VERSION,
    ArmKpis,
    AuditEvent,
    CanaryConfig,
    CanaryEvaluateInput,
    CanaryEvaluation,
    CanaryStatus,
)
from workflows.errors import BatonError

AUDIT_WORKFLOW_ID = "baton:canary"
MONITOR_ACTOR = "baton:canary-monitor"
#: audit actions that count a run as escalated / as needing a human
ESCALATED = "approval.escalated"
APPROVAL_REQUESTED = "approval.requested"
ERROR_STATUSES = {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT}
#: comparisons of rates and fractions ignore differences below this (float noise)
EPSILON = 1e-9
#: Temporal's own search attribute: the Worker Deployment Version a versioned run is on
#: ("<deployment>:<build id>"; servers before 1.28 wrote "<deployment>.<build id>")
DEPLOYMENT_VERSION = SearchAttributeKey.for_keyword("TemporalWorkerDeploymentVersion")


class CanaryError(BatonError, ValueError):
    """Bad input to start/rollback/promote: the message names the field and the expectation."""


class CanaryRow(SQLModel, table=True):
    """One canary of a process (see module doc). The newest row per process is the current one."""

    __tablename__ = "canary"
    id: int | None = Field(default=None, primary_key=True)
    process: str = Field(index=True)
    kind: str = "data"  # data | code
    candidate: str
    baseline: str = STABLE_VERSION
    deployment: str | None = None  # code canaries: the Worker Deployment name
    share: float
    max_error_rate_increase: float
    max_escalation_rate_increase: float
    max_cost_increase: float
    min_runs: int
    state: str = "active"  # active | rolled_back | promoted
    revision: int = 1
    started_at: datetime = Field(default_factory=utcnow)
    started_by: str
    ended_at: datetime | None = None
    ended_by: str | None = None
    reason: str = ""
    last_evaluated_at: datetime | None = None
    last_evaluation_json: str = Field(default="", sa_column=Column(Text, nullable=False))


def bucket(process: str, candidate: str, business_key: str) -> float:
    """A stable number in [0, 1) for a business key under one candidate (salted by its name, so
    each canary samples different keys; the same key always lands in the same place)."""
    raw = hashlib.sha256(f"{process}|{candidate}|{business_key}".encode()).digest()
    return int.from_bytes(raw[:8], "big") / 2**64


def status_of(row: CanaryRow) -> CanaryStatus:
    return CanaryStatus(
        id=row.id or 0,
        process=row.process,
        kind=row.kind,  # type: ignore[arg-type]
        candidate=row.candidate,
        baseline=row.baseline,
        deployment=row.deployment,
        share=row.share,
        max_error_rate_increase=row.max_error_rate_increase,
        max_escalation_rate_increase=row.max_escalation_rate_increase,
        max_cost_increase=row.max_cost_increase,
        min_runs=row.min_runs,
        state=row.state,  # type: ignore[arg-type]
        revision=row.revision,
        started_at=as_utc(row.started_at),
        started_by=row.started_by,
        ended_at=as_utc(row.ended_at) if row.ended_at else None,
        ended_by=row.ended_by,
        reason=row.reason,
    )


MARGINS = ("share", "max_error_rate_increase", "max_escalation_rate_increase", "max_cost_increase")


class Canary:
    """The canaries of every process, in the shared database."""

    def __init__(self, db: Database, ledger: AuditLedger) -> None:
        self.db = db
        self.ledger = ledger
        CanaryRow.__table__.create(db.engine, checkfirst=True)  # type: ignore[attr-defined]

    # -- clients -------------------------------------------------------------------------------

    def assign(self, process: str, business_key: str) -> str:
        """The version a new run of ``process`` with ``business_key`` gets (sticky, see module)."""
        row = self._current(process)
        if row is None or row.kind == "code":  # a code canary is routed by Temporal
            return STABLE_VERSION
        if row.state == "promoted":
            chosen = row.candidate
        elif row.state == "active" and bucket(process, row.candidate, business_key) < row.share:
            chosen = row.candidate
        else:
            chosen = row.baseline
        # a version this build does not know (retired from the registry) is never handed out
        return chosen if chosen in PROCESS_VERSIONS.get(process, {}) else STABLE_VERSION

    def current(self, process: str) -> CanaryStatus | None:
        row = self._current(process)
        return status_of(row) if row is not None else None

    def history(self, process: str) -> list[CanaryStatus]:
        with self.db.read_session() as session:
            rows = session.exec(
                select(CanaryRow).where(CanaryRow.process == process).order_by(col(CanaryRow.id))
            ).all()
            return [status_of(r) for r in rows]

    def last_evaluation(self, process: str) -> CanaryEvaluation | None:
        row = self._current(process)
        if row is None or not row.last_evaluation_json:
            return None
        return CanaryEvaluation.model_validate_json(row.last_evaluation_json)

    # -- operators -----------------------------------------------------------------------------

    def start(self, config: CanaryConfig, *, by: str, reason: str) -> tuple[CanaryStatus, str]:
        """Start a canary, or change the share/margins of the active one of the same candidate.

        Returns the canary and what happened: 'started', 'updated' or 'unchanged' (starting the
        same canary again changes nothing). Another candidate while one is active is refused.
        Without an explicit baseline, a promoted canary's candidate is the new baseline."""
        if not by.strip():
            raise CanaryError("by: name who starts the canary")
        if config.kind == "code" and "baseline" not in config.model_fields_set:
            raise CanaryError(
                "baseline: a code canary compares with a build id (the deployment's current "
                "version; `baton canary start` looks it up)"
            )
        with self.db.session() as session:
            row = self._current_in(session, config.process, lock=True)
            baseline = config.baseline
            inherit = row is not None and row.kind == "data" and config.kind == "data"
            if "baseline" not in config.model_fields_set and row is not None and inherit:
                baseline = row.candidate if row.state == "promoted" else row.baseline
                if baseline == config.candidate:
                    baseline = STABLE_VERSION
            if row is not None and row.state == "active":
                same = (row.kind, row.candidate, row.baseline, row.deployment)
                if same != (config.kind, config.candidate, baseline, config.deployment):
                    raise CanaryError(
                        f"candidate: {config.process} already has an active {row.kind} canary "
                        f"of {row.candidate!r} against {row.baseline!r} (share {row.share:g}); "
                        "roll it back or promote it first"
                    )
                changes = {
                    name: (getattr(row, name), getattr(config, name))
                    for name in (*MARGINS, "min_runs")
                    if getattr(row, name) != getattr(config, name)
                }
                if not changes:
                    return status_of(row), "unchanged"
                for name, (_, new) in changes.items():
                    setattr(row, name, new)
                row.revision += 1
                session.add(row)
                session.flush()
                detail = {name: {"from": old, "to": new} for name, (old, new) in changes.items()}
                self.ledger.append_in(session, [_event(row, "updated", by, reason, detail)])
                return status_of(row), "updated"
            row = CanaryRow(
                **config.model_dump(exclude={"baseline"}),  # the settings, as configured
                baseline=baseline,
                started_by=by,
                reason=reason.strip(),
            )
            session.add(row)
            session.flush()
            status = status_of(row)
            settings = status.model_dump(
                mode="json",
                include={"kind", "candidate", "baseline", "deployment", "min_runs", *MARGINS},
            )
            self.ledger.append_in(session, [_event(row, "started", by, reason, settings)])
            return status, "started"

    def rollback(
        self,
        process: str,
        *,
        reason: str,
        by: str,
        evaluation: CanaryEvaluation | None = None,
        canary_id: int | None = None,
    ) -> CanaryStatus | None:
        """Roll back the active canary of ``process`` (share 0: new runs get the baseline).

        None when there is no active canary (or, with ``canary_id``, when the active one is
        another: an automatic rollback never hits a canary started after it measured)."""
        return self._end(process, "rolled_back", 0.0, reason, by, evaluation, canary_id)

    def promote(self, process: str, *, reason: str, by: str) -> CanaryStatus | None:
        """The candidate gets every new run from now on; the canary is over."""
        return self._end(process, "promoted", 1.0, reason, by, None, None)

    # -- the monitor ---------------------------------------------------------------------------

    def record_evaluation(self, canary_id: int, evaluation: CanaryEvaluation) -> None:
        with self.db.session() as session:
            row = session.get(CanaryRow, canary_id)
            if row is not None:
                row.last_evaluated_at = evaluation.evaluated_at
                row.last_evaluation_json = evaluation.model_dump_json()
                session.add(row)

    # -- internals -----------------------------------------------------------------------------

    def _end(
        self,
        process: str,
        state: str,
        share: float,
        reason: str,
        by: str,
        evaluation: CanaryEvaluation | None,
        canary_id: int | None,
    ) -> CanaryStatus | None:
        if not reason.strip():
            raise CanaryError("reason: say why (it goes to the audit trail)")
        with self.db.session() as session:
            row = self._current_in(session, process, lock=True)
            if row is None or row.state != "active" or canary_id not in (None, row.id):
                return None
            was = row.share
            row.state, row.share = state, share
            row.ended_at, row.ended_by, row.reason = utcnow(), by, reason.strip()
            session.add(row)
            session.flush()
            detail: dict[str, object] = {
                "kind": row.kind,
                "deployment": row.deployment,
                "candidate": row.candidate,
                "baseline": row.baseline,
                "share_was": was,
                "margins": {
                    "max_error_rate_increase": row.max_error_rate_increase,
                    "max_escalation_rate_increase": row.max_escalation_rate_increase,
                    "max_cost_increase": row.max_cost_increase,
                    "min_runs": row.min_runs,
                },
            }
            if evaluation is not None:
                detail["verdict"] = evaluation.verdict
                detail["reasons"] = evaluation.reasons
                detail["kpis"] = {
                    arm.version: arm.model_dump(mode="json", exclude={"version"})
                    for arm in (evaluation.baseline, evaluation.candidate)
                    if arm is not None
                }
            self.ledger.append_in(session, [_event(row, state, by, reason, detail)])
            return status_of(row)

    def _current(self, process: str) -> CanaryRow | None:
        with self.db.read_session() as session:
            return self._current_in(session, process)

    @staticmethod
    def _current_in(session: Session, process: str, *, lock: bool = False) -> CanaryRow | None:
        query = (
            select(CanaryRow)
            .where(CanaryRow.process == process)
            .order_by(col(CanaryRow.id).desc())
            .limit(1)
        )
        if lock:  # PostgreSQL: row lock; SQLite: the transaction already holds the write lock
            query = query.with_for_update()
        return session.exec(query).first()


def _event(
    row: CanaryRow, step: str, by: str, reason: str, detail: Mapping[str, object]
) -> AuditEvent:
    return operator_event(
        AUDIT_WORKFLOW_ID,
        f"{row.id}/{row.revision}/{step}",
        by=by,
        action=f"canary.{step}",
        detail={"process": row.process, "canary_id": row.id, **detail},
        reason=reason,
    )


# -- KPIs --------------------------------------------------------------------------------------


@dataclass
class _Arm:
    version: str
    completed: int = 0
    failed: int = 0
    running: int = 0
    cost_usd: float = 0.0
    finished: list[tuple[str, str]] = field(default_factory=list)  # (workflow id, run id)

    def kpis(self, marked: dict[str, set[tuple[str, str]]]) -> ArmKpis:
        runs = self.completed + self.failed
        escalations = sum(1 for key in self.finished if key in marked[ESCALATED])
        approvals = sum(1 for key in self.finished if key in marked[APPROVAL_REQUESTED])
        return ArmKpis(
            version=self.version,
            runs=runs,
            completed=self.completed,
            failed=self.failed,
            running=self.running,
            error_rate=_ratio(self.failed, runs),
            escalations=escalations,
            escalation_rate=_ratio(escalations, runs),
            approvals=approvals,
            approval_rate=_ratio(approvals, runs),
            cost_usd=round(self.cost_usd, 8),
            cost_per_run=round(self.cost_usd / runs, 8) if runs else 0.0,
        )


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def runs_query(process: str, task_queue: str, since: datetime) -> str:
    """The visibility query of the runs a canary's KPIs are computed from."""
    for value in (process, task_queue):
        if "'" in value or '"' in value or "\\" in value:
            raise CanaryError(f"{value!r} may not contain quotes or backslashes")
    moment = as_utc(since).isoformat().replace("+00:00", "Z")
    return (
        f"{visibility.PROCESS.name} = '{process}' AND TaskQueue = '{task_queue}' "
        f"AND StartTime >= '{moment}'"
    )


async def measure(
    client: Client, ledger: AuditLedger, canary: CanaryStatus, task_queue: str
) -> tuple[ArmKpis, ArmKpis]:
    """(baseline, candidate) KPIs over the process's runs on ``task_queue`` since the canary
    started. Runs of other versions and shadow runs do not count."""
    arms = {v: _Arm(v) for v in (canary.baseline, canary.candidate)}
    async for run in client.list_workflows(
        runs_query(canary.process, task_queue, canary.started_at)
    ):
        attrs = run.typed_search_attributes
        if canary.kind == "code":
            arm = arms.get(_build_id(attrs.get(DEPLOYMENT_VERSION), canary.deployment or ""))
        else:
            arm = arms.get(attrs.get(visibility.VERSION) or STABLE_VERSION)
        if arm is None or attrs.get(visibility.SHADOW):
            continue
        if run.status == WorkflowExecutionStatus.RUNNING:
            arm.running += 1
            continue
        if run.status == WorkflowExecutionStatus.COMPLETED:
            arm.completed += 1
        elif run.status in ERROR_STATUSES:
            arm.failed += 1
        else:  # cancelled, terminated, continued-as-new: not the version's doing
            continue
        arm.cost_usd += attrs.get(visibility.COST_USD) or 0.0
        arm.finished.append((run.id, run.run_id))
    keys = [key for arm in arms.values() for key in arm.finished]
    marked = await asyncio.to_thread(_marked_runs, ledger, keys)
    return arms[canary.baseline].kpis(marked), arms[canary.candidate].kpis(marked)


def _build_id(version: str | None, deployment: str) -> str:
    """The build id of a run's Worker Deployment Version if it is of ``deployment``, else ''."""
    for separator in (":", "."):
        if version and version.startswith(deployment + separator):
            return version[len(deployment) + 1 :]
    return ""


def _marked_runs(
    ledger: AuditLedger, keys: Iterable[tuple[str, str]]
) -> dict[str, set[tuple[str, str]]]:
    """Which of these runs have an escalation / approval request row in the audit ledger."""
    wanted = set(keys)
    marked: dict[str, set[tuple[str, str]]] = {ESCALATED: set(), APPROVAL_REQUESTED: set()}
    ids = sorted({workflow_id for workflow_id, _ in wanted})
    with ledger.db.read_session() as session:
        for start in range(0, len(ids), 500):
            rows = session.exec(
                select(AuditRecord.workflow_id, AuditRecord.run_id, AuditRecord.action).where(
                    col(AuditRecord.workflow_id).in_(ids[start : start + 500]),
                    col(AuditRecord.action).in_(list(marked)),
                )
            ).all()
            for workflow_id, run_id, action in rows:
                if (workflow_id, run_id) in wanted:
                    marked[action].add((workflow_id, run_id))
    return marked


def judge(canary: CanaryStatus, baseline: ArmKpis, candidate: ArmKpis) -> tuple[str, list[str]]:
    """('insufficient_data' | 'healthy' | 'worse', reasons). Each reason names the KPI, both
    values, the difference and the margin it exceeded (or, when healthy, stayed within)."""
    short = [
        f"{arm.version} has {arm.runs} of {canary.min_runs} finished runs"
        for arm in (baseline, candidate)
        if arm.runs < canary.min_runs
    ]
    if short:
        return "insufficient_data", short
    worse: list[str] = []
    within: list[str] = []
    for name, margin in (
        ("error_rate", canary.max_error_rate_increase),
        ("escalation_rate", canary.max_escalation_rate_increase),
    ):
        ours, theirs = getattr(candidate, name), getattr(baseline, name)
        text = (
            f"{name.replace('_', ' ')} {ours:.1%} vs {theirs:.1%} ({ours - theirs:+.1%}, "
            f"margin +{margin:.1%})"
        )
        (worse if ours - theirs > margin + EPSILON else within).append(text)
    ours, theirs = candidate.cost_per_run, baseline.cost_per_run
    margin = canary.max_cost_increase
    if theirs > 0:
        increase = ours / theirs - 1
        text = f"cost per run ${ours:.6f} vs ${theirs:.6f} ({increase:+.1%}, margin +{margin:.1%})"
        (worse if increase > margin + EPSILON else within).append(text)
    elif ours > EPSILON:
        worse.append(f"cost per run ${ours:.6f} vs $0 on {baseline.version} (margin +{margin:.1%})")
    else:
        within.append("cost per run $0 on both")
    return ("worse", worse) if worse else ("healthy", within)


async def evaluate(
    canary: Canary, client: Client, process: str, task_queue: str, *, act: bool = True
) -> CanaryEvaluation:
    """Measure and judge the canary of ``process``; roll it back when worse (with ``act``)."""
    status = await asyncio.to_thread(canary.current, process)
    now = utcnow()
    if status is None:
        return CanaryEvaluation(process=process, canary=None, verdict="no_canary", evaluated_at=now)
    if status.state != "active":
        if act:  # a code canary ended by a step that failed before Temporal heard of it
            await apply_routing(client, status)
        return CanaryEvaluation(
            process=process, canary=status, verdict="inactive", evaluated_at=now
        )
    baseline, candidate = await measure(client, canary.ledger, status, task_queue)
    verdict, reasons = judge(status, baseline, candidate)
    evaluation = CanaryEvaluation(
        process=process,
        canary=status,
        baseline=baseline,
        candidate=candidate,
        verdict=verdict,  # type: ignore[arg-type]
        reasons=reasons,
        evaluated_at=now,
    )
    if act and verdict == "worse":
        rolled = await asyncio.to_thread(
            canary.rollback,
            process,
            reason=f"automatic rollback: {status.candidate} is worse than {status.baseline}: "
            + "; ".join(reasons),
            by=MONITOR_ACTOR,
            evaluation=evaluation,
            canary_id=status.id,
        )
        if rolled is not None:
            evaluation = evaluation.model_copy(update={"canary": rolled, "action": "rolled_back"})
            await apply_routing(client, rolled)
    await asyncio.to_thread(canary.record_evaluation, status.id, evaluation)
    return evaluation


# -- Temporal's side of code canaries (Worker Deployment Versioning) ----------------------------

IDENTITY = "baton-canary"


async def routing(client: Client, deployment: str) -> tuple[str | None, str | None, float]:
    """(current build id, ramping build id, ramping percentage) of ``deployment``; nothing for
    a deployment Temporal has not seen (no worker of it ever polled)."""
    try:
        described = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None, None, 0.0
        raise
    config = described.worker_deployment_info.routing_config
    return (
        config.current_deployment_version.build_id or None,
        config.ramping_deployment_version.build_id or None,
        config.ramping_version_percentage,
    )


async def current_build(client: Client, deployment: str) -> str | None:
    """The build id of ``deployment``'s current version (None: unversioned or none set)."""
    return (await routing(client, deployment))[0]


async def apply_routing(client: Client, status: CanaryStatus) -> str | None:
    """Make Temporal route a code canary's deployment as ``status`` says; idempotent. What it
    did, or None for a data canary (Baton's client routes those).

    active: the candidate ramps at ``share``; rolled back: it ramps at 0% (runs already pinned to
    it finish there; keep its workers until they drain); promoted: it becomes current. An ended
    canary only touches the deployment while its candidate is still the ramping version, so a
    later ramp an operator set by hand is never undone."""
    if status.kind != "code" or not status.deployment:
        return None
    service, namespace, deployment = client.workflow_service, client.namespace, status.deployment
    if status.state != "active":
        _, ramping, percentage = await routing(client, deployment)
        if ramping != status.candidate or (status.state == "rolled_back" and not percentage):
            return None
    version: dict[str, Any] = {  # the candidate at the deployment, as both requests name it
        "namespace": namespace,
        "deployment_name": deployment,
        "build_id": status.candidate,
        "identity": IDENTITY,
    }
    if status.state == "promoted":
        await service.set_worker_deployment_current_version(
            SetWorkerDeploymentCurrentVersionRequest(**version)
        )
        return f"{deployment}:{status.candidate} is the current version"
    percentage = round(status.share * 100, 3) if status.state == "active" else 0.0
    await service.set_worker_deployment_ramping_version(
        SetWorkerDeploymentRampingVersionRequest(**version, percentage=percentage)
    )
    return f"{deployment}:{status.candidate} ramps at {percentage:g}%"


class CanaryActivities:
    """What the CanaryMonitor workflow runs every interval."""

    def __init__(self, canary: Canary) -> None:
        self.canary = canary

    @activity.defn(name="evaluate_canary")
    async def evaluate_canary(self, inp: CanaryEvaluateInput) -> CanaryEvaluation:
        # the worker's own client: visibility lists the runs the KPIs are computed from
        return await evaluate(
            self.canary, activity.client(), inp.process, inp.task_queue, act=inp.act
        )


__all__ = [
    "APPROVAL_REQUESTED",
    "AUDIT_WORKFLOW_ID",
    "Canary",
    "CanaryActivities",
    "CanaryError",
    "CanaryRow",
    "DEPLOYMENT_VERSION",
    "EPSILON",
    "ERROR_STATUSES",
    "ESCALATED",
    "IDENTITY",
    "MARGINS",
    "MONITOR_ACTOR",
    "apply_routing",
    "bucket",
    "current_build",
    "evaluate",
    "judge",
    "measure",
    "routing",
    "runs_query",
    "status_of",
]
