"""The finance close's data by reference (workflows/close_data.py, activities/close_data.py):
the period's ledger and bank statement, and every match, stay in the payload store; the close's
history carries references, counts and only the lines the reconciler agent explains. What a
controller notices: the same counts in the result, a history a fraction of the size, no matched
ledger or bank line in it; and closes recorded before (finance_close_claimed.json, carrying the
data) and after (finance_close_by_reference.json) both replay."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from activities.database import BankStatementLine, LedgerEntryRow, from_cents
from activities.finance import reconcile
from activities.payload_store import PayloadStore
from tests.conftest import Harness
from tests.test_business_key_claims import approve_close
from workflows.close_data import DATA_BY_REFERENCE_PATCH
from workflows.contracts import BankLine, LedgerLine, PeriodData, ReconcileInput, Reconciliation
from workflows.finance_close import FinanceCloseWorkflow
from workflows.plugin import BatonPlugin

GOLDEN = Path(__file__).parent / "golden"
BY_REFERENCE = GOLDEN / "finance_close_by_reference.json"
BEFORE = GOLDEN / "finance_close_claimed.json"  # the same default close, data in the history


def history_bytes(history: WorkflowHistory) -> int:
    return sum(event.ByteSize() for event in history.events)


def payload_text(history_json: dict[str, Any]) -> str:
    """Every payload of a history, decoded (the JSON export base64-encodes them)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(history_json)
    return "\n".join(found)


def period_data(h: Harness) -> PeriodData:
    """The period's books as seeded (the systems of record, not the workflow)."""
    with h.db.read_session() as s:
        ledger = s.exec(
            select(LedgerEntryRow).where(
                LedgerEntryRow.tenant == h.tenant, LedgerEntryRow.period == h.period
            )
        ).all()
        bank = s.exec(
            select(BankStatementLine).where(
                BankStatementLine.tenant == h.tenant, BankStatementLine.period == h.period
            )
        ).all()
        return PeriodData(
            tenant=h.tenant,
            period=h.period,
            period_status="open",
            ledger=[
                LedgerLine(
                    **r.model_dump(include=set(LedgerLine.model_fields) - {"amount"}),
                    amount=from_cents(r.amount_cents),
                )
                for r in ledger
            ],
            bank=[
                BankLine(
                    **r.model_dump(include=set(BankLine.model_fields) - {"amount"}),
                    amount=from_cents(r.amount_cents),
                )
                for r in bank
            ],
        )


async def test_a_close_carries_its_data_by_reference(harness: Harness) -> None:
    h = harness
    async with h.worker():
        handle = await h.client.start_finance_close(h.start_input())
        await approve_close(h, handle.id)
        result = await handle.result()
        history = await handle.fetch_history()

    # the result's counts are the reconciliation of the books, as before
    data = period_data(h)
    expected = reconcile(ReconcileInput(data=data))
    assert (
        result.ledger_entries,
        result.bank_lines,
        result.matched,
        result.unmatched_bank_lines,
        result.unmatched_ledger_entries,
    ) == (
        len(data.ledger),
        len(data.bank),
        len(expected.matches),
        len(expected.unmatched_bank),
        len(expected.unmatched_ledger),
    )
    assert result.matched > 0 and result.posted

    # no matched line crosses the history; the lines the agent explains do
    text = payload_text(history.to_json_dict())
    ids = [e.entry_id for e in data.ledger] + [b.line_id for b in data.bank]
    in_history = {i for i in ids if f'"{i}"' in text}
    matched = {m.entry_id for m in expected.matches} | {m.bank_line_id for m in expected.matches}
    assert not matched & in_history, sorted(matched & in_history)[:5]
    explained = {e.entry_id for e in expected.unmatched_ledger + expected.duplicate_ledger}
    assert explained | {b.line_id for b in expected.unmatched_bank} <= in_history

    # the full reconciliation is in the payload store, named by the history's reference
    stored = [
        PayloadStore(h.db).get(ref["digest"])
        for ref in _refs(history.to_json_dict(), "reconciliation")
    ]
    assert [Reconciliation.model_validate(s) for s in stored] == [expected]

    # a fraction of the bytes of the same default close recorded with its data in the history
    before = WorkflowHistory.from_json("before", BEFORE.read_text())
    old, new = history_bytes(before), history_bytes(history)
    print(
        f"finance close history: before {old} bytes / {len(before.events)} events, "
        f"by reference {new} bytes / {len(history.events)} events"
    )
    assert f'"{data.ledger[0].entry_id}"' in payload_text(json.loads(BEFORE.read_text()))
    assert new < 0.6 * old


def _refs(history_json: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """The ``field`` of every JSON payload object in the history that has one."""
    out = []
    for chunk in payload_text(history_json).split("\n"):
        try:
            value = json.loads(chunk)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get(field), dict):
            out.append(value[field])
    return out


async def test_history_of_a_close_by_reference_replays(harness: Harness) -> None:
    """A close recorded on the by-reference path replays on today's code (the one recorded
    before it, finance_close_claimed.json, replays in tests/test_business_key_claims.py).
    Regenerate only for a deliberate change behind ``workflow.patched``:
    ``BATON_REGENERATE_GOLDEN=1``."""
    if os.environ.get("BATON_REGENERATE_GOLDEN") == "1":
        async with harness.worker():
            handle = await harness.client.start_finance_close(harness.start_input())
            await approve_close(harness, handle.id)
            await handle.result()
        recorded = (await handle.fetch_history()).to_json_dict()
        BY_REFERENCE.write_text(json.dumps(recorded, indent=1))
    if not BY_REFERENCE.exists():
        pytest.fail(f"{BY_REFERENCE} is missing: run with BATON_REGENERATE_GOLDEN=1")
    text = BY_REFERENCE.read_text()
    assert DATA_BY_REFERENCE_PATCH in payload_text(json.loads(text))
    assert "collect_period_data_by_reference" in text and '"collect_period_data"' not in text
    history = WorkflowHistory.from_json("golden-close-by-reference", text)
    replayer = Replayer(workflows=[FinanceCloseWorkflow], plugins=[BatonPlugin()])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
