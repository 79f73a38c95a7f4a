"""`baton demo` / `make demo`: a month-end close end to end on the local stack, narrated.

Seeds a month for the tenant, runs a worker in this process, starts the close through the typed
client, shows the approval request when policy asks for one, decides it as the approver (or waits
for you with --interactive), then prints the postings, the memo, the cost and the audit check,
with the Web UI link of the run.

Each run closes a new period (the newest month that is still open), because a closed period
cannot be closed twice; the demo database is .baton/baton.db.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.database import AccountingPeriod, Database
from activities.seed import seed_period
from baton.settings import Settings
from workflows.client import BatonClient
from workflows.contracts import FinanceCloseInput

FIRST_DEMO_PERIOD = (2026, 10)
# a close that ended in one of these may be run again (see the client's id reuse policy)
RETRYABLE_END_STATES = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
}


async def next_open_period(client: BatonClient, db: Database, tenant: str) -> str:
    """The newest period from 2026-10 backwards that no earlier demo closed or is closing.

    Checked in both places: the systems of record (closed periods) and Temporal (a completed or
    still running close of that period, which a fresh seed must not clobber).
    """
    year, month = FIRST_DEMO_PERIOD
    with db.session() as session:
        closed = {
            p.period
            for p in session.exec(
                select(AccountingPeriod).where(
                    AccountingPeriod.tenant == tenant, AccountingPeriod.status == "closed"
                )
            )
        }
    for _ in range(240):
        period = f"{year:04d}-{month:02d}"
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        if period in closed:
            continue
        workflow_id = FinanceCloseInput(tenant=tenant, period=period, requested_by="demo")
        try:
            described = await client.handle(workflow_id.workflow_id()).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return period
            raise
        if described.status in RETRYABLE_END_STATES:
            return period
    raise RuntimeError(f"every demo period of {tenant} is closed; remove .baton/ to start over")


def _print_how_to_decide(workflow_id: str, request: Any, approver: str) -> None:
    print("   every pending approval, across runs:  baton approvals list --role finance-controller")
    print("   decide with any of:")
    print(f"     baton approve {workflow_id} --approver {approver} --rationale 'reviewed'")
    print(
        f"     temporal workflow update execute --workflow-id {workflow_id} "
        f'--name decide_approval --input \'{{"request_id": '
        f'"{request.request_id}", "approver": "{approver}", "verdict": '
        f'"approve", "rationale": "reviewed", "action_digest": '
        f'"{request.action_digest}"}}\''
    )


async def run_demo(settings: Settings, *, tenant: str, approver: str, interactive: bool) -> int:
    from baton.cli import CliError, _client, _print_request
    from worker import build_runtime, build_worker

    client = await _client(settings)
    runtime = build_runtime(settings)
    period = await next_open_period(client, runtime.db, tenant)
    seeded = seed_period(runtime.db, tenant, period)
    print(
        f"1. seeded {tenant} {period}: {seeded.ledger_entries} ledger entries, "
        f"{seeded.bank_lines} bank lines  ({settings.database_url})"
    )

    worker = build_worker(
        client.client,
        runtime,
        task_queue=settings.task_queue,
        graceful_shutdown_timeout=timedelta(seconds=2),
    )
    async with worker:
        inp = FinanceCloseInput(tenant=tenant, period=period, requested_by="alice")
        handle = await client.start_finance_close(inp)
        print(f"2. started {handle.id}\n   web UI: {settings.workflow_url(handle.id)}")
        started = time.monotonic()
        stage = ""
        shown: set[str] = set()
        while True:
            desc = await handle.describe()
            if desc.status and desc.status.name != "RUNNING":
                break
            status = await client.status(handle.id)
            if status.stage != stage:
                stage = status.stage
                print(f"   ... {stage}")
            if status.pending:
                request = status.pending[0]
                if request.request_id not in shown:
                    shown.add(request.request_id)
                    print(
                        f"3. policy requires approval; posted so far: {len(status.posted)} "
                        "entries below the approval threshold"
                    )
                    _print_request(handle.id, request)
                    _print_how_to_decide(handle.id, request, approver)
                    if interactive:
                        print("   waiting for your decision (Ctrl-C to stop waiting)...")
                if not interactive:
                    voted = {v.approver for v in request.approvals}
                    who = next(
                        p
                        for p in [approver, *request.eligible_approvers]
                        if p in request.eligible_approvers and p not in voted
                    )
                    ack = await client.approve(
                        handle.id,
                        approver=who,
                        request_id=request.request_id,
                        action_digest=request.action_digest,
                        rationale="Reviewed the adjusting entries against the bank statement.",
                    )
                    print(f"4. {who} approved: {ack.message}")
            if time.monotonic() - started > 300:
                raise CliError("the close did not finish within 5 minutes; see the web UI")
            await asyncio.sleep(0.2)
        try:
            result = await handle.result()
        except Exception as err:
            print(f"the close failed: {err}; compensations ran, see `baton audit show {handle.id}`")
            await runtime.close()
            return 1

    total = sum(p.amount for p in result.posted)
    print(
        f"5. closed {result.tenant} {result.period} in {time.monotonic() - started:.1f}s: "
        f"{result.matched} matched of {result.bank_lines} bank lines, "
        f"{len(result.posted)} adjusting entries posted (net {total}), "
        f"{result.tokens} tokens, ${result.cost_usd:.4f}"
    )
    for p in result.posted:
        by = f" approved by {', '.join(p.approved_by)}" if p.approved_by else ""
        print(f"     {p.posting_id}  {p.entry_id:<16} {p.account:<26} {p.amount:>12}{by}")
    print("   close memo:")
    for line in result.memo.splitlines():
        print(f"     | {line}")
    trail = runtime.ledger.trail(handle.id)
    report = runtime.ledger.verify()
    print(
        f"6. audit trail: {len(trail)} records for this run; whole chain "
        f"{'verified OK' if report.ok else 'BROKEN'} ({report.rows_checked} rows)"
        f"  -> baton audit show {handle.id}"
    )
    print(f"   web UI: {settings.workflow_url(handle.id)}")
    await runtime.close()
    return 0 if report.ok else 1
