"""`baton demo` / `make demo`: a month-end close end to end on the local stack, narrated.

Seeds a month for the tenant, runs a worker in this process, starts the close through the typed
client, shows the approval request when policy asks for one, decides it as the approver (or waits
for you with --interactive), then prints the postings, the memo, the cost and the audit check,
with the Web UI link of the run.

Each run closes a new period (the newest month that is still open), because a closed period
cannot be closed twice; the demo database is .baton/baton.db.

Then, on the same worker, one step per other process, each a short function next to its CLI
module returning the lines it prints: the document-review auction (cli_auction.demo_auction), HR
onboarding (cli.demo_onboarding), customer onboarding from a CRM event (cli_customer.
demo_customer) and a support case (cli_support.demo_support). Each uses fresh business keys,
approves what its run asks a human for (finish_run), is bounded (DEMO_STEP_TIMEOUT), and a
failure prints what failed and makes the demo exit 1 (run_step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.database import AccountingPeriod, Database
from activities.seed import seed_period
from baton.settings import Settings
from workflows.client import BatonClient
from workflows.contracts import FinanceCloseInput

FIRST_DEMO_PERIOD = (2026, 10)
#: seconds each process after the close may take before the demo gives up on it (the close:
#: at least 300 s); `baton demo --step-timeout` sets it (`make demo LLM=local`: real models on a
#: CPU take minutes per process)
DEMO_STEP_TIMEOUT = 120.0
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


class DemoStepFailed(Exception):
    """A demo step did not end as it should; the message says what and where to look."""


async def approve_request(
    client: BatonClient,
    settings: Settings,
    workflow_id: str,
    request: Any,
    preferred: str,
    rationale: str,
) -> tuple[str, Any]:
    """Approve ``request`` as ``preferred`` if eligible, else as the first eligible approver who
    has not voted yet (with a dev-issuer token when approvals are signed); returns (who, ack)."""
    voted = {v.approver for v in request.approvals}
    who = next(
        (
            p
            for p in [preferred, *request.eligible_approvers]
            if p in request.eligible_approvers and p not in voted
        ),
        None,
    )
    if who is None:
        raise DemoStepFailed(
            f"nobody left to approve {request.request_id} on {workflow_id} "
            f"(roles {', '.join(request.approver_roles)})"
        )
    if client.approval_trust is not None:  # signed approvals: the dev issuer
        from baton.identity import issue_token

        client.approval_token = issue_token(
            settings.issuer_dir,
            user=who,
            roles=request.approver_roles,
            workflow_id=workflow_id,
            request_id=request.request_id,
            action_digest=request.action_digest,
        )
    ack = await client.approve(
        workflow_id,
        approver=who,
        request_id=request.request_id,
        action_digest=request.action_digest,
        rationale=rationale,
    )
    return who, ack


#: set by `baton demo --interactive`: the inbox URL; every step then waits for a person to decide
#: (in the approver inbox or with the CLI) instead of approving itself
PEOPLE_DECIDE: ContextVar[str | None] = ContextVar("people_decide", default=None)


async def finish_run(
    client: BatonClient,
    settings: Settings,
    workflow_id: str,
    *,
    approver: str,
    rationale: str,
    timeout: float | None = None,
) -> list[str]:
    """Wait (at most ``timeout`` seconds) until the run ``workflow_id`` is no longer running,
    approving every request it asks for on the way as ``approver`` (or another eligible one).

    Returns who approved what ("maya approved apr-..."). Raises DemoStepFailed when the run does
    not end in time; the caller reads the result (a failed run raises there)."""
    timeout = DEMO_STEP_TIMEOUT if timeout is None else timeout
    decided: set[str] = set()
    approvals: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = await client.execution_status(workflow_id)
        except RPCError as err:  # a queued case has no run yet
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            status = WorkflowExecutionStatus.RUNNING
        if status != WorkflowExecutionStatus.RUNNING:
            return approvals
        try:  # a query waits for a worker: bounded too
            pending = await asyncio.wait_for(client.pending_approvals(workflow_id), 5)
        except (RPCError, WorkflowQueryFailedError, TimeoutError):  # no run / no worker yet
            pending = []
        for request in pending:
            if request.request_id in decided:
                continue
            decided.add(request.request_id)
            if (inbox := PEOPLE_DECIDE.get()) is not None:
                from baton.inbox.app import request_path

                print(
                    f"   waiting for {', '.join(request.eligible_approvers)} to decide "
                    f"{request.request_id}: {inbox}{request_path(workflow_id, request.request_id)}",
                    flush=True,
                )
                deadline = max(deadline, time.monotonic() + 3600)  # people take their time
                approvals.append(f"{request.request_id} decided by a person")
                continue
            who, _ = await approve_request(
                client, settings, workflow_id, request, approver, rationale
            )
            approvals.append(f"{who} ({', '.join(request.approver_roles)}) approved")
        if time.monotonic() > deadline:
            raise DemoStepFailed(
                f"{workflow_id} did not finish within {timeout:.0f}s; "
                f"see {settings.workflow_url(workflow_id)}"
            )
        await asyncio.sleep(0.2)


async def run_step(name: str, step: Coroutine[Any, Any, list[str]]) -> tuple[list[str], bool]:
    """One process of the demo: its lines, or what failed (never raises, never hangs)."""
    bound = DEMO_STEP_TIMEOUT + 30 + (3600 if PEOPLE_DECIDE.get() is not None else 0)
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
    from baton.cli import CliError, _client, _print_request
    from worker import build_runtime, build_worker

    global DEMO_STEP_TIMEOUT
    if step_timeout is not None:
        if not step_timeout > 0:
            raise CliError(f"--step-timeout must be a number of seconds > 0, got {step_timeout}")
        DEMO_STEP_TIMEOUT = step_timeout
    close_limit = max(300.0, DEMO_STEP_TIMEOUT)
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
        from baton.cli import demo_onboarding
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
