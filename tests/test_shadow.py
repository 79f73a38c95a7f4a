"""Shadow runs: every agent step runs, nothing reaches the systems of record (the intended
postings are in the shadow outbox), approvals are simulated from policy, and `baton shadow diff`
compares the shadow run with production."""

from __future__ import annotations

import json

from sqlmodel import select

from activities.database import ShadowAction
from tests.conftest import Harness
from tests.test_approvals import FEE, decision, posted, script_entries
from tests.test_finance_close import actions, period_status, postings
from tests.test_operations import run_cli
from workflows import visibility


def shadow_actions(h: Harness, workflow_id: str) -> list[ShadowAction]:
    with h.db.session() as s:
        return list(s.exec(select(ShadowAction).where(ShadowAction.workflow_id == workflow_id)))


async def test_shadow_run_commits_nothing_and_matches_production(harness: Harness) -> None:
    h = harness
    big = ("ADJ-BIG", "6900-suspense", "60000.00")  # needs a controller and a CFO
    script_entries(h, FEE, big)
    async with h.worker():
        shadow = await h.client.start_finance_close(h.start_input(shadow=True))
        assert shadow.id == f"shadow/finance-close/{h.tenant}/{h.period}"
        shadow_result = await shadow.result()  # nobody approves: simulated from policy

    # nothing reached the ledger or the period; the intended actions are in the shadow outbox
    assert postings(h) == [] and period_status(h) == "open"
    recorded = {(a.action, a.entry_id) for a in shadow_actions(h, shadow.id)}
    assert recorded == {("post", "ADJ-FEE"), ("post", "ADJ-BIG"), ("close_period", "")}
    (simulated,) = shadow_result.approvals
    assert len(simulated.approvers) == 2 and "alice" not in simulated.approvers
    assert "approval.simulated" in actions(h, shadow.id)
    attrs = (await shadow.describe()).typed_search_attributes
    assert attrs.get(visibility.SHADOW) is True
    assert h.model.attempts(agent="reconciler", match=h.period) == 1  # the agents really ran

    # production, same input, real approvals
    script_entries(h, FEE, big)
    async with h.worker():
        prod, request = await h.start_close_awaiting_approval()
        await h.client.decide(prod.id, decision(request, "carol"))
        await h.client.decide(prod.id, decision(request, "ivan"))
        await prod.result()
    assert set(posted(h)) == {"ADJ-FEE", "ADJ-BIG"}

    diff = await h.client.shadow_diff(shadow.id)
    assert diff.production_id == prod.id and diff.same_actions == 2 and diff.differences == []
    assert diff.production_approvals == ["carol, ivan"]
    cli = await run_cli(h, "shadow", "diff", shadow.id)
    assert cli.returncode == 0, cli.stderr
    assert "same actions: 2; different: 0" in cli.stdout


async def test_diff_names_what_the_shadow_run_would_do_differently(harness: Harness) -> None:
    h = harness
    script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-1500.00"))
    async with h.worker():
        prod, request = await h.start_close_awaiting_approval()
        await h.client.decide(prod.id, decision(request, "carol"))
        await prod.result()
        # the candidate prompt/model answers differently: a smaller fee, no approval needed
        script_entries(h, FEE, ("ADJ-MID", "6100-bank-fees", "-150.00"))
        shadow = await h.client.start_finance_close(h.start_input(shadow=True))
        await shadow.result()
    cli = await run_cli(h, "shadow", "diff", shadow.id, "--json")
    assert cli.returncode == 1  # actions differ
    diff = json.loads(cli.stdout)
    assert diff["same_actions"] == 1
    assert diff["differences"] == [
        {
            "entry_id": "ADJ-MID",
            "production": "post -1500.00 to 6100-bank-fees, approved by carol",
            "shadow": "post -150.00 to 6100-bank-fees",
        }
    ]
