"""Orphaned runs: what ended without completing or compensating, and what it left standing.

Owns: finding runs that closed TERMINATED, TIMED_OUT, FAILED or CANCELED (Temporal visibility)
and, in the database, the side effects of each that are still in force: journal postings not
reversed, entitlements granted and not revoked, customer actions committed and not reverted,
document reviews published and not retracted. Each effect names the compensation activity
that undoes it; the repair workflow (workflows/repair.py) runs exactly those, under the same
idempotency keys the run's own saga would have used (``<key>/reverse`` ...), so a repair and a
saga that got partway never undo anything twice.

A run owns the rows its workflow id wrote from its start until the next run of the same
workflow id started (an activity that was in flight when the run was terminated may still have
committed after the terminate: its row is the run's too).

Support ticket updates have no compensation (a reply sent to a customer cannot be unsent), so
they are not listed; shadow runs write only to the shadow outbox and leave nothing standing.

Must not: change any row itself (the compensation activities do), or decide what "repaired"
means differently from the sagas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from activities.auction import DocumentReviewRow
from activities.audit import AuditLedger, activity_event
from activities.customer import CrmCommit
from activities.database import Database, JournalPosting, as_utc, from_cents
from activities.hr import IdpEntitlement
from workflows.contracts.integrity import (
    DoctorInput,
    DoctorReport,
    FindEffectsInput,
    OrphanRun,
    RunEffects,
    StandingEffect,
)

#: visibility's names for the closed states that may leave effects standing
_ORPHAN_STATES = ("Terminated", "TimedOut", "Failed", "Canceled")


def standing_effects(
    db: Database, workflow_id: str, since: datetime, until: datetime | None = None
) -> list[StandingEffect]:
    """The side effects ``workflow_id`` made in [since, until) that are still in force."""

    def owned(moment: datetime) -> bool:
        moment = as_utc(moment)
        return moment >= since and (until is None or moment < until)

    reversed_ids = select(JournalPosting.reverses_posting_id).where(
        col(JournalPosting.reverses_posting_id).is_not(None)
    )
    #: kind, compensation, the rows still in force, and per row: (id, made at, summary)
    sources: list[tuple[str, str, Any, Callable[[Any], tuple[str, datetime, str]]]] = [
        (
            "journal_posting",
            "reverse_journal_entry",
            select(JournalPosting).where(
                JournalPosting.workflow_id == workflow_id,
                col(JournalPosting.reverses_posting_id).is_(None),
                col(JournalPosting.posting_id).not_in(reversed_ids),
            ),
            lambda p: (
                p.posting_id,
                p.posted_at,
                f"{p.entry_id}: {from_cents(p.amount_cents)} to {p.account} "
                f"({p.tenant} {p.period}) not reversed",
            ),
        ),
        (
            "entitlement",
            "revoke_entitlement",
            select(IdpEntitlement).where(
                IdpEntitlement.workflow_id == workflow_id, col(IdpEntitlement.revoked_at).is_(None)
            ),
            lambda g: (
                g.grant_id,
                g.granted_at,
                f"{g.system}:{g.name} granted to {g.employee_id} ({g.tenant}) not revoked",
            ),
        ),
        (
            "customer_action",
            "revert_customer_action",
            select(CrmCommit).where(
                CrmCommit.workflow_id == workflow_id, col(CrmCommit.reverted_at).is_(None)
            ),
            lambda c: (
                c.commit_id,
                c.committed_at,
                f"{c.kind} for {c.customer_id} ({c.tenant}): {c.summary} not reverted",
            ),
        ),
        (
            "document_review",
            "retract_review",
            select(DocumentReviewRow).where(
                DocumentReviewRow.workflow_id == workflow_id,
                col(DocumentReviewRow.retracted_at).is_(None),
            ),
            lambda r: (
                r.task_id,
                r.published_at,
                f"review of {r.doc_id} ({r.tier}, {r.verdict}) not retracted",
            ),
        ),
    ]
    effects: list[StandingEffect] = []
    with db.read_session() as s:
        for kind, compensation, statement, about in sources:
            for row in s.exec(statement):
                effect_id, made_at, summary = about(row)
                if owned(made_at):
                    effects.append(
                        StandingEffect(
                            kind=kind,
                            id=effect_id,
                            key=row.idempotency_key,
                            summary=summary,
                            at=as_utc(made_at),
                            compensation=compensation,
                        )
                    )
    return sorted(effects, key=lambda e: (e.at, e.kind, e.id))


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


async def _next_start(client: Client, execution: WorkflowExecution) -> datetime | None:
    """When the next run of the same workflow id started (the end of what this run owns)."""
    later = [
        run.start_time
        async for run in client.list_workflows(f"WorkflowId = '{_quoted(execution.id)}'")
        if run.start_time > execution.start_time
    ]
    return min(later) if later else None


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def run_effects(db: Database, client: Client, execution: WorkflowExecution) -> OrphanRun:
    # one second of slack: the database's clock and the server's may differ a little
    since = execution.start_time - timedelta(seconds=1)
    until = await _next_start(client, execution)
    effects = await asyncio.to_thread(standing_effects, db, execution.id, since, until)
    return OrphanRun(
        workflow_id=execution.id,
        run_id=execution.run_id,
        workflow_type=execution.workflow_type,
        status=_status_name(execution.status),
        task_queue=execution.task_queue,
        started_at=execution.start_time,
        closed_at=execution.close_time,
        effects=effects,
    )


async def find_orphans(db: Database, client: Client, inp: DoctorInput) -> DoctorReport:
    """Every run closed in the window without completing whose effects still stand."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=inp.since_seconds)
    states = " OR ".join(f"ExecutionStatus = '{s}'" for s in _ORPHAN_STATES)
    query = f"({states}) AND CloseTime > '{since.isoformat()}'"
    if inp.task_queue:
        query += f" AND TaskQueue = '{_quoted(inp.task_queue)}'"
    checked = 0
    orphans: list[OrphanRun] = []
    async for execution in client.list_workflows(query, limit=inp.limit):
        checked += 1
        if execution.workflow_type in ("BatonRepair", "BatonDoctor"):
            continue  # they only run compensations, which are idempotent: nothing of theirs stands
        run = await run_effects(db, client, execution)
        if run.effects:
            orphans.append(run)
    return DoctorReport(checked_runs=checked, orphans=orphans, checked_at=now)


async def effects_of(db: Database, client: Client, inp: FindEffectsInput) -> RunEffects:
    """The run a repair is about: its standing effects, or why it may not be repaired."""
    handle = client.get_workflow_handle(inp.workflow_id, run_id=inp.run_id or None)
    desc = await handle.describe()
    run = await run_effects(db, client, desc)
    refusal = None
    if desc.status == WorkflowExecutionStatus.RUNNING:
        refusal = (
            "it is still running: cancel it (its saga compensates) or terminate it, then repair"
        )
    elif desc.status == WorkflowExecutionStatus.COMPLETED:
        refusal = "it completed: its side effects are the process's result, not orphans"
    elif desc.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
        refusal = "it continued as new: repair the newest run of the workflow id"
    return RunEffects(run=run, refusal=refusal)


@dataclass(eq=False)  # one instance per worker: identity, not field equality
class IntegrityActivities:
    """The doctor's and the repair's reads, on the worker (its database, its Temporal client)."""

    db: Database
    ledger: AuditLedger

    @activity.defn(name="find_run_effects")
    async def find_run_effects(self, inp: FindEffectsInput) -> RunEffects:
        return await effects_of(self.db, activity.client(), inp)

    @activity.defn(name="find_orphans")
    async def find_orphans(self, inp: DoctorInput) -> DoctorReport:
        """The scheduled check: the report, and one audit row when it finds orphans."""
        report = await find_orphans(self.db, activity.client(), inp)
        if report.orphans:
            event = activity_event(
                "doctor",
                actor="baton:doctor",
                action="integrity.orphans_found",
                detail={
                    "orphans": [
                        {"workflow_id": o.workflow_id, "run_id": o.run_id, "status": o.status,
                         "effects": len(o.effects)}
                        for o in report.orphans
                    ]
                },
                rationale=f"{len(report.orphans)} run(s) ended leaving side effects standing; "
                "`baton repair WORKFLOW_ID` runs their compensations",
            )  # fmt: skip
            await asyncio.to_thread(self.ledger.append, [event])
        return report


__all__ = [
    "IntegrityActivities",
    "effects_of",
    "find_orphans",
    "run_effects",
    "standing_effects",
]
