"""The finance close's data by reference: the period's ledger and bank statement, and the full
reconciliation, go to the payload store (activities/payload_store.py) and the close's history
carries references, counts and only the lines the reconciler agent has to explain.

The collecting and the matching are :class:`~activities.finance.FinanceActivities`' own (same
queries, same matching, same audit events); these activities only store what they return.
Old runs keep calling ``collect_period_data`` / ``reconcile_transactions`` (workflows/
close_data.py asks ``workflow.patched`` which).

Must not: be imported by workflows outside ``imports_passed_through`` (it does I/O).
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.finance import FinanceActivities
from activities.payload_store import PayloadMissing, PayloadStore
from workflows.contracts import CollectPeriodInput, PeriodData, ReconcileInput
from workflows.contracts.close import (
    PeriodDataSummary,
    ReconcileByRefInput,
    ReconciliationSummary,
)


class CloseDataActivities:
    """Collect and reconcile a period, keeping the data in the payload store. Built once in
    worker.py from the worker's FinanceActivities and PayloadStore."""

    def __init__(self, finance: FinanceActivities, payloads: PayloadStore) -> None:
        self.finance = finance
        self.payloads = payloads

    @activity.defn(name="collect_period_data_by_reference")
    async def collect_period_data_by_reference(self, inp: CollectPeriodInput) -> PeriodDataSummary:
        """Collect the ledger and bank statement (audited as ``data.collected``) and store
        them; answer the status, the counts and the reference."""
        data = await self.finance.collect_period_data(inp)
        ref = await asyncio.to_thread(self.payloads.put, data.model_dump(mode="json"))
        return PeriodDataSummary(
            tenant=data.tenant,
            period=data.period,
            period_status=data.period_status,
            ledger_entries=len(data.ledger),
            bank_lines=len(data.bank),
            data=ref.model_copy(update={"preview": f"{data.tenant} {data.period}: ledger + bank"}),
        )

    @activity.defn(name="reconcile_stored_period_data")
    async def reconcile_stored_period_data(self, inp: ReconcileByRefInput) -> ReconciliationSummary:
        """Match the stored period data (audited as ``reconciliation.done``, over the same
        input digest as ``reconcile_transactions``) and store the full reconciliation."""
        try:
            stored = await asyncio.to_thread(self.payloads.get, inp.data)
        except PayloadMissing as e:  # a retry cannot bring it back
            raise ApplicationError(
                f"reconcile: period data {inp.data.digest}: {e}",
                type="PayloadMissing",
                non_retryable=True,
            ) from e
        recon = await self.finance.reconcile_transactions(
            ReconcileInput(
                data=PeriodData.model_validate(stored),
                amount_tolerance=inp.amount_tolerance,
                date_tolerance_days=inp.date_tolerance_days,
            )
        )
        ref = await asyncio.to_thread(self.payloads.put, recon.model_dump(mode="json"))
        return ReconciliationSummary(
            matched=len(recon.matches),
            unmatched_bank=recon.unmatched_bank,
            unmatched_ledger=recon.unmatched_ledger,
            duplicate_ledger=recon.duplicate_ledger,
            reconciliation=ref.model_copy(update={"preview": f"{len(recon.matches)} matches"}),
        )


__all__ = ["CloseDataActivities"]
