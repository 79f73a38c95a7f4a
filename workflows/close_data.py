"""The finance close's first two steps, collect and reconcile, with the period's data kept out
of the close's history (workflows/finance_close.py).

Runs started after :data:`DATA_BY_REFERENCE_PATCH` call the activities of
activities/close_data.py: the ledger and bank statement, and the full reconciliation, stay in
the payload store and the history carries references, counts and only the lines the reconciler
agent has to explain. Runs started before it replay through ``collect_period_data`` /
``reconcile_transactions``, whose payloads carry every line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow

from workflows import errors
from workflows.contracts import (
    CollectPeriodInput,
    PeriodData,
    ReconcileInput,
    Reconciliation,
)
from workflows.contracts.close import CloseData, ReconcileByRefInput
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.close_data import CloseDataActivities as CloseDataActs

__all__ = ["DATA_BY_REFERENCE_PATCH", "collect_and_reconcile"]

#: Replay safety: runs started before it carried the period's ledger and bank statement (and
#: every match) through their history.
DATA_BY_REFERENCE_PATCH = "close-data-by-reference"


def _refuse_closed(status: str, tenant: str, period: str, shadow: bool) -> None:
    if status != "open" and not shadow:
        raise errors.failure(errors.PERIOD_CLOSED, f"period {period} of {tenant} is already closed")


async def collect_and_reconcile(
    process: GovernedProcess,
    tenant: str,
    period: str,
    *,
    shadow: bool,
    collect_in_history: Callable[[Any, CollectPeriodInput], Awaitable[PeriodData]],
    reconcile_in_history: Callable[[Any, ReconcileInput], Awaitable[Reconciliation]],
) -> CloseData:
    """Collect the period, refuse a closed one (unless shadow), reconcile it: the counts and
    the unmatched lines the close goes on with. The ``*_in_history`` activities are the ones
    runs started before the patch replay through (the process's own)."""
    process.stage = "collecting"
    collect = CollectPeriodInput(tenant=tenant, period=period)
    if workflow.patched(DATA_BY_REFERENCE_PATCH):
        summary = await process._step(
            "connector",
            CloseDataActs.collect_period_data_by_reference,
            collect,
            "data collector: ledger + bank statement, kept in the payload store",
        )
        _refuse_closed(summary.period_status, tenant, period, shadow)
        process.stage = "reconciling"
        recon = await process._step(
            "connector",
            CloseDataActs.reconcile_stored_period_data,
            ReconcileByRefInput(data=summary.data),
            f"reconciler: exact + tolerance matching of {summary.ledger_entries} ledger "
            f"entries, {summary.bank_lines} bank lines (stored)",
        )
        return CloseData(
            **summary.model_dump(include={"period_status", "ledger_entries", "bank_lines"}),
            **recon.model_dump(exclude={"reconciliation"}),  # the reference stays behind
        )
    data = await process._step(
        "connector", collect_in_history, collect, "data collector: ledger + bank statement"
    )
    _refuse_closed(data.period_status, tenant, period, shadow)
    process.stage = "reconciling"
    full = await process._step(
        "connector",
        reconcile_in_history,
        ReconcileInput(data=data),
        "reconciler: exact + tolerance matching",
    )
    return CloseData(
        period_status=data.period_status,
        ledger_entries=len(data.ledger),
        bank_lines=len(data.bank),
        matched=len(full.matches),
        unmatched_bank=full.unmatched_bank,
        unmatched_ledger=full.unmatched_ledger,
        duplicate_ledger=full.duplicate_ledger,
    )
