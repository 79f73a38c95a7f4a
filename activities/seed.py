"""Seed the systems of record with a realistic month of cash activity.

A month has a few hundred ledger entries and bank lines. Most match exactly, some only within a
tolerance (rounding, value-date lag), and some are the items a month-end close exists for:
bank fees and interest never booked, duplicated ledger entries, mis-keyed amounts, deposits
nobody can explain, and receipts missing from the books. The same (tenant, period) always gives
the same month, so demos and tests are repeatable.

Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlmodel import delete, select

from activities.database import (
    AccountingPeriod,
    BankStatementLine,
    Database,
    JournalPosting,
    LedgerEntryRow,
)

CUSTOMERS = ["Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Litware", "Proseware"]
SUPPLIERS = ["Adatum Office", "Blue Yonder Freight", "City Power", "Lucerne Legal", "Margie Travel"]


#: Personal data that ``seed_period(..., pii_samples=True)`` writes into the free text of items
#: the close cannot match, so they reach the agents: one of each kind the redaction masks.
PII_SAMPLES: dict[str, str] = {
    "email": "jane.doe@example.com",
    "phone": "+44 20 7946 0958",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "card": "4111 1111 1111 1111",
    "us_ssn": "078-05-1120",
    "uk_nino": "AB 12 34 56 C",
}


@dataclass(frozen=True)
class SeedSummary:
    tenant: str
    period: str
    ledger_entries: int
    bank_lines: int


def _rng(tenant: str, period: str) -> random.Random:
    seed = int(hashlib.sha256(f"{tenant}/{period}".encode()).hexdigest()[:16], 16)
    return random.Random(seed)


def seed_period(
    db: Database, tenant: str, period: str, *, transactions: int = 220, pii_samples: bool = False
) -> SeedSummary:
    """(Re)create the period's ledger and bank statement; postings of the period are removed.

    ``pii_samples`` puts the ``PII_SAMPLES`` into the memos and descriptions of unmatched items
    (everything else, amounts and references included, stays the same month)."""
    rng = _rng(tenant, period)
    year, month = (int(p) for p in period.split("-"))
    first = date(year, month, 1)
    days = ((first.replace(day=28) + timedelta(days=4)).replace(day=1) - first).days

    ledger: list[LedgerEntryRow] = []
    bank: list[BankStatementLine] = []

    def day(n: int) -> str:
        return (first + timedelta(days=min(max(n, 0), days - 1))).isoformat()

    def line(cents: int, ref: str) -> dict[str, Any]:
        """The columns a ledger entry and a bank line share (``PeriodLine``)."""
        return {"tenant": tenant, "period": period, "amount_cents": cents, "reference": ref}

    def add_ledger(booked: int, account: str, cents: int, ref: str, desc: str) -> LedgerEntryRow:
        row = LedgerEntryRow(
            **line(cents, ref),
            entry_id=f"L{len(ledger) + 1:04d}",
            booked_on=day(booked),
            account=account,
            description=desc,
        )
        ledger.append(row)
        return row

    def add_bank(value: int, cents: int, ref: str, memo: str) -> None:
        bank.append(
            BankStatementLine(
                **line(cents, ref),
                line_id=f"B{len(bank) + 1:04d}",
                value_date=day(value),
                memo=memo,
            )
        )

    # Ordinary business: receipts from customers and payments to suppliers that match exactly.
    for i in range(transactions):
        d = rng.randrange(0, days - 3)
        if rng.random() < 0.55:
            who = rng.choice(CUSTOMERS)
            cents = rng.randrange(20_000, 1_500_000)
            ref = f"INV-{period.replace('-', '')}-{i:04d}"
            add_ledger(d, "1200-accounts-receivable", cents, ref, f"Receipt from {who}")
            bank_memo = f"Incoming transfer {who}"
        else:
            who = rng.choice(SUPPLIERS)
            cents = -rng.randrange(5_000, 900_000)
            ref = f"PAY-{period.replace('-', '')}-{i:04d}"
            add_ledger(d, "2000-accounts-payable", cents, ref, f"Payment to {who}")
            bank_memo = f"Outgoing transfer {who}"
        # ~8% clear with a value-date lag or a rounding difference (tolerance matches).
        roll = rng.random()
        if roll < 0.04:
            add_bank(d + rng.randint(1, 3), cents, ref, bank_memo)
        elif roll < 0.08:
            add_bank(d, cents + rng.choice([-3, -1, 2, 4]), ref, bank_memo + " (FX rounding)")
        else:
            add_bank(d, cents, ref, bank_memo)

    # Bank fees and interest the books never saw.
    for n, (cents, memo) in enumerate(
        [
            (-2_500, "Monthly account fee"),
            (-1_850, "Wire charge"),
            (-1_850, "Wire charge"),
            (-4_200, "Card processing fee"),
            (-900, "SWIFT charge"),
            (-12_000, "Overdraft fee"),
        ]
    ):
        add_bank(days - 1 - n % 3, cents, f"FEE-{n}", memo)
    add_bank(days - 1, 31_742, "INT-1", "Credit interest")
    add_bank(days - 2, 8_915, "INT-2", "Interest on deposit")

    # Duplicated ledger entries: the same receipt booked twice.
    for src in rng.sample(ledger[:transactions], 3):
        add_ledger(
            int(src.booked_on[-2:]) - 1,
            src.account,
            src.amount_cents,
            src.reference,
            src.description + " (entered twice)",
        )

    # Mis-keyed amounts: digits transposed when booking, so neither side matches.
    for n, (booked, real) in enumerate([(123_400, 132_400), (457_800, 475_800), (6_150, 5_160)]):
        ref = f"INV-{period.replace('-', '')}-MK{n}"
        add_ledger(10 + n, "1200-accounts-receivable", booked, ref, "Receipt (keyed by hand)")
        add_bank(10 + n, real, ref, "Incoming transfer Contoso")

    # Money in that nobody can explain, and receipts missing from the books.
    add_bank(17, 1_845_000, "UNKNOWN-1", "Deposit without reference")
    add_bank(21, 48_000, "UNKNOWN-2", "Cash deposit branch 0042")
    add_bank(5, 76_500, "RFD-1", "Refund from supplier Adatum Office")
    add_bank(12, 230_000, "CB-1", "Chargeback reversal Fabrikam")

    if pii_samples:
        _add_pii_samples(ledger, bank)

    with db.session() as session:
        for table in (LedgerEntryRow, BankStatementLine, JournalPosting):
            session.exec(
                delete(table).where(table.tenant == tenant, table.period == period)  # type: ignore[call-overload, arg-type]
            )
        existing = session.exec(
            select(AccountingPeriod).where(
                AccountingPeriod.tenant == tenant, AccountingPeriod.period == period
            )
        ).first()
        if existing:
            existing.status, existing.closed_by, existing.closed_at = "open", None, None
            session.add(existing)
        else:
            session.add(AccountingPeriod(tenant=tenant, period=period, status="open"))
        session.add_all(ledger)
        session.add_all(bank)
    return SeedSummary(tenant, period, len(ledger), len(bank))


def _add_pii_samples(ledger: list[LedgerEntryRow], bank: list[BankStatementLine]) -> None:
    """Free text of unmatched items that names people, as real bank memos do."""
    p = PII_SAMPLES
    memos = {
        "UNKNOWN-1": f"Deposit without reference, payer {p['email']}",
        "UNKNOWN-2": f"Cash deposit branch 0042, depositor tel {p['phone']}",
        "RFD-1": f"Refund from supplier Adatum Office to IBAN {p['iban']}",
        "CB-1": f"Chargeback reversal Fabrikam card {p['card']}",
    }
    for line in bank:
        if line.reference in memos:
            line.memo = memos[line.reference]
    notes = [f"customer SSN {p['us_ssn']}", f"customer NI number {p['uk_nino']}"]
    keyed = [e for e in ledger if e.description == "Receipt (keyed by hand)"]
    for entry, note in zip(keyed, notes, strict=False):
        entry.description = f"Receipt (keyed by hand), {note}"


__all__ = [
    "CUSTOMERS",
    "PII_SAMPLES",
    "SUPPLIERS",
    "SeedSummary",
    "seed_period",
]
