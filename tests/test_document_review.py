"""Document review allocation by auction, against the real dev server: the tiers bid through
the real ``openai`` SDK on the local (scripted) model server, the allocator awards, the winner
reviews, the review is published to the register (SQLite), and every bid and award is in the
audit trail. Failures: a late bidder, no capable bidder (escalated), a failing winner
(re-auctioned without it), every winner failing, and a cancellation while bids are out."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from activities.auction import DocumentReviewRow
from tests.conftest import Harness
from tests.support.scripted_model import Fault
from workflows.contracts.auction import DEFAULT_TIERS

NDA = "Mutual NDA. Each party keeps the other's information confidential for two years."
CONTRACT = (
    "Master services agreement. The supplier accepts unlimited liability for data loss. "
    "The agreement will automatically renew each year; a penalty of 5% applies to late work."
)


def task(task_id: str, requires: str, text: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "requires": [requires],
        "document": {"doc_id": f"doc-{task_id}", "title": task_id.upper(), "text": text},
    }


def batch(h: Harness, *tasks: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "tenant": h.tenant,
        "batch_id": f"b-{uuid.uuid4().hex[:10]}",
        "requested_by": "lee",
        "tiers": [t.model_dump() for t in DEFAULT_TIERS],
        "tasks": list(tasks),
        "bid_deadline_seconds": 10,
        **overrides,
    }


def audit(h: Harness, workflow_id: str, action: str) -> list[dict[str, Any]]:
    return [
        {"actor": r.actor, "detail": json.loads(r.detail_json), "rationale": r.rationale}
        for r in h.runtime.ledger.trail(workflow_id)
        if r.action == action
    ]


def published(h: Harness, workflow_id: str) -> list[DocumentReviewRow]:
    with h.db.read_session() as s:
        return list(
            s.exec(select(DocumentReviewRow).where(DocumentReviewRow.workflow_id == workflow_id))
        )


async def test_each_task_goes_to_the_lowest_scoring_capable_bidder_and_is_audited(
    harness: Harness,
) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    # the large tier answers its bid on the NDA after the 3 s deadline: no bid from it there
    h.model.script(Fault.delay(5), match='"bidder":{"name":"large"')
    inp = batch(
        h,
        task(f"nda-{uid}", "review:nda", NDA),
        task(f"msa-{uid}", "review:contract", CONTRACT),
        bid_deadline_seconds=3,
    )
    async with h.worker():
        handle = await h.client.start_document_review(inp)
        assert handle.id == f"document-review/{h.tenant}/{inp['batch_id']}"
        result = await handle.result()
        await replays(handle)

    nda, msa = result.allocations
    # NDA: small and medium bid (large was late); small is cheapest and fastest
    assert (nda.status, nda.winner) == ("reviewed", "small")
    assert [b.bidder for b in nda.awards[0].ranked] == ["small", "medium"]
    assert nda.review is not None and nda.review.verdict == "approve"
    # contract: all three bid, small lacks the capability, medium scores lower than large
    assert (msa.status, msa.winner) == ("reviewed", "medium")
    assert msa.awards[0].rejected == {"small": "lacks capability review:contract"}
    assert [b.bidder for b in msa.awards[0].ranked] == ["medium", "large"]
    assert msa.review is not None and msa.review.verdict == "flag"
    assert any("unlimited liability" in f for f in msa.review.findings)
    assert result.cost_usd > 0 and result.tokens > 0

    bids = audit(h, handle.id, "auction.bid")
    assert sorted((b["detail"]["task_id"], b["detail"]["bidder"]) for b in bids) == [
        (f"msa-{uid}", "large"),
        (f"msa-{uid}", "medium"),
        (f"msa-{uid}", "small"),
        (f"nda-{uid}", "medium"),
        (f"nda-{uid}", "small"),
    ]
    assert all(b["detail"]["expected_cost_usd"] > 0 for b in bids)
    late = audit(h, handle.id, "auction.no_bid")
    assert [(n["actor"], n["rationale"]) for n in late] == [
        ("bidder:large", "missed the bid deadline (3 s)")
    ]
    awards = audit(h, handle.id, "auction.awarded")
    assert [a["detail"]["winner"] for a in awards] == ["small", "medium"]
    assert awards[0]["detail"]["no_bids"] == {"large": "missed the bid deadline (3 s)"}
    rows = published(h, handle.id)
    assert sorted((r.task_id, r.tier, r.verdict) for r in rows) == [
        (f"msa-{uid}", "medium", "flag"),
        (f"nda-{uid}", "small", "approve"),
    ]
    assert all(r.retracted_at is None for r in rows)
    # every answered bid and both reviews went through the governed agent call (audit rows)
    assert len(audit(h, handle.id, "agent.bid")) >= 5
    assert len(audit(h, handle.id, "agent.reviewed_document")) == 2


async def test_a_task_nobody_can_do_is_escalated_and_the_others_go_on(harness: Harness) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    inp = batch(h, task(f"med-{uid}", "review:medical", NDA), task(f"nda-{uid}", "review:nda", NDA))
    async with h.worker():
        result = await (await h.client.start_document_review(inp)).result()
    medical, nda = result.allocations
    assert medical.status == "escalated" and medical.escalation_type == "AuctionNoBids"
    assert medical.winner is None and medical.review is None
    assert "small: lacks capability review:medical" in medical.reason
    assert nda.status == "reviewed"
    wid = f"document-review/{h.tenant}/{inp['batch_id']}"
    [escalated] = audit(h, wid, "auction.escalated")
    assert escalated["rationale"].startswith("needs a human: no eligible bid in round 1")
    assert [r.task_id for r in published(h, wid)] == [f"nda-{uid}"]


async def test_the_award_policy_passes_over_tiers_not_cleared_for_a_confidential_document(
    harness: Harness,
) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    secret = {**task(f"nda-{uid}", "review:nda", NDA), "classification": "confidential"}
    inp = batch(h, secret)
    async with h.worker():
        result = await (await h.client.start_document_review(inp)).result()
    [alloc] = result.allocations
    # one round of bids: small won, was refused, medium won, was refused, large is cleared
    assert (alloc.status, alloc.winner) == ("reviewed", "large")
    assert [a.winner for a in alloc.awards] == ["small", "medium", "large"]
    assert {a.round for a in alloc.awards} == {1}
    assert alloc.denied == {
        "small": "tier 'small' is not cleared for confidential documents",
        "medium": "tier 'medium' is not cleared for confidential documents",
    }
    assert alloc.awards[-1].rejected == {
        "medium": "refused by the award policy: tier 'medium' is not cleared for confidential "
        "documents",
        "small": "refused by the award policy: tier 'small' is not cleared for confidential "
        "documents",
    }
    wid = f"document-review/{h.tenant}/{inp['batch_id']}"
    refused = audit(h, wid, "auction.award_refused")
    assert [r["detail"]["winner"] for r in refused] == ["small", "medium"]
    decisions = [r for r in h.runtime.ledger.trail(wid) if r.actor == "policy:baton/auction/award"]
    assert [r.action for r in decisions] == ["policy.deny", "policy.deny", "policy.allow"]
    assert [r.tier for r in published(h, wid)] == ["large"]


async def test_a_failing_winner_is_excluded_and_the_task_re_auctioned(harness: Harness) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    # the cheapest tier's model rejects the review request (a 400 is not retried)
    h.model.script(Fault.status(400), match='"tier":{"name":"small"')
    inp = batch(h, task(f"nda-{uid}", "review:nda", NDA))
    async with h.worker():
        result = await (await h.client.start_document_review(inp)).result()
    [alloc] = result.allocations
    assert (alloc.status, alloc.winner) == ("reviewed", "medium")
    assert [a.winner for a in alloc.awards] == ["small", "medium"]
    assert "small" in alloc.failed_winners and "HTTP 400" in alloc.failed_winners["small"]
    # round 2 asked only the others
    assert {b.bidder for b in alloc.awards[1].ranked} == {"medium", "large"}
    wid = f"document-review/{h.tenant}/{inp['batch_id']}"
    [failed] = audit(h, wid, "auction.winner_failed")
    assert failed["actor"] == "bidder:small"
    assert failed["rationale"] == "re-auctioning among the other bidders"
    assert [(r.tier, r.retracted_at) for r in published(h, wid)] == [("medium", None)]


async def test_when_every_winner_fails_within_the_rounds_the_task_is_escalated(
    harness: Harness,
) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    for tier in ("small", "medium"):
        h.model.script(Fault.status(400), match=f'"tier":{{"name":"{tier}"')
    inp = batch(h, task(f"nda-{uid}", "review:nda", NDA), max_rounds=2)
    async with h.worker():
        result = await (await h.client.start_document_review(inp)).result()
    [alloc] = result.allocations
    assert alloc.status == "escalated" and alloc.escalation_type == "AuctionAllWinnersFailed"
    assert [a.winner for a in alloc.awards] == ["small", "medium"]
    assert sorted(alloc.failed_winners) == ["medium", "small"]
    assert "every winner failed within 2 rounds" in alloc.reason
    assert published(h, f"document-review/{h.tenant}/{inp['batch_id']}") == []


async def test_cancelling_mid_auction_cancels_the_bids_and_retracts_published_reviews(
    harness: Harness,
) -> None:
    h = harness
    uid = uuid.uuid4().hex[:8]
    second = f"msa-{uid}"
    h.model.script(Fault.delay(8), match=f'"task_id":"{second}"')  # one bid of task 2 hangs
    inp = batch(h, task(f"nda-{uid}", "review:nda", NDA), task(second, "review:contract", CONTRACT))
    async with h.worker():
        handle = await h.client.start_document_review(inp)
        async with asyncio.timeout(30):
            while True:
                status = await h.client.document_review_status(handle.id)
                if status.current_task == second and len(published(h, handle.id)) == 1:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the bids of task 2 are out; one is hanging
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        events = [e async for e in handle.fetch_history_events()]
        status = await h.client.document_review_status(handle.id)
        await replays(handle)

    [row] = published(h, handle.id)
    assert row.task_id == f"nda-{uid}" and row.retracted_at is not None
    assert status.compensated == [f"retract review of nda-{uid}"]
    [cancelled] = audit(h, handle.id, "auction.cancelled")
    assert cancelled["detail"]["task_id"] == second
    assert len(audit(h, handle.id, "document_review.cancelled")) == 1
    assert len(audit(h, handle.id, "review.retracted")) == 1
    cancel_requested = [
        e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
    ]
    assert cancel_requested, "the outstanding bid activity was not cancelled"


async def test_bidders_stopped_by_the_kill_switch_do_not_bid(harness: Harness) -> None:
    from activities.kill_switch import KillSwitch

    h = harness
    KillSwitch(h.db, h.runtime.ledger).engage(
        "agent:auction_bidder", reason="bidding paused", by="ops"
    )
    async with h.worker():
        handle = await h.client.start_document_review(batch(h, task("a1", "review:nda", NDA)))
        result = await handle.result()
    [alloc] = result.allocations
    assert alloc.status == "escalated" and alloc.escalation_type == "AuctionNoBids"
    for tier in ("small", "medium", "large"):
        assert f"{tier}: stopped by the kill switch (agent:auction_bidder: bidding paused)" in (
            alloc.reason
        )
    assert result.cost_usd == 0.0 and published(h, handle.id) == []


async def test_the_kill_switch_holds_the_awarded_review_until_cleared(harness: Harness) -> None:
    from activities.kill_switch import KillSwitch

    h = harness
    switch = KillSwitch(h.db, h.runtime.ledger)
    switch.engage("agent:document_reviewer", reason="review audit", by="ops")
    async with h.worker():
        handle = await h.client.start_document_review(batch(h, task("b1", "review:nda", NDA)))
        async with asyncio.timeout(30):
            while not audit(h, handle.id, "kill_switch.held"):
                await asyncio.sleep(0.1)
        assert published(h, handle.id) == []
        switch.clear("agent:document_reviewer", reason="done", by="ops")
        assert handle.id in await h.client.release_held()
        result = await handle.result()
    [alloc] = result.allocations
    assert (alloc.status, alloc.winner, len(alloc.awards)) == ("reviewed", "small", 1)
    assert [r.task_id for r in published(h, handle.id)] == ["b1"]
    assert audit(h, handle.id, "kill_switch.released")


async def test_the_demo_step_auctions_the_sample_batch(harness: Harness) -> None:
    from baton.cli_auction import demo_auction

    h = harness
    async with h.worker():
        lines = await demo_auction(h.client, h.tenant)
    assert lines[0].startswith(f"7. document reviews by auction (document-review/{h.tenant}/demo-")
    assert lines[0].endswith(
        "nda-northwind -> small, invoice-4411 -> small, msa-fabrikam -> medium, "
        "opinion-export -> large"
    )
    assert "4 tasks" in lines[1]


async def replays(handle: Any) -> None:
    """The run's history replays on this code (no non-determinism)."""
    from temporalio.worker import Replayer

    from workflows.document_review import DocumentReviewWorkflow
    from workflows.plugin import BatonPlugin

    replayer = Replayer(workflows=[DocumentReviewWorkflow], plugins=[BatonPlugin()])
    await replayer.replay_workflow(await handle.fetch_history())


async def test_bad_input_fails_fast_naming_the_field(harness: Harness) -> None:
    from pydantic import ValidationError

    h = harness
    good = batch(h, task("t1", "review:nda", NDA))
    with pytest.raises(ValidationError, match="tiers"):
        await h.client.start_document_review({**good, "tiers": []})
    with pytest.raises(ValidationError, match="repeated: t1"):
        await h.client.start_document_review({**good, "tasks": [good["tasks"][0]] * 2})
    with pytest.raises(ValidationError, match="cannot both be 0"):
        await h.client.start_document_review(
            {**good, "rule": {"cost_weight": 0, "latency_weight": 0}}
        )
    with pytest.raises(ValidationError, match="capability"):
        await h.client.start_document_review({**good, "tasks": [task("t1", "Review NDA", NDA)]})


async def test_cli_auctions_the_sample_batch_and_prints_the_allocations(harness: Harness) -> None:
    from tests.test_operations import run_cli

    h = harness
    batch_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with h.worker():
        started = await run_cli(
            h, "auction", "review", "--tenant", h.tenant, "--batch-id", batch_id, "--sample",
            "--requested-by", "lee", "--wait",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        wid = f"document-review/{h.tenant}/{batch_id}"
        again = await run_cli(h, "auction", "result", wid)
        status = await run_cli(h, "auction", "status", wid)
    assert f"started {wid}" in started.stdout
    winners = {
        line.split()[0]: line.split()[2]
        for line in again.stdout.splitlines()[1:]
        if not line.startswith("cost")
    }
    assert winners == {
        "nda-northwind": "small",
        "invoice-4411": "small",
        "msa-fabrikam": "medium",
        "opinion-export": "large",
    }
    assert "flag: Master services agreement" in started.stdout
    assert status.returncode == 0 and '"stage": "done"' in status.stdout
    bad = await run_cli(h, "auction", "review", "--tenant", h.tenant, "--batch-id", "x")
    assert bad.returncode == 2 and "--docs" in bad.stderr
