"""`baton demo` / `make demo`: a month-end close end to end on the local stack, narrated.

Seeds a month for the tenant, runs a worker in this process, starts the close through the typed
client, shows the approval request when policy asks for one, decides it as the approver (or waits
for you with --interactive), then prints the postings, the memo, the cost and the audit check,
with the Web UI link of the run.

Each run closes a new period (the newest month that is still open), because a closed period
cannot be closed twice; the demo database is .baton/baton.db.

Then, on the same worker, one step per other process, each a short function next to its CLI
module returning the lines it prints: the document-review auction (cli_auction.demo_auction), HR
onboarding (demo_onboarding, here), customer onboarding from a CRM event (cli_customer.
demo_customer) and a support case (cli_support.demo_support). Each uses fresh business keys,
approves what its run asks a human for (finish_run), is bounded (DEMO_STEP_TIMEOUT), and a
failure prints what failed and makes the demo exit 1 (run_step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.database import AccountingPeriod, Database
from activities.seed import seed_period
from baton import demo_runs
from baton.demo_runs import PEOPLE_DECIDE, approve_request, finish_run
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


def close_duration(description: Any, fallback: float) -> float:
    """Seconds from a finished run's start to its close, from its description; ``fallback``
    when the server did not say (it always does for a closed run)."""
    start, end = getattr(description, "start_time", None), getattr(description, "close_time", None)
    return (end - start).total_seconds() if start and end else fallback


async def demo_onboarding(client: Any, settings: Settings, runtime: Any, tenant: str) -> list[str]:
    """`baton demo`'s HR step: seed a new engineer (a fresh employee id per demo), onboard them,
    approve the privileged access as their manager (a worker must run)."""
    import time
    import uuid

    from activities.hr import seed_new_hire
    from workflows.contracts import NewHire, OnboardingInput

    hire = NewHire(
        tenant=tenant,
        employee_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}",
        full_name="Sam Okafor",
        role="engineer",
        department="engineering",
        country="DE",
        manager="maya",
        start_date=time.strftime("%Y-%m-%d"),
        id_document_verified=True,
    )
    await asyncio.to_thread(seed_new_hire, runtime.db, hire)
    inp = OnboardingInput(tenant=tenant, employee_id=hire.employee_id, requested_by="hana")
    handle = await client.start_onboarding(inp)
    approved = await finish_run(
        client, settings, handle.id, approver="maya", rationale="Needs production access."
    )
    result = await handle.result()
    granted = ", ".join(
        f"{g.system}:{g.name}"
        + (f" (approved by {', '.join(g.approved_by)})" if g.approved_by else "")
        for g in result.granted
    )
    return [
        f"8. HR onboarding of new hire {hire.employee_id} ({handle.id}): "
        f"{'; '.join(approved) or 'no approval needed'}",
        f"   granted {len(result.granted)} accesses: {granted}",
        f"   blackboard v{result.board_version}, {result.conflicts} stale writes retried, "
        f"{result.tokens} tokens, ${result.cost_usd:.4f}  -> baton audit show {handle.id}",
        f"   web UI: {settings.workflow_url(handle.id)}",
    ]


async def run_step(name: str, step: Coroutine[Any, Any, list[str]]) -> tuple[list[str], bool]:
    """One process of the demo: its lines, or what failed (never raises, never hangs)."""
    bound = demo_runs.DEMO_STEP_TIMEOUT + 30 + (3600 if PEOPLE_DECIDE.get() is not None else 0)
    try:
        return await asyncio.wait_for(step, bound), True
    except TimeoutError:
        return [f"{name} FAILED: no answer within {bound:.0f}s"], False
    except Exception as err:
        detail, cause = str(err), getattr(err, "cause", None)
        while cause is not None:  # a run's failure -> activity failure -> the error itself
            detail += f": {getattr(cause, 'message', cause)}"
            cause = getattr(cause, "cause", None)
        return [f"{name} FAILED: {type(err).__name__}: {detail}"], False


def _print_how_to_decide(
    workflow_id: str, request: Any, approver: str, inbox_url: str = ""
) -> None:
    print("   every pending approval, across runs:  baton approvals list --role finance-controller")
    print("   decide with any of:")
    if inbox_url:
        from baton.inbox.app import request_path

        print(f"     the approver inbox (sign in as {approver}): {inbox_url}")
        print(f"       this request: {inbox_url}{request_path(workflow_id, request.request_id)}")
    print(f"     baton approve {workflow_id} --approver {approver} --rationale 'reviewed'")
    print(
        f"     temporal workflow update execute --workflow-id {workflow_id} "
        f'--name decide_approval --input \'{{"request_id": '
        f'"{request.request_id}", "approver": "{approver}", "verdict": '
        f'"approve", "rationale": "reviewed", "action_digest": '
        f'"{request.action_digest}"}}\''
    )


async def run_demo(
    settings: Settings,
    *,
    tenant: str,
    approver: str,
    interactive: bool,
    step_timeout: float | None = None,
) -> int:
    from baton.cli_common import CliError, _client, _print_request
    from worker import build_runtime, build_worker

    if step_timeout is not None:
        if not step_timeout > 0:
            raise CliError(f"--step-timeout must be a number of seconds > 0, got {step_timeout}")
        demo_runs.DEMO_STEP_TIMEOUT = step_timeout  # finish_run and run_step read it
    close_limit = max(300.0, demo_runs.DEMO_STEP_TIMEOUT)
    client = await _client(settings)
    if interactive:
        PEOPLE_DECIDE.set(settings.inbox_url)
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
                    _print_how_to_decide(handle.id, request, approver, settings.inbox_url)
                    if interactive:
                        print("   waiting for your decision (Ctrl-C to stop waiting)...")
                if not interactive:
                    who, ack = await approve_request(
                        client,
                        settings,
                        handle.id,
                        request,
                        approver,
                        "Reviewed the adjusting entries against the bank statement.",
                    )
                    print(f"4. {who} approved: {ack.message}")
            if time.monotonic() - started > close_limit:
                raise CliError(
                    f"the close did not finish within {close_limit:.0f}s; see the web UI"
                )
            await asyncio.sleep(0.2)
        # the close's own duration, as Temporal recorded it (start to close of the run): the
        # later processes run before this line is printed and must not count
        close_seconds = close_duration(desc, time.monotonic() - started)
        try:
            result = await handle.result()
        except Exception as err:
            print(f"the close failed: {err}; compensations ran, see `baton audit show {handle.id}`")
            await runtime.close()
            return 1
        from activities.auction import catalogue_tiers
        from baton.cli_auction import demo_auction
        from baton.cli_customer import demo_customer
        from baton.cli_support import demo_support

        tiers = catalogue_tiers(runtime.router.catalogue) if runtime.router else None
        steps = [
            ("7. document review by auction", demo_auction(client, tenant, tiers)),
            ("8. HR onboarding", demo_onboarding(client, settings, runtime, tenant)),
            ("9. customer onboarding", demo_customer(client, settings, runtime, tenant)),
            ("10. support case", demo_support(client, settings, runtime, tenant)),
        ]
        more: list[str] = []
        failed = 0
        for name, step in steps:
            lines, ok = await run_step(name, step)
            more += lines
            failed += not ok

    total = sum(p.amount for p in result.posted)
    print(
        f"5. closed {result.tenant} {result.period} in {close_seconds:.1f}s: "
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
    print(f"   approver inbox: {settings.inbox_url} (every approval of the demo can be made there)")
    print("\n".join(more))
    await runtime.close()
    if failed:
        print(f"the demo FAILED: {failed} of {len(steps)} processes after the close did not finish")
    return 0 if report.ok and not failed else 1
