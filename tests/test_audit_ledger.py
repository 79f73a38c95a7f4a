"""The audit ledger on a real database: hash chain, idempotent writes, tamper detection.

Runs on SQLite always and on PostgreSQL when one is reachable.
"""

from __future__ import annotations

import concurrent.futures

import pytest
from sqlmodel import text

from activities.audit import AuditLedger
from activities.database import Database
from workflows.contracts import AuditEvent


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, database_url: str) -> AuditLedger:
    url = database_url if request.param == "sqlite" else request.getfixturevalue("pg_database")
    db = Database(url)
    db.create_tables()
    with db.session() as s:  # the pg database is shared by the session: start clean
        s.exec(text("DELETE FROM audit_record"))  # type: ignore[call-overload]
    return AuditLedger(db)


def event(seq: str, workflow_id: str = "wf-1", **kw: object) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "workflow_id": workflow_id,
            "run_id": "run-1",
            "seq": seq,
            "actor": "carol",
            "action": "approval.approved",
            "rationale": "fine",
            **kw,
        }
    )


def test_writes_are_idempotent_per_workflow_run_and_seq(ledger: AuditLedger) -> None:
    first = ledger.append([event("wf/1"), event("wf/2")])
    again = ledger.append([event("wf/1"), event("wf/2"), event("wf/3")])
    assert (first.written, first.already_present) == (2, 0)
    assert (again.written, again.already_present) == (1, 2)
    assert [r.seq for r in ledger.trail("wf-1")] == ["wf/1", "wf/2", "wf/3"]
    assert ledger.verify().ok


def test_a_few_rows_of_one_run_or_of_several_are_checked_against_the_ledger_alike(
    ledger: AuditLedger,
) -> None:
    """Up to four rows of one run are looked up together with the chain head (one statement);
    other batches the long way: the same rows are written either way."""
    ledger.append([event("wf/1"), event("wf/1", workflow_id="wf-2")])
    mixed = ledger.append([event("wf/1"), event("wf/2", workflow_id="wf-2"), event("wf/2")])
    repeated = ledger.append([event("wf/3"), event("wf/3"), event("wf/2")])
    assert (mixed.written, mixed.already_present) == (2, 1)
    assert (repeated.written, repeated.already_present) == (1, 2)
    assert [r.seq for r in ledger.trail("wf-1")] == ["wf/1", "wf/2", "wf/3"]
    assert [r.seq for r in ledger.trail("wf-2")] == ["wf/1", "wf/2"]
    assert [r.position for r in ledger.trail("wf-1")] == [1, 4, 5]
    assert ledger.verify().ok


def test_verifier_names_an_edited_row(ledger: AuditLedger) -> None:
    ledger.append([event(f"wf/{i}") for i in range(1, 6)])
    with ledger.db.session() as s:
        s.exec(  # type: ignore[call-overload]
            text("UPDATE audit_record SET rationale = 'nothing to see' WHERE position = 3")
        )
    report = ledger.verify()
    assert not report.ok
    assert report.problems == [
        "row 3 (wf-1 wf/3 approval.approved): content does not match its hash (edited)"
    ]


def test_verifier_detects_a_deleted_row(ledger: AuditLedger) -> None:
    ledger.append([event(f"wf/{i}") for i in range(1, 6)])
    with ledger.db.session() as s:
        s.exec(text("DELETE FROM audit_record WHERE position = 2"))  # type: ignore[call-overload]
    problems = ledger.verify().problems
    assert "rows 2..2 are missing (deleted)" in problems
    assert any(p.startswith("row 3 ") and "does not chain" in p for p in problems)


def test_concurrent_appends_keep_one_unbroken_chain(ledger: AuditLedger) -> None:
    def write(n: int) -> None:
        for i in range(10):
            ledger.append([event(f"act/{i}", workflow_id=f"wf-{n}")])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.rows_checked == 80
