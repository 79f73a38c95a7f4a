"""Contracts of the finance close's data by reference (activities/close_data.py): the period's
ledger and bank statement, and the full reconciliation, stay in the payload store
(activities/payload_store.py); the close's history carries their :class:`PayloadRef`, the
counts and only the lines an agent has to explain.

Imports only pydantic, the standard library and other contract modules (never the package's
``__init__``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from workflows.contracts.base import Contract, Money
from workflows.contracts.ledger import BankLine, LedgerLine
from workflows.contracts.tools import PayloadRef


class PeriodDataSummary(Contract):
    """What the close needs of the collected period: its status, the counts and the reference
    to the stored :class:`~workflows.contracts.PeriodData`."""

    tenant: str
    period: str
    period_status: Literal["open", "closed"]
    ledger_entries: int = Field(ge=0)
    bank_lines: int = Field(ge=0)
    data: PayloadRef = Field(description="The stored PeriodData (ledger + bank statement).")


class ReconcileByRefInput(Contract):
    """Reconcile the stored period data (the reference a :class:`PeriodDataSummary` carries)."""

    data: PayloadRef
    amount_tolerance: Money = Decimal("0.05")
    date_tolerance_days: int = 3


class ReconciliationSummary(Contract):
    """What the close needs of a reconciliation: the match count, the lines left for the
    reconciler agent, and the reference to the stored full
    :class:`~workflows.contracts.Reconciliation` (every match)."""

    matched: int = Field(ge=0)
    unmatched_bank: list[BankLine]
    unmatched_ledger: list[LedgerLine]
    duplicate_ledger: list[LedgerLine] = Field(description="Second and later copies of entries.")
    reconciliation: PayloadRef = Field(description="The stored Reconciliation (every match).")


class CloseData(Contract):
    """The collected and reconciled period as the close uses it, whichever way it was carried
    (in the history, or by reference)."""

    period_status: Literal["open", "closed"]
    ledger_entries: int
    bank_lines: int
    matched: int
    unmatched_bank: list[BankLine]
    unmatched_ledger: list[LedgerLine]
    duplicate_ledger: list[LedgerLine]


__all__ = [
    "CloseData",
    "PeriodDataSummary",
    "ReconcileByRefInput",
    "ReconciliationSummary",
]
