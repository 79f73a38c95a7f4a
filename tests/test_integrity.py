"""Orphans found and repaired: a run terminated with side effects standing is listed by
``baton doctor``, ``baton repair`` runs its compensations exactly once (audited), a second repair
does nothing and says so, and completed runs are never listed. Real dev server, real worker,
real database; the CLI runs as users run it (a separate ``baton`` process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel import select

from activities.database import JournalPosting
from activities.orphans import find_orphans
from activities.seed import seed_period
from tests.conftest import Harness
from tests.test_finance_close import actions, net_by_entry, postings
from tests.test_hr_onboarding import (
    grants,
    new_hire,
    start_awaiting_approval,
)
from tests.test_operations import run_cli
from workflows.contracts.integrity import DoctorInput, DoctorReport


async def doctor(h: Harness, until: Callable[[DoctorReport], bool]) -> DoctorReport:
    """The doctor's report once visibility has caught up (it is eventually consistent)."""
    inp = DoctorInput(task_queue=h.client.task_queue, since_seconds=3600)
    async with asyncio.timeout(30):
        while True:
            report = await find_orphans(h.db, h.temporal, inp)
            if until(report):
                return report
            await asyncio.sleep(0.3)


async def cli_json(h: Harness, *args: str, expect: int = 0) -> Any:
    done = await run_cli(h, *args, "--json")
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(done.stdout)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(30):
        while not await check():
            await asyncio.sleep(0.3)


async def test_a_terminated_close_is_found_and_repaired_exactly_once(harness: Harness) -> None:
    h = harness
    done_period = f"{int(h.period[:4]) + 5000}-10"  # a close of its own that completes
    seed_period(h.db, h.tenant, done_period)
    async with h.worker():
        completed, request = await h.start_close_awaiting_approval(period=done_period)
        await h.client.approve(
            completed.id, approver="carol", rationale="ok", action_digest=request.action_digest
        )
        await completed.result()

        handle = await h.client.start_finance_close(h.start_input())
        posted = {p.entry_id for p in (await h.wait_for_pending(handle.id)).posted}
        assert posted, "the close posts the small entries before it waits for approval"
        await h.temporal.get_workflow_handle(handle.id).terminate("operator pulled the plug")

        report = await doctor(h, lambda r: any(o.workflow_id == handle.id for o in r.orphans))
        [orphan] = report.orphans  # the completed close is not listed
        assert orphan.status == "TERMINATED" and orphan.workflow_type == "FinanceClose"
        assert {e.kind for e in orphan.effects} == {"journal_posting"}
        standing = {p.posting_id for p in postings(h)}
        assert {e.id for e in orphan.effects} == standing and len(standing) == len(posted)
        assert all(e.compensation == "reverse_journal_entry" for e in orphan.effects)

        # the CLI lists the same, and the Schedule's check audits what it found
        listed = await cli_json(h, "doctor")
        assert [o["workflow_id"] for o in listed["orphans"]] == [handle.id]
        text = await run_cli(h, "doctor", "--since", "1h")
        assert text.returncode == 0, text.stderr
        assert "1 orphaned run(s)" in text.stdout and "TERMINATED" in text.stdout
        assert f"repair: baton repair {handle.id} --run-id {orphan.run_id}" in text.stdout
        assert all(f"journal_posting {pid}:" in text.stdout for pid in standing)
        bad = await run_cli(h, "doctor", "--since", "yesterday")
        assert bad.returncode == 2 and "--since: expected a duration like" in bad.stderr
        scheduled = await run_cli(h, "doctor", "--schedule", "--every", "1h")
        assert scheduled.returncode == 0, scheduled.stderr
        try:

            async def found_by_schedule() -> bool:
                return "integrity.orphans_found" in {
                    r.action
                    for wf in [
                        w
                        async for w in h.temporal.list_workflows(
                            f"WorkflowType = 'BatonDoctor' AND TaskQueue = '{h.client.task_queue}'"
                        )
                    ]
                    for r in h.runtime.ledger.trail(wf.id)
                }

            await eventually(found_by_schedule)
        finally:
            unscheduled = await run_cli(h, "doctor", "--unschedule")
            assert "deleted schedule" in unscheduled.stdout, unscheduled.stderr

        first = await cli_json(h, "repair", handle.id)
        assert first["status"] == "repaired" and first["run_id"] == orphan.run_id
        assert sorted(r["effect"]["id"] for r in first["repaired"] if r["undone"]) == sorted(
            standing
        )
        after_first = postings(h)
        # every posting of the orphan is reversed once, and its entries net to zero
        reversals = [p for p in after_first if p.reverses_posting_id is not None]
        assert sorted(p.reverses_posting_id or "" for p in reversals) == sorted(standing)
        assert set(net_by_entry(after_first).values()) == {0}

        second = await cli_json(h, "repair", handle.id)
        assert second["status"] == "nothing_to_repair" and second["repaired"] == []
        assert "nothing to repair" in second["message"]
        assert len(postings(h)) == len(after_first)  # nothing posted, nothing reversed again

        # a completed run is refused: its postings are the close's result
        refused = await cli_json(h, "repair", completed.id, expect=1)
        assert refused["status"] == "refused" and "completed" in refused["message"]
        with h.db.read_session() as s:
            done_rows = s.exec(
                select(JournalPosting).where(JournalPosting.period == done_period)
            ).all()
        assert done_rows and all(p.reverses_posting_id is None for p in done_rows)

        assert (await doctor(h, lambda r: True)).orphans == []

    # the audit trail: the orphan's own trail says it was repaired (once, then nothing to do);
    # the repair's trail holds each reversal
    trail = actions(h, handle.id)
    assert trail.count("repair.repaired") == 1 and trail.count("repair.nothing_to_repair") == 1
    repair_trail = actions(h, f"repair/{handle.id}")
    assert repair_trail.count("ledger.reversed") == len(standing)
    assert h.runtime.ledger.verify().ok


async def test_a_terminated_onboarding_has_its_grants_revoked_once(harness: Harness) -> None:
    h = harness
    hire = new_hire(h)
    async with h.worker():
        handle, _ = await start_awaiting_approval(h, hire)
        granted = grants(h, hire.employee_id)
        assert len(granted) == 4 and all(g.revoked_at is None for g in granted)
        await h.temporal.get_workflow_handle(handle.id).terminate("stuck")

        report = await doctor(h, lambda r: any(o.workflow_id == handle.id for o in r.orphans))
        [orphan] = [o for o in report.orphans if o.workflow_id == handle.id]
        assert {e.id for e in orphan.effects} == {g.grant_id for g in granted}
        assert {e.compensation for e in orphan.effects} == {"revoke_entitlement"}

        first = await cli_json(h, "repair", handle.id)
        assert first["status"] == "repaired"
        assert sum(r["undone"] for r in first["repaired"]) == 4
        revoked = grants(h, hire.employee_id)
        assert all(g.revoked_at is not None for g in revoked)
        # the same idempotency keys the saga would have used
        assert {g.revoke_key for g in revoked} == {f"{g.idempotency_key}/revoke" for g in granted}

        second = await cli_json(h, "repair", handle.id)
        assert second["status"] == "nothing_to_repair"
        assert [g.revoked_at for g in grants(h, hire.employee_id)] == [
            g.revoked_at for g in revoked
        ]
    assert actions(h, f"repair/{handle.id}").count("idp.revoked") == 4
    assert "repair.repaired" in actions(h, handle.id)
