"""Seed many accounting periods quickly: one realistic period, then copies of its rows.

``activities.seed.seed_period`` takes ~15 ms per period here; the throughput runs need hundreds
of periods (each close is its own tenant-period), so the first period is seeded for real and the
others get a copy of its ledger and bank rows, in one transaction, with INSERT ... SELECT.
"""

from __future__ import annotations

from sqlalchemy import Table, insert, literal, select

from activities.database import AccountingPeriod, BankStatementLine, Database, LedgerEntryRow
from activities.seed import seed_period

TABLES: list[Table] = [
    AccountingPeriod.__table__,  # type: ignore[attr-defined]
    LedgerEntryRow.__table__,  # type: ignore[attr-defined]
    BankStatementLine.__table__,  # type: ignore[attr-defined]
]


def seed_periods(
    db: Database, periods: list[tuple[str, str]], *, transactions: int = 20
) -> tuple[int, int]:
    """Open every (tenant, period) with the same month of data; (ledger rows, bank lines) each."""
    template_tenant, template_period = periods[0]
    summary = seed_period(db, template_tenant, template_period, transactions=transactions)
    with db.session() as session:
        for tenant, period in periods[1:]:
            for table in TABLES:
                columns = [c for c in table.columns if c.name != "id"]
                source = select(
                    *[
                        literal(tenant).label("tenant")
                        if c.name == "tenant"
                        else literal(period).label("period")
                        if c.name == "period"
                        else c
                        for c in columns
                    ]
                ).where(table.c.tenant == template_tenant, table.c.period == template_period)
                session.execute(insert(table).from_select([c.name for c in columns], source))
    return summary.ledger_entries, summary.bank_lines


def period_names(count: int, *, first_year: int) -> list[tuple[str, str]]:
    """Distinct (tenant, period) pairs; tenants must exist in policy data (acme, globex)."""
    out: list[tuple[str, str]] = []
    year = first_year
    while len(out) < count:
        for month in range(1, 13):
            for tenant in ("acme", "globex"):
                out.append((tenant, f"{year:04d}-{month:02d}"))
        year += 1
    return out[:count]
