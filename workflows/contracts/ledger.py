"""The books: ledger and bank lines, the adjusting entries the finance close proposes (what
approvers review and amend), compliance findings, postings and close exceptions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workflows.contracts.base import Contract, Money
from workflows.contracts.security import Id, Name, Text

# --------------------------------------------------------------------------------------------
# Systems of record
# --------------------------------------------------------------------------------------------


class LedgerLine(Contract):
    entry_id: str
    booked_on: str  # ISO date
    account: str
    amount: Money  # positive = debit to cash (money in), negative = money out
    reference: str
    description: str


class BankLine(Contract):
    line_id: str
    value_date: str  # ISO date
    amount: Money
    reference: str
    memo: str


class PostedEntry(Contract):
    entry_id: str
    account: str
    amount: Money
    posting_id: str
    approved_by: list[str] = Field(
        default=[], description="Everyone whose approval the posting carried (N-of-M)."
    )
    amended_by: str | None = Field(
        default=None, description="The approver who amended this entry before it was posted."
    )


class CloseException(Contract):
    """An adjusting entry policy denied: held as an exception of the close, never posted."""

    entry_id: str
    account: str
    amount: Money
    reasons: list[str] = Field(description="Why policy denied posting it.")
    decision_id: str = Field(description="The posting policy's decision (its audit row).")


class AdjustingEntry(Contract):
    """One adjusting journal entry the reconciler agent proposes (LLM output, schema-validated)."""

    entry_id: Id = Field(description="Stable id, e.g. 'ADJ-<bank line id or ledger id>'.")
    account: Name = Field(description="Ledger account to post against, e.g. '6100-bank-fees'.")
    amount: Money = Field(description="Signed amount; positive debits cash.")
    source_ids: list[Id] = Field(description="Bank line / ledger entry ids this entry explains.")
    rationale: Text = Field(min_length=1, description="Why this entry is needed.")


class ComplianceFinding(Contract):
    entry_id: Id
    severity: Literal["info", "warning", "blocker"]
    note: Text


__all__ = [
    "AdjustingEntry",
    "BankLine",
    "CloseException",
    "ComplianceFinding",
    "LedgerLine",
    "PostedEntry",
]
