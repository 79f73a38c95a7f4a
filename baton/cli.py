"""`baton`: the one command-line tool (console script installed by pyproject).

    baton demo                         run the month-end close end to end on the local stack
    baton worker                       run a worker (same as `python worker.py`)
    baton seed --tenant T --period P   (re)seed a month of ledger and bank data
    baton close start|status|result|cancel
    baton close exceptions RUN_OR_WORKFLOW_ID [--json]   entries policy denied, held (not posted)
    baton auction review|status|result|tiers   document reviews allocated by auction (cli_auction)
    baton approvals list [--role R] [--process P]   the approver inbox: pending across all runs
    baton approvals list WORKFLOW_ID   pending approval requests of one run, in full
    baton inbox serve [--port P] [--host H]   the approver inbox web page (baton/inbox/)
    baton approve|reject WORKFLOW_ID --approver NAME --rationale TEXT
    baton amend WORKFLOW_ID --approver NAME --rationale TEXT --change "ENTRY amount=X account=Y"
    baton request-changes WORKFLOW_ID --approver NAME --comment TEXT
    baton close start --shadow ...     a shadow run: agents run, nothing is committed
    baton shadow diff SHADOW_ID [PRODUCTION_ID]      what the shadow run would have done differently
    baton kill set --scope S --reason R [--cancel]   engage the kill switch (hold or cancel runs)
    baton kill clear --scope S --reason R            clear it; held runs resume
    baton kill list                                  active engagements
    baton canary start --candidate V --share S [--min-runs N --max-*-increase X --interval SEC]
    baton canary status|evaluate|rollback|promote|versions [--process P]
    baton audit show WORKFLOW_ID       the audit trail of a run
    baton audit verify                 verify the audit hash chain (and its signed checkpoints)
    baton audit checkpoint             write a signed checkpoint of the chain's head now
    baton audit checkpoint-key         make the Ed25519 key that signs checkpoints
    baton kpi [--since 7d] [--process P] [--format table|json|csv] [--plot DIR]
                                       KPIs per process and version (baton/kpi.py)
    baton supervisor start [--config FILE.json] [--interval S] | stop
                                       the supervisor agent, kept running by a Schedule
    baton policy test                  run the Rego unit tests
    baton validate FILE | schema | run FILE --input JSON | result RUN | event ID NAME  (cli_dsl.py)
    baton catalog [NAME] [--json]   agents and actions, extensions' too  (baton/cli_catalog.py)
    baton policy eval --input FILE.json [--policy baton/base/agent_call] [--engine opa|regorus]
    baton policy log [--day YYYY-MM-DD] [--policy P] [--limit N] [--json]  logged decisions
    baton policy bundle --out FILE.tar.gz [--revision R]   the policies as an OPA bundle
                                       one decision: the document, verdict and revision
    baton knowledge ingest|search|related   the knowledge layer (baton/cli_knowledge.py)
    baton customer event|trigger|status|result   customer onboarding (baton/cli_customer.py)
    baton db upgrade|current|history|check        schema migrations (baton/cli_db.py)
    baton doctor [--since 7d] [--json] [--schedule [--every 1h]]   runs that left effects standing
    baton repair WORKFLOW_ID [--run-id R] [--json]  run an orphan's compensations (cli_integrity.py)

Commands are Click commands (click.palletsprojects.com): each one's callback passes its options
and arguments to an async ``cmd_*(args, settings)`` function through ``cli_common.run``. A
baton/cli_*.py module defines its own group or commands and attaches nothing itself; COMMANDS
at the end of this module is the one list that puts them under ``baton``. Lists and statuses
print rich tables (plain text when piped), every read command takes ``--json``. What commands
share is written once in cli_common: the option decorators (``json_option``, ``wait_option``,
``options`` to stack several), ``runner`` (the callback that runs a ``cmd_*``),
``workflow_reader`` (``NAME WORKFLOW_ID [--json]``),
``print_query`` (a status printed as JSON), ``start_run`` (the one start-and-wait path),
``print_table`` and ``database``.

Exit codes: 0 success, 1 the operation failed, 2 bad input (Click's usage errors included).
Every command leaves through ``os._exit`` after flushing: temporalio 1.35 on CPython 3.11 can
crash at interpreter exit in short-lived client processes (sdk-python#300), and a successful
command must still exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from baton import (
    cli_auction,
    cli_catalog,
    cli_customer,
    cli_db,
    cli_dsl,
    cli_integrity,
    cli_knowledge,
    cli_kpi,
    cli_mcp,
    cli_policy,
    cli_security,
    cli_supervisor,
    cli_support,
)
from baton.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _client,
    _print_json,
    _print_request,
    database,
    json_option,
    options,
    print_query,
    print_table,
    run,
    runner,
    start_run,
    wait_option,
    waiting,
    workflow_reader,
)
from baton.settings import REPO_ROOT, Settings


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _validation_message(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "input"
        lines.append(f"  {field}: {e['msg'].removeprefix('Value error, ')}")
    return "invalid input:\n" + "\n".join(lines)


# -- helpers shared by commands --------------------------------------------------------------


# -- commands --------------------------------------------------------------------------------


async def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from activities.seed import seed_period
    from workflows.contracts import FinanceCloseInput

    FinanceCloseInput(tenant=args.tenant, period=args.period, requested_by="seed")  # validates
    db = database(settings)
    summary = seed_period(db, args.tenant, args.period, pii_samples=args.pii_samples)
    print(
        f"seeded {summary.tenant} {summary.period}: {summary.ledger_entries} ledger entries, "
        f"{summary.bank_lines} bank lines ({settings.database_url})"
    )
    return EXIT_OK


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import worker

    worker.configure_logging()
    await worker.serve(settings)  # on the CLI's loop: worker.main() would start a second one
    return EXIT_OK


RUN_BUDGET_HELP = (
    "USD this run's model calls may cost; a refused call asks the process's budget role "
    "(policy/data/budget.json)"
)


def _versioned_input(model: Any, args: argparse.Namespace, **fields: Any) -> Any:
    """The input of a versioned process (close, onboarding) from its start command's options:
    ``fields`` plus requested-by, shadow and the optional timeout, version and run budget."""
    return model.model_validate(
        {
            **fields,
            "requested_by": args.requested_by,
            "shadow": args.shadow,
            **(
                {"approval_timeout_seconds": args.approval_timeout} if args.approval_timeout else {}
            ),
            **({"version": args.version} if args.version else {}),
            **({"budget": {"run_usd": args.run_budget}} if args.run_budget is not None else {}),
        }
    )


async def _start_versioned(
    args: argparse.Namespace, settings: Settings, start: Callable[[Any], Awaitable[Any]]
) -> int:
    """Start a versioned run with ``start(client)``; the canary assigns its version unless
    --version pins one, and the version it got is printed."""
    client = await _client(settings)
    client.canary = _canary(settings)
    return await start_run(start(client), settings, wait=args.wait, version=True)


async def cmd_close_start(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts import FinanceCloseInput

    inp = _versioned_input(FinanceCloseInput, args, tenant=args.tenant, period=args.period)
    return await _start_versioned(
        args, settings, lambda client: client.start_finance_close(inp, join_existing=args.join)
    )


cmd_close_status = print_query(lambda client, workflow_id: client.status(workflow_id))


async def cmd_close_result(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    _print_json(await waiting(args.workflow_id, client.result(args.workflow_id)))
    return EXIT_OK


async def cmd_close_exceptions(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    try:
        workflow_id, status, held = await client.close_exceptions(args.workflow_id)
    except LookupError as err:
        raise CliError(str(err)) from None
    if args.json:
        _print_json(held)
        return EXIT_OK
    state = status.name if status is not None else "UNKNOWN"
    if not held:
        print(f"{workflow_id} ({state}): no exceptions")
        return EXIT_OK
    total = sum((abs(e.amount) for e in held), Decimal("0"))
    print(f"{workflow_id} ({state}): {len(held)} exceptions (not posted), total {total}")
    for e in held:
        print(f"  {e.entry_id}  {e.amount}  {e.account}  (policy decision {e.decision_id})")
        for reason in e.reasons:
            print(f"      {reason}")
    return EXIT_OK


async def cmd_close_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    await client.cancel(args.workflow_id)
    print(f"cancellation requested for {args.workflow_id}; it compensates, then ends cancelled")
    return EXIT_OK


async def cmd_onboard_hire(args: argparse.Namespace, settings: Settings) -> int:
    from activities.hr import seed_new_hire
    from workflows.contracts import NewHire, OnboardingInput

    OnboardingInput(tenant=args.tenant, employee_id=args.employee_id, requested_by="seed")
    # the options named as NewHire's fields (--name and --unverified are not)
    named = ("tenant", "employee_id", "role", "department", "country", "manager", "start_date")
    hire = NewHire(
        **{field: getattr(args, field) for field in named},
        full_name=args.name,
        id_document_verified=not args.unverified,
    )
    db = database(settings)
    seed_new_hire(db, hire)
    print(
        f"HRIS: {hire.employee_id} ({hire.role}, {hire.department}, {hire.country}) "
        f"of {hire.tenant}"
    )
    return EXIT_OK


async def cmd_onboard_start(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts import OnboardingInput

    inp = _versioned_input(OnboardingInput, args, tenant=args.tenant, employee_id=args.employee_id)
    return await _start_versioned(
        args, settings, lambda client: client.start_onboarding(inp, join_existing=args.join)
    )


cmd_onboard_status = print_query(lambda client, workflow_id: client.onboarding_status(workflow_id))


async def cmd_onboard_history(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    history = await client.board_history(args.workflow_id)
    if args.json:
        _print_json(history)
        return EXIT_OK
    for e in history:
        value = json.dumps(e.value, default=str)
        print(f"#{e.seq:<3} {e.key}@v{e.version:<2} {e.author:<28} {e.reason}")
        print(f"      {value[:160]}")
    return EXIT_OK


async def cmd_approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    if args.workflow_id is None:
        return await _inbox(client, args)
    pending = await client.pending_approvals(args.workflow_id)
    if args.json:
        _print_json(pending)
        return EXIT_OK
    if not pending:
        print(f"{args.workflow_id}: no pending approvals")
    for request in pending:
        _print_request(args.workflow_id, request)
    return EXIT_OK


async def _inbox(client: Any, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from baton.inbox.backend import span as _span  # the web inbox's durations, the same

    items = await client.inbox(role=args.role, process=args.process)
    if args.json:
        _print_json(items)
        return EXIT_OK
    scope = " ".join(f"{k} {v}" for k, v in (("role", args.role), ("process", args.process)) if v)
    if not items:
        print(f"no pending approvals{' for ' + scope if scope else ''}")
        return EXIT_OK
    now = datetime.now(UTC)
    print_table(
        [
            "WORKFLOW", "REQUEST", ("AMOUNT", "right"), "REQUESTER", ("AGE", "right"),
            ("SLA LEFT", "right"), ("TIER", "right"), "NEEDS (WHO MAY DECIDE)",
        ],
        (
            [
                item.workflow_id, item.request_id, item.total_amount, item.requested_by,
                _span(now - item.requested_at), _span(item.deadline - now), item.escalation_level,
                " + ".join(f"{r.count} x {r.role}" for r in item.still_needed)
                + f" ({', '.join(item.eligible_approvers) or 'nobody'})",
            ]
            for item in items
        ),
    )  # fmt: skip
    print(f"{len(items)} pending{' for ' + scope if scope else ''}")
    return EXIT_OK


async def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.client import ApprovalRefused, NoPendingApproval

    client = await _client(settings)
    client.approval_token = args.token or settings.approval_token
    common = {
        "approver": args.approver,
        "request_id": args.request_id,
        "action_digest": args.digest,
    }
    try:
        if args.command == "approve":
            ack = await client.approve(args.workflow_id, rationale=args.rationale, **common)
        elif args.command == "reject":
            ack = await client.reject(args.workflow_id, rationale=args.rationale, **common)
        elif args.command == "amend":
            changes = [_parse_change(text) for text in args.change]
            ack = await client.amend(
                args.workflow_id, rationale=args.rationale, amendments=changes, **common
            )
        else:
            ack = await client.request_changes(args.workflow_id, comment=args.comment, **common)
    except (ApprovalRefused, NoPendingApproval) as err:
        raise CliError(str(err)) from None
    print(f"{ack.request_id}: {ack.message}")
    return EXIT_OK


def _parse_change(text: str) -> dict[str, str]:
    """'ADJ-B0042 amount=900.00 account=6900-suspense' -> an EntryAmendment document."""
    entry_id, *pairs = text.split()
    change = {"entry_id": entry_id}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ("amount", "account") or not value:
            raise CliError(
                f"--change {text!r}: expected 'ENTRY_ID amount=X' and/or 'account=Y', got {pair!r}",
                EXIT_USAGE,
            )
        change[key] = value
    if len(change) == 1:
        raise CliError(f"--change {text!r}: give amount=X and/or account=Y", EXIT_USAGE)
    return change


async def cmd_inbox_serve(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from baton.inbox.server import serve

    if args.temporal_address:
        settings = replace(settings, temporal_address=args.temporal_address)
    try:
        await serve(settings, host=args.host, port=args.port)
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    return EXIT_OK


async def cmd_shadow_diff(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings)
    diff = await client.shadow_diff(args.shadow_id, args.production_id)
    if args.json:
        _print_json(diff)
        return EXIT_OK if not diff.differences else EXIT_FAILED
    print(f"production {diff.production_id}  vs  shadow {diff.shadow_id}")
    print(f"  same actions: {diff.same_actions}; different: {len(diff.differences)}")
    for d in diff.differences:
        print(f"    {d.entry_id:<16} production: {d.production}")
        print(f"    {'':<16} shadow:     {d.shadow}")
    print(f"  approvals  production: {'; '.join(diff.production_approvals) or 'none'}")
    print(f"             shadow (simulated): {'; '.join(diff.shadow_approvals) or 'none'}")
    print(
        f"  tokens {diff.production_tokens} vs {diff.shadow_tokens}; cost "
        f"${diff.production_cost_usd:.4f} vs ${diff.shadow_cost_usd:.4f}"
    )
    return EXIT_OK if not diff.differences else EXIT_FAILED


def _kill_switch(settings: Settings) -> Any:
    from activities.audit import AuditLedger
    from activities.kill_switch import KillSwitch

    db = database(settings)
    return KillSwitch(db, AuditLedger(db))


def _operator(args: argparse.Namespace) -> str:
    import getpass

    return args.by or os.environ.get("USER") or getpass.getuser()


async def cmd_kill_set(args: argparse.Namespace, settings: Settings) -> int:
    from activities.kill_switch import KillSwitchError

    switch = _kill_switch(settings)
    mode = "cancel" if args.cancel else "hold"
    try:
        state = switch.engage(args.scope, reason=args.reason, by=_operator(args), mode=mode)
    except KillSwitchError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    print(
        f"kill switch {state.scope} engaged ({state.mode}) by {state.engaged_by} at "
        f"{state.engaged_at:%Y-%m-%d %H:%M:%S}Z: {state.reason}"
    )
    if state.mode != mode:
        print(f"  (it was already engaged in mode {state.mode}; clear it first to change)")
    print("  workers stop sensitive steps within seconds; compensations still run")
    if state.mode == "cancel":
        client = await _client(settings)
        cancelled = await client.cancel_in_scope(state.scope)
        print(f"  cancelled {len(cancelled)} running run(s); each compensates what it did")
        for workflow_id in cancelled:
            print(f"    {workflow_id}")
    return EXIT_OK


async def cmd_kill_clear(args: argparse.Namespace, settings: Settings) -> int:
    from activities.kill_switch import KillSwitchError

    switch = _kill_switch(settings)
    try:
        state = switch.clear(args.scope, reason=args.reason, by=_operator(args))
    except KillSwitchError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    if state is None:
        raise CliError(f"the kill switch is not engaged for {args.scope}")
    print(f"kill switch {state.scope} cleared by {_operator(args)}: {args.reason}")
    client = await _client(settings)
    released = await client.release_held()
    print(f"  {len(released)} held run(s) told to look again; they resume unless still stopped")
    return EXIT_OK


async def cmd_kill_list(args: argparse.Namespace, settings: Settings) -> int:
    active = _kill_switch(settings).active()
    if args.json:
        _print_json(active)
        return EXIT_OK
    if not active:
        print("kill switch: not engaged")
        return EXIT_OK
    print_table(
        ["SCOPE", "MODE", "SINCE", "BY", "REASON"],
        (
            [s.scope, s.mode, f"{s.engaged_at:%Y-%m-%d %H:%M:%S}Z", s.engaged_by, s.reason]
            for s in active
        ),
    )
    return EXIT_OK


# -- canaries ----------------------------------------------------------------------------------


def _canary(settings: Settings) -> Any:
    from activities.audit import AuditLedger
    from activities.canary import Canary

    db = database(settings)
    return Canary(db, AuditLedger(db))


async def cmd_canary_start(args: argparse.Namespace, settings: Settings) -> int:
    from activities.canary import CanaryError, apply_routing, current_build
    from workflows.contracts import CanaryConfig

    given = {
        name: getattr(args, name)
        for name in (
            "baseline", "deployment", "max_error_rate_increase", "max_escalation_rate_increase",
            "max_cost_increase", "min_runs",
        )
        if getattr(args, name) is not None
    }  # fmt: skip
    document = {
        "process": args.process,
        "kind": args.kind,
        "candidate": args.candidate,
        "share": args.share,
        **given,
    }
    config = CanaryConfig.model_validate(document)
    if args.interval <= 0:
        raise CliError("--interval: must be a number of seconds above 0", EXIT_USAGE)
    client = await _client(settings)
    if config.kind == "code" and args.baseline is None:
        assert config.deployment is not None
        current = await current_build(client.client, config.deployment)
        if current is None:
            raise CliError(
                f"deployment {config.deployment!r} has no current version to compare with: "
                "temporal worker deployment set-current-version --deployment-name "
                f"{config.deployment} --build-id <stable build>"
            )
        config = CanaryConfig.model_validate({**document, "baseline": current})
    canary = _canary(settings)
    try:
        status, what = canary.start(config, by=_operator(args), reason=args.reason)
    except CanaryError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        routed = await apply_routing(client.client, status)
    except Exception as err:  # Temporal refused the ramp: the canary must not stay configured
        canary.rollback(status.process, reason=f"Temporal refused the ramp: {err}", by="baton")
        raise CliError(f"could not ramp {status.deployment}:{status.candidate}: {err}") from None
    print(
        f"canary {what}: {status.candidate} on {status.share:.0%} of new {status.process} runs "
        f"vs {status.baseline} (canary {status.id}, revision {status.revision})"
    )
    if routed:
        print(f"  Temporal: {routed}")
    if what != "started":
        print(
            "  (its KPI window still starts at "
            f"{status.started_at:%Y-%m-%d %H:%M:%S}Z; roll back or promote to start afresh)"
        )
    print(f"  {_margins(status)}")
    handle = await client.start_canary_monitor(status.process, interval_seconds=args.interval)
    print(f"monitor {handle.id} evaluates every {args.interval:g}s (a running one keeps its own)")
    print(f"web UI: {settings.workflow_url(handle.id)}")
    return EXIT_OK


async def cmd_canary_status(args: argparse.Namespace, settings: Settings) -> int:
    """The current canary with KPIs measured now (nothing is rolled back), and its monitor."""
    from activities.canary import evaluate

    canary = _canary(settings)
    client = await _client(settings)
    act = args.canary_command == "evaluate"
    evaluation = await evaluate(canary, client.client, args.process, client.task_queue, act=act)
    monitor = await _monitor_state(client, args.process)
    if args.json:
        print(json.dumps({**evaluation.model_dump(mode="json"), "monitor": monitor}, indent=2))
        return EXIT_OK
    _print_evaluation(evaluation)
    last = canary.last_evaluation(args.process)
    if evaluation.verdict == "inactive" and last is not None and last.candidate is not None:
        print(f"  last evaluation while active, at {last.evaluated_at:%Y-%m-%d %H:%M:%S}Z:")
        _print_kpis(last)
        print(f"  verdict then: {last.verdict.replace('_', ' ')}")
    print(f"monitor: {client.canary_monitor_id(args.process)} {monitor}")
    return EXIT_OK


async def _monitor_state(client: Any, process: str) -> str:
    from temporalio.service import RPCError

    try:
        described = await client.client.get_workflow_handle(
            client.canary_monitor_id(process)
        ).describe()
    except RPCError:
        return "not started"
    return described.status.name.lower() if described.status else "unknown"


async def cmd_canary_end(args: argparse.Namespace, settings: Settings) -> int:
    from activities.canary import CanaryError, apply_routing

    canary = _canary(settings)
    end = canary.rollback if args.canary_command == "rollback" else canary.promote
    try:
        status = end(args.process, reason=args.reason, by=_operator(args))
    except CanaryError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    if status is None:
        raise CliError(f"{args.process} has no active canary")
    if status.state == "rolled_back":
        print(
            f"canary {status.id} rolled back: new {status.process} runs get {status.baseline}; "
            f"runs already on {status.candidate} keep it"
        )
    else:
        print(f"canary {status.id} promoted: new {status.process} runs get {status.candidate}")
    client = await _client(settings)
    try:
        routed = await apply_routing(client.client, status)
    except Exception as err:
        raise CliError(
            f"the canary is {status.state.replace('_', ' ')}, but Temporal refused to follow "
            f"({err}); its monitor retries, or run: temporal worker deployment "
            + (
                f"set-ramping-version --deployment-name {status.deployment} --build-id "
                f"{status.candidate} --percentage 0"
                if status.state == "rolled_back"
                else f"set-current-version --deployment-name {status.deployment} --build-id "
                f"{status.candidate}"
            )
        ) from None
    if routed:
        print(f"  Temporal: {routed}")
    if await client.canary_changed(args.process):
        print(f"  monitor {client.canary_monitor_id(args.process)} told; it ends")
    return EXIT_OK


async def cmd_canary_versions(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts import PROCESS_VERSIONS

    if args.process not in PROCESS_VERSIONS:
        raise CliError(
            f"--process: unknown process {args.process!r}: expected one of "
            f"{', '.join(PROCESS_VERSIONS)}",
            EXIT_USAGE,
        )
    specs = list(PROCESS_VERSIONS[args.process].values())
    if args.json:
        _print_json(
            [
                {"version": s.name, "description": s.description, "prompts": s.prompts,
                 "models": s.models}
                for s in specs
            ]
        )  # fmt: skip
        return EXIT_OK
    print_table(
        ["VERSION", "DESCRIPTION", "ROUTES"],
        (
            [
                s.name,
                s.description,
                ", ".join(
                    [f"{a} prompt {v}" for a, v in s.prompts.items()]
                    + [f"{a} model {m}" for a, m in s.models.items()]
                )
                or "-",
            ]
            for s in specs
        ),
    )
    return EXIT_OK


def _margins(status: Any) -> str:
    return (
        f"rolled back when worse than {status.baseline} by more than: error rate "
        f"+{status.max_error_rate_increase:.1%}, escalation rate "
        f"+{status.max_escalation_rate_increase:.1%}, cost per run +{status.max_cost_increase:.1%}"
        f"; judged once each has {status.min_runs} finished runs"
    )


def _print_kpis(evaluation: Any) -> None:
    if evaluation.baseline is None or evaluation.candidate is None:
        return
    print(
        f"    {'VERSION':<24} {'RUNS':>5} {'FAILED':>6} {'ERRORS':>7} {'ESCAL.':>7} "
        f"{'APPROVALS':>9} {'COST/RUN':>11} {'RUNNING':>7}"
    )
    for arm in (evaluation.baseline, evaluation.candidate):
        print(
            f"    {arm.version:<24} {arm.runs:>5} {arm.failed:>6} {arm.error_rate:>7.1%} "
            f"{arm.escalation_rate:>7.1%} {arm.approval_rate:>9.1%} "
            f"{'$' + format(arm.cost_per_run, '.6f'):>11} {arm.running:>7}"
        )


def _print_evaluation(evaluation: Any) -> None:
    status = evaluation.canary
    if status is None:
        print(f"{evaluation.process}: no canary; every new run gets stable")
        return
    state = status.state.replace("_", " ")
    where = f" of deployment {status.deployment}" if status.kind == "code" else ""
    print(
        f"{status.kind} canary {status.id} of {status.process}{where}: {status.candidate} vs "
        f"{status.baseline} on {status.share:.0%} of new runs: {state}"
    )
    print(
        f"  started {status.started_at:%Y-%m-%d %H:%M:%S}Z by {status.started_by} "
        f"(revision {status.revision})"
    )
    if status.ended_at:
        print(
            f"  {state} {status.ended_at:%Y-%m-%d %H:%M:%S}Z by {status.ended_by}: {status.reason}"
        )
    print(f"  {_margins(status)}")
    _print_kpis(evaluation)
    if evaluation.verdict != "inactive":
        print(f"  verdict: {evaluation.verdict.replace('_', ' ')}")
    for reason in evaluation.reasons:
        print(f"    {reason}")
    if evaluation.action == "rolled_back":
        print(f"  action: rolled back; new runs get {status.baseline}")


async def cmd_audit_show(args: argparse.Namespace, settings: Settings) -> int:
    from activities.audit import AuditLedger

    db = database(settings)
    rows = AuditLedger(db).trail(args.workflow_id)
    if args.json:
        print(json.dumps([{**r.content(), "row_hash": r.row_hash} for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        raise CliError(f"no audit records for {args.workflow_id}")

    def detail(r: Any) -> str:
        cost = f"{r.model} {r.tokens} tok ${r.cost_usd:.4f} " if r.model else ""
        why = f" - {r.rationale}" if r.rationale else ""
        fields = json.loads(r.detail_json).items()
        brief = ", ".join(f"{k}={v}" for k, v in fields if not isinstance(v, list | dict))
        return f"{cost}{brief}{why}"

    print_table(
        [("#", "right"), "TIME", "ACTOR", "ACTION", "DETAIL"],
        ([r.position, f"{r.recorded_at:%H:%M:%S}", r.actor, r.action, detail(r)] for r in rows),
    )
    return EXIT_OK


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The chain's own links, then the chain against the signed checkpoints (when a public key
    is known): a rewritten chain and deleted newest rows are only caught by the latter."""
    from activities.audit import AuditLedger
    from activities.audit_checkpoint import (
        describe,
        load_checkpoint_key,
        load_public_key,
        open_log,
        verify_against,
    )

    db = database(settings)
    ledger = AuditLedger(db)
    report = ledger.verify()
    problems = list(report.problems)
    public_text = args.public_key or settings.audit_checkpoint_public_key
    try:
        if public_text:
            public = load_public_key(public_text)
        elif settings.audit_checkpoint_key_file is not None:
            public = load_checkpoint_key(settings.audit_checkpoint_key_file).public_key()
        else:
            public = None
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    checked = "no checkpoint key"
    if public is not None:
        where = args.checkpoints or settings.audit_checkpoint_log
        against, checkpoints = verify_against(ledger, open_log(where), public)
        problems += against
        latest = describe(checkpoints.latest)
        checked = (
            f"{checkpoints.checkpoints} signed checkpoint(s) in {where}, the latest at row "
            f"{latest['position']} ({latest['at']})"
            if latest
            else f"no checkpoint in {where} yet"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "rows_checked": report.rows_checked,
                    "problems": [str(p) for p in problems],
                    "checkpoints": checked,
                },
                indent=2,
            )
        )
        return EXIT_FAILED if problems else EXIT_OK
    if not problems:
        print(f"audit chain OK: {report.rows_checked} rows verified; {checked}")
        if public is None or checked.startswith("no checkpoint"):
            print(
                "  note: without a signed checkpoint a rewritten chain or deleted newest rows "
                "cannot be detected (see docs/security.md, audit checkpoints)"
            )
        return EXIT_OK
    print(
        f"audit chain BROKEN: {len(problems)} problem(s) in {report.rows_checked} rows; {checked}"
    )
    for problem in problems:
        print(f"  {problem}")
    return EXIT_FAILED


async def cmd_audit_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    """Write a signed checkpoint of the chain's head now (the worker writes them periodically;
    this is for cron jobs, before a backup, or an auditor's visit)."""
    from activities.audit import AuditLedger
    from activities.audit_checkpoint import CheckpointWriter, load_checkpoint_key, open_log

    if settings.audit_checkpoint_key_file is None:
        raise CliError(
            "BATON_AUDIT_CHECKPOINT_KEY is not set (`baton audit checkpoint-key` makes a key)",
            EXIT_USAGE,
        )
    try:
        key = load_checkpoint_key(settings.audit_checkpoint_key_file)
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    db = database(settings)
    writer = CheckpointWriter(AuditLedger(db), key, open_log(settings.audit_checkpoint_log))
    checkpoint = writer.write()
    if checkpoint is None:
        print("no new checkpoint: the chain has not moved since the last one (or is empty)")
    else:
        print(
            f"checkpoint: row {checkpoint.position} head {checkpoint.head_hash[:16]}... at "
            f"{checkpoint.at} -> {settings.audit_checkpoint_log}"
        )
    return EXIT_OK


async def cmd_audit_checkpoint_key(args: argparse.Namespace, settings: Settings) -> int:
    from activities.audit_checkpoint import key_id, new_checkpoint_key, public_key_text

    out = Path(args.out)
    try:
        public = new_checkpoint_key(out)  # O_EXCL: never replaces a key
    except FileExistsError:
        raise CliError(f"{out} exists: refusing to replace a checkpoint key", EXIT_USAGE) from None
    print(public_key_text(public))
    print(
        f"checkpoint key {key_id(public)} written to {out} (mode 0600). Workers: export "
        f"BATON_AUDIT_CHECKPOINT_KEY={out}; auditors keep the public key above "
        "(BATON_AUDIT_CHECKPOINT_PUBLIC_KEY) and copies of the checkpoint log",
        file=sys.stderr,
    )
    return EXIT_OK


async def cmd_processes(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio import workflow as temporal_workflow

    from baton import extensions
    from workflows.registry import processes

    extensions.load()
    rows = [
        {
            "process": spec.name,
            "workflow_type": temporal_workflow._Definition.must_from_class(spec.workflow).name,
            "input": spec.input.__name__,
            "start": spec.start,
        }
        for spec in processes()
    ]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    print_table(
        ["PROCESS", "WORKFLOW TYPE", "INPUT", "START"],
        ([r["process"], r["workflow_type"], r["input"], r["start"]] for r in rows),
    )
    return EXIT_OK


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from baton import extensions
    from workflows.registry import UnknownProcess, spec_named

    extensions.load()
    try:
        spec = spec_named(args.process)
    except UnknownProcess as err:
        raise CliError(str(err), EXIT_USAGE) from None
    text = args.input
    if text.startswith("@"):
        try:
            text = await asyncio.to_thread(Path(text[1:]).read_text)
        except OSError as err:
            raise CliError(f"--input {args.input}: {err}", EXIT_USAGE) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"--input is not JSON: {err}", EXIT_USAGE) from None
    inp = spec.validate(raw)  # a bad field: ValidationError, exit 2, nothing started
    client = await _client(settings)
    if spec.start == "versioned":
        client.canary = _canary(settings)  # assigns the version unless the input pins one
    return await start_run(
        client.start(inp, join_existing=args.join),
        settings,
        wait=args.wait,
        refused=(UnknownProcess,),
    )


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from baton.demo import run_demo

    return await run_demo(
        settings,
        tenant=args.tenant,
        approver=args.approver,
        interactive=args.interactive,
        step_timeout=args.step_timeout,
    )


# -- commands as Click sees them ------------------------------------------------------------
# Each command below (and each baton/cli_*.py module's) is a Click command whose callback hands
# its parameters to the async ``cmd_*`` function above through ``run``; COMMANDS at the end
# is the one list that attaches them to ``baton``.

APPROVAL_TIMEOUT = "seconds to wait for an approver"

#: --tenant and --period, as `seed` and `close start` take them.
tenant_period = options(
    click.option("--tenant", required=True), click.option("--period", required=True, help="YYYY-MM")
)


def versioned_start_options(
    timeout_help: str, join_help: str, shadow_help: str, version_help: str
) -> Callable[[Any], Any]:
    """The options `close start` and `onboard start` share, each process with its own words:
    who asks, the approval timeout, --join, the run budget, --shadow, --version and --wait."""
    return options(
        click.option("--requested-by", required=True),
        click.option("--approval-timeout", type=int, help=timeout_help),
        click.option("--join", is_flag=True, help=join_help),
        click.option("--run-budget", type=float, help=RUN_BUDGET_HELP),
        click.option("--shadow", is_flag=True, help=shadow_help),
        click.option("--version", help=version_help),
        wait_option(),
    )


def reason_by(by_help: str) -> Callable[[Any], Any]:
    """--reason (required, for the audit trail) and --by (default $USER: ``_operator``)."""
    return options(click.option("--reason", required=True), click.option("--by", help=by_help))


@click.command("demo", help="run a month-end close end to end on the local stack")
@click.option("--tenant", default="acme")
@click.option("--approver", default="carol", help="who approves in the demo")
@click.option(
    "--interactive", is_flag=True, help="wait for you to approve/reject from another terminal"
)
@click.option(
    "--step-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="how long each process may take (default 120; the close at least 300); real "
    "models on a CPU need minutes (make demo LLM=local uses 1800)",
)
def demo(**params: Any) -> int:
    return run(cmd_demo, params)


@click.command(
    "processes",
    short_help="list the registered processes (workflows/registry.py)",
    help="List the registered processes: name, workflow type, input model, how a "
    "run starts. Each is started with BatonClient.start(input) or its own commands.",
)
@json_option("print JSON instead of a table")
def processes(**params: Any) -> int:
    return run(cmd_processes, params)


@click.command(
    "start",
    short_help="start any registered process from its JSON input",
    help="Start any registered process (see `baton processes`) from its input as "
    "JSON, under its business key: BatonClient.start(input). The input is validated first: "
    "a bad field is named and nothing starts."
    "\n\nPROCESS: the process name, e.g. hr_onboarding",
)
@click.argument("process")
@click.option("--input", required=True, help="the input as JSON, or @FILE to read it")
@click.option("--join", is_flag=True, help="attach to a run of the same key")
@wait_option("wait for the result and print it")
def start(**params: Any) -> int:
    return run(cmd_start, params)


worker_command = click.command("worker", help="run a worker for all processes")(runner(cmd_worker))


@click.command("seed", help="(re)seed a month of ledger and bank data")
@tenant_period
@click.option(
    "--pii-samples",
    is_flag=True,
    help="put sample personal data (email, phone, IBAN, card, national ids) into the memos "
    "of unmatched items, to see redaction at work",
)
def seed(**params: Any) -> int:
    return run(cmd_seed, params)


close = click.Group("close", help="start and inspect finance closes")


@close.command("start", help="start the close of a period")
@tenant_period
@versioned_start_options(
    APPROVAL_TIMEOUT,
    "attach to a running close instead",
    "shadow run: agents and policy run, postings are only recorded, approvals simulated",
    "pin the process version (default: the canary assigns it, or stable)",
)
def close_start(**params: Any) -> int:
    return run(cmd_close_start, params)


workflow_reader(close, "status", "stage, pending approvals, postings", cmd_close_status)
workflow_reader(close, "result", "wait for and print the result", cmd_close_result)


@close.command("cancel", help="cancel (compensates what was posted)")
@click.argument("workflow_id")
def close_cancel(**params: Any) -> int:
    return run(cmd_close_cancel, params)


workflow_reader(
    close,
    "exceptions",
    "The entries a close holds as exceptions: policy denied posting them, the "
    "rest of the close went on. Read from the result of a completed close, else from the "
    "running (or failed) close's status."
    "\n\nRUN_OR_WORKFLOW_ID: the close's workflow id or a run id",
    cmd_close_exceptions,
    "print the exceptions as JSON",
    metavar="RUN_OR_WORKFLOW_ID",
    short_help="entries policy denied, held as exceptions (not posted)",
)


onboard = click.Group("onboard", help="HR onboarding: blackboard agents + manager approval")


@onboard.command("hire", help="put a new hire in the HRIS (demo / tests)")
@click.option("--tenant", required=True)
@click.option("--employee-id", required=True)
@click.option("--name", default="New Hire")
@click.option("--role", required=True, help="e.g. engineer, sales-rep")
@click.option("--department", required=True, help="e.g. engineering (its manager approves)")
@click.option("--country", default="DE")
@click.option("--manager", default="maya")
@click.option("--start-date", default="2026-12-01")
@click.option("--unverified", is_flag=True, help="no checked identity document")
def onboard_hire(**params: Any) -> int:
    return run(cmd_onboard_hire, params)


@onboard.command("start", help="start onboarding a new hire")
@click.option("--tenant", required=True)
@click.option("--employee-id", required=True)
@versioned_start_options(
    "seconds to wait for the manager",
    "attach to a running onboarding instead",
    "shadow run: grants are only recorded",
    "pin the process version (default: the canary assigns it)",
)
def onboard_start(**params: Any) -> int:
    return run(cmd_onboard_start, params)


workflow_reader(
    onboard, "status", "stage, pending approval, grants, board version", cmd_onboard_status
)
workflow_reader(
    onboard,
    "history",
    "the blackboard's full history",
    cmd_onboard_history,
    "print the history as JSON",
)


approvals = click.Group("approvals", help="pending approval requests")


@approvals.command(
    "list",
    help="the approver inbox (all runs), or one run's pending requests in full"
    "\n\nWORKFLOW_ID: one run; omit for the inbox across all runs",
)
@click.argument("workflow_id", required=False)
@click.option("--role", help="inbox: only requests this role may decide now")
@click.option("--process", help="inbox: only this process, e.g. finance_close")
@json_option()
def approvals_list(**params: Any) -> int:
    return run(cmd_approvals_list, params)


inbox = click.Group("inbox", help="the approver inbox web page")


@inbox.command("serve", help="serve the approver inbox (sign in, decide, delegate)")
@click.option("--port", type=int, help="port (default BATON_INBOX_PORT, 8240)")
@click.option("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
@click.option("--temporal-address", help="host:port of Temporal (default TEMPORAL_ADDRESS)")
def inbox_serve(**params: Any) -> int:
    return run(cmd_inbox_serve, params)


def _decision(name: str, text: str) -> click.Command:
    """``approve``, ``reject``, ``amend`` and ``request-changes``: the same options, but
    request-changes takes a --comment where the others take a --rationale, and amend takes
    one --change per entry."""

    decide = runner(cmd_decide, command=name)
    options = [
        click.argument("workflow_id"),
        click.option("--approver", required=True),
        click.option("--comment", required=True, help="what should change")
        if name == "request-changes"
        else click.option("--rationale", required=True),
        *(
            [
                click.option(
                    "--change",
                    multiple=True,
                    required=True,
                    metavar="'ENTRY_ID amount=X account=Y'",
                    help="one entry's new amount and/or account; repeat for more entries",
                )
            ]
            if name == "amend"
            else []
        ),
        click.option("--request-id", help="defaults to the run's only pending request"),
        click.option("--digest", help="action digest you reviewed (defaults to the current one)"),
        click.option("--token", help="your signed identity JWT (default BATON_APPROVAL_TOKEN)"),
    ]
    for option in reversed(options):
        decide = option(decide)
    return click.command(name, help=text)(decide)


DECISIONS = [
    _decision("approve", "approve a pending approval request (counts toward N-of-M)"),
    _decision("reject", "reject a pending request: the run compensates and fails"),
    _decision("amend", "change entries under review; policy re-checks them"),
    _decision("request-changes", "send the entries back to the preparer agent with a comment"),
]


shadow = click.Group("shadow", help="shadow runs")


@shadow.command(
    "diff",
    help="compare a shadow run with production (exit 1 when actions differ)\n\n"
    "SHADOW_ID: e.g. shadow/finance-close/acme/2026-10; PRODUCTION_ID: default: the shadow id "
    "without 'shadow/'",
)
@click.argument("shadow_id")
@click.argument("production_id", required=False)
@json_option("print the comparison as JSON")
def shadow_diff(**params: Any) -> int:
    return run(cmd_shadow_diff, params)


kill = click.Group("kill", help="the kill switch: stop sensitive steps within seconds")


SCOPE_HELP = "global | process:<name> | agent:<role> | tenant:<name>"


@kill.command("set", help="engage: running runs hold at their next gate")
@click.option("--scope", required=True, help=SCOPE_HELP)
@reason_by("who engages it (default: $USER)")
@click.option("--cancel", is_flag=True, help="cancel running runs in scope (they compensate)")
def kill_set(**params: Any) -> int:
    return run(cmd_kill_set, params)


@kill.command("clear", help="clear: held runs resume")
@click.option("--scope", required=True, help=SCOPE_HELP)
@reason_by("who clears it (default: $USER)")
def kill_clear(**params: Any) -> int:
    return run(cmd_kill_clear, params)


@kill.command("list", help="active engagements")
@json_option()
def kill_list(**params: Any) -> int:
    return run(cmd_kill_list, params)


canary = click.Group(
    "canary", help="canaries: a share of new runs on a new version, rolled back when worse"
)

#: --process of every canary command: the process whose canary it is.
canary_process = click.option("--process", default="finance_close")


@canary.command(
    "start", help="configure a canary (or change its share/margins) and start its monitor"
)
@canary_process
@click.option(
    "--kind",
    type=click.Choice(["data", "code"]),
    default="data",
    help="data: a version of `canary versions` (default); code: a build id of a Worker "
    "Deployment, ramped by Temporal",
)
@click.option(
    "--candidate", required=True, help="version under test (code: the candidate build id)"
)
@click.option(
    "--baseline", help="version to compare with (default: stable; code: the current build)"
)
@click.option("--deployment", help="code canaries: the Worker Deployment name")
@click.option("--share", type=float, required=True, help="share of new runs, 0..1")
@click.option("--max-error-rate-increase", type=float, help="absolute, 0..1 (default 0.05)")
@click.option("--max-escalation-rate-increase", type=float, help="absolute, 0..1 (default 0.10)")
@click.option("--max-cost-increase", type=float, help="fraction of the baseline's (default 0.20)")
@click.option("--min-runs", type=int, help="finished runs per version before judging (20)")
@click.option(
    "--interval", type=float, default=60.0, help="seconds between evaluations (default 60)"
)
@click.option("--reason", default="", help="why (goes to the audit trail)")
@click.option("--by", help="who starts it (default: $USER)")
def canary_start(**params: Any) -> int:
    return run(cmd_canary_start, params)


def _canary_command(
    name: str, text: str, func: Callable[..., Awaitable[int]], option: Callable[[Any], Any]
) -> click.Command:
    """``canary NAME --process P`` and ``option``: ``func``, told which command it runs
    (``args.canary_command``)."""
    callback = options(canary_process, option)(runner(func, canary_command=name))
    return canary.command(name, help=text)(callback)


def _canary_reader(name: str, text: str) -> click.Command:
    state_json = json_option("print the evaluation and the monitor's state as JSON")
    return _canary_command(name, text, cmd_canary_status, state_json)


def _canary_ender(name: str, text: str) -> click.Command:
    return _canary_command(name, text, cmd_canary_end, reason_by("who decides (default: $USER)"))


_canary_reader("status", "the canary, KPIs per version measured now (changes nothing), the monitor")
_canary_reader("evaluate", "measure and judge now; roll back when worse (what the monitor does)")
_canary_ender("rollback", "new runs get the baseline again; runs already on the candidate keep it")
_canary_ender("promote", "the candidate gets every new run; the canary ends")


@canary.command("versions", help="the versions a process knows")
@canary_process
@json_option()
def canary_versions(**params: Any) -> int:
    return run(cmd_canary_versions, params)


audit = click.Group("audit", help="audit trail")


workflow_reader(
    audit, "show", "print the audit trail of a run", cmd_audit_show, "print the records as JSON"
)


@audit.command(
    "verify", help="verify the hash chain of the whole audit ledger (and its checkpoints)"
)
@click.option(
    "--checkpoints", help="checkpoint log (file or URL; default BATON_AUDIT_CHECKPOINT_LOG)"
)
@click.option(
    "--public-key", help="auditor's checkpoint key (default BATON_AUDIT_CHECKPOINT_PUBLIC_KEY)"
)
@json_option("print the verdict, rows checked and problems as JSON (exit 1 still when broken)")
def audit_verify(**params: Any) -> int:
    return run(cmd_audit_verify, params)


audit.command("checkpoint", help="write a signed checkpoint of the chain now")(
    runner(cmd_audit_checkpoint)
)


@audit.command("checkpoint-key", help="make an Ed25519 checkpoint signing key")
@click.option(
    "--out",
    default=str(REPO_ROOT / ".baton" / "audit" / "checkpoint-key.pem"),
    help="where to write it (keep it off the database host)",
)
def audit_checkpoint_key(**params: Any) -> int:
    return run(cmd_audit_checkpoint_key, params)


#: Every top-level command, attached to ``baton`` here and only here: each baton/cli_*.py
#: module defines its own Click group or commands, and adds nothing itself.
COMMANDS: list[click.Command] = [
    demo,
    processes,
    start,
    worker_command,
    seed,
    close,
    onboard,
    cli_auction.auction,
    cli_support.support,
    approvals,
    inbox,
    *DECISIONS,
    shadow,
    kill,
    canary,
    audit,
    cli_kpi.kpi,
    cli_supervisor.supervisor,
    cli_policy.policy,
    *cli_security.COMMANDS,
    cli_knowledge.knowledge,
    cli_db.db,
    *cli_integrity.COMMANDS,
    cli_customer.customer,
    cli_mcp.mcp,
    *cli_dsl.COMMANDS,
    cli_catalog.catalog,
]


@click.group(
    "baton",
    help="Durable, governed AI-agent business processes on Temporal.",
    context_settings={"max_content_width": 100},
)
def baton() -> None:
    pass


for _command in COMMANDS:
    baton.add_command(_command)


def invoke(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the command; the exit code.
    Usage errors print Click's message and give 2; a command's errors are mapped as the module
    docstring says."""
    try:
        try:
            code = baton.main(args=argv, prog_name="baton", standalone_mode=False)
        except click.exceptions.Exit as done:  # --help
            code = done.exit_code
        except click.ClickException as err:
            err.show()
            code = err.exit_code
        except click.Abort:
            code = 130
        return int(code or 0)
    except ValidationError as err:
        print(_validation_message(err), file=sys.stderr)
        return EXIT_USAGE
    except CliError as err:
        print(f"baton: {err}", file=sys.stderr)
        return err.code
    except ValueError as err:
        print(f"baton: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # anything unplanned: one readable line, the trace on request
        if os.environ.get("BATON_DEBUG"):
            traceback.print_exc()
        print(
            f"baton: {type(err).__name__}: {err} (set BATON_DEBUG=1 for the trace)", file=sys.stderr
        )
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> None:
    """The console script: ``invoke``, then leave through ``os._exit`` (module docstring)."""
    _exit(invoke(argv))


if __name__ == "__main__":
    main()
