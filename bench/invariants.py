"""The invariants every fault test and the soak check on finance-close runs.

After whatever went wrong (workers killed, servers restarted, dependencies down, duplicate
signals, cancellations), for the runs a test started:

1. nothing is stuck: every run is closed (completed, failed or cancelled), within a deadline;
2. every run ended completed, or compensated: a run that did not complete has a reversal for
   every entry it posted (net zero per entry), and a completed run reversed nothing;
3. nothing was done twice: at most one posting per (run, entry) and at most one reversal per
   posting; the ledger's idempotency keys are unique;
4. the audit trail holds: the hash chain verifies, each run's trail has its start and exactly one
   end event, and every posting and reversal row in the ledger has its ``ledger.posted`` /
   ``ledger.reversed`` audit event (none lost, none twice).

``check()`` returns a report listing every violation; ``report.ok`` is what tests assert.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus

from activities.audit import AuditLedger, AuditRecord
from activities.database import Database, JournalPosting

CLOSED_OK = {WorkflowExecutionStatus.COMPLETED}
CLOSED_UNDONE = {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.CANCELED}
END_EVENTS = {"close.completed", "close.failed", "close.cancelled"}


@dataclass
class InvariantReport:
    runs: int = 0
    completed: int = 0
    compensated: int = 0
    postings: int = 0
    reversals: int = 0
    audit_rows: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        head = (
            f"{self.runs} runs: {self.completed} completed, {self.compensated} compensated; "
            f"{self.postings} postings, {self.reversals} reversals, {self.audit_rows} audit rows"
        )
        if self.ok:
            return head + "; all invariants hold"
        return head + f"; {len(self.violations)} VIOLATIONS:\n  " + "\n  ".join(self.violations)


async def wait_closed(
    client: Client, workflow_ids: Iterable[str], timeout: float
) -> dict[str, WorkflowExecutionStatus | None]:
    """Each run's final status; ``None`` (or RUNNING) for a run still open at the deadline."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, WorkflowExecutionStatus | None] = {}
    pending = list(workflow_ids)
    while pending:
        still = []
        for wid in pending:
            status = (await client.get_workflow_handle(wid).describe()).status
            statuses[wid] = status
            if status == WorkflowExecutionStatus.RUNNING:
                still.append(wid)
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return statuses


async def check(
    client: Client, db: Database, workflow_ids: Iterable[str], *, timeout: float = 120.0
) -> InvariantReport:
    ids = list(dict.fromkeys(workflow_ids))
    report = InvariantReport(runs=len(ids))
    statuses = await wait_closed(client, ids, timeout)
    with db.read_session() as session:
        postings = session.exec(
            select(JournalPosting).where(col(JournalPosting.workflow_id).in_(ids))
        ).all()
        records = session.exec(
            select(AuditRecord).where(col(AuditRecord.workflow_id).in_(ids))
        ).all()
        keys = session.exec(select(JournalPosting.idempotency_key)).all()
    report.audit_rows = len(records)
    v = report.violations

    dupes = [k for k, n in Counter(keys).items() if n > 1]
    if dupes:
        v.append(f"idempotency keys used twice in the ledger: {dupes[:5]}")

    by_run: dict[str, list[JournalPosting]] = defaultdict(list)
    for p in postings:
        by_run[p.workflow_id].append(p)
    events: dict[str, Counter[str]] = defaultdict(Counter)
    audited: Counter[str] = Counter()  # posting ids named by ledger.posted / ledger.reversed
    for r in records:
        events[r.workflow_id][r.action] += 1
        if r.action in ("ledger.posted", "ledger.reversed"):
            detail = json.loads(r.detail_json)
            audited[str(detail.get("posting_id") or detail.get("reversal_id") or "")] += 1

    for wid in ids:
        status = statuses.get(wid)
        rows = by_run.get(wid, [])
        originals = [p for p in rows if p.reverses_posting_id is None]
        reversals = [p for p in rows if p.reverses_posting_id is not None]
        report.postings += len(originals)
        report.reversals += len(reversals)
        per_entry = Counter(p.entry_id for p in originals)
        if twice := [e for e, n in per_entry.items() if n > 1]:
            v.append(f"{wid}: entries posted more than once: {twice}")
        undo = Counter(p.reverses_posting_id for p in reversals)
        if twice := [p for p, n in undo.items() if n > 1]:
            v.append(f"{wid}: postings reversed more than once: {twice}")
        if status in CLOSED_OK:
            report.completed += 1
            if reversals:
                v.append(f"{wid}: completed but reversed {len(reversals)} postings")
        elif status in CLOSED_UNDONE:
            report.compensated += 1
            if missing := [p.posting_id for p in originals if p.posting_id not in undo]:
                v.append(f"{wid}: ended {status.name} without reversing {missing}")
        else:
            name = status.name if status is not None else "unknown"
            v.append(f"{wid}: not closed ({name}) at the deadline: stuck")
        ends = sum(events[wid][e] for e in END_EVENTS)
        if status is not None and status != WorkflowExecutionStatus.RUNNING:
            if events[wid]["close.started"] != 1 or ends != 1:
                v.append(
                    f"{wid}: audit trail has {events[wid]['close.started']} start and "
                    f"{ends} end events (expected 1 and 1)"
                )
        for p in rows:
            if audited[p.posting_id] != 1:
                v.append(
                    f"{wid}: ledger row {p.posting_id} has {audited[p.posting_id]} audit events"
                )

    chain = AuditLedger(db).verify()
    if not chain.ok:
        v.extend(f"audit chain: {problem}" for problem in chain.problems[:10])
    return report
