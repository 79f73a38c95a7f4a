"""The award rule (workflows/auction.py ``award``), a pure function: capability filter,
scoring, tie-breaks, exclusions, no bidders, and an exhaustive check of every combination of a
small grid of bids against a brute-force statement of the rule, in every arrival order."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from workflows.auction import award, score
from workflows.contracts.auction import AuctionTask, AwardRule, Bid, ReviewDocument

RULE = AwardRule()


def task(*requires: str, task_id: str = "t1") -> AuctionTask:
    return AuctionTask(
        task_id=task_id,
        requires=list(requires) or ["review:nda"],
        document=ReviewDocument(doc_id="d1", title="NDA", text="text"),
    )


def bid(
    bidder: str,
    cost: float,
    latency_ms: float,
    *caps: str,
    task_id: str = "t1",
    round: int = 1,
) -> Bid:
    return Bid(
        bidder=bidder,
        task_id=task_id,
        round=round,
        capabilities=list(caps) or ["review:nda"],
        expected_tokens=1000,
        expected_cost_usd=cost,
        expected_latency_ms=latency_ms,
    )


def test_the_lowest_score_wins_and_the_ranking_is_best_first() -> None:
    # scores with the default rule (1/USD, 0.01/s): a 0.02+0.02=0.04, b 0.01+0.05=0.06,
    # c 0.03+0.005=0.035
    bids = [bid("a", 0.02, 2000), bid("b", 0.01, 5000), bid("c", 0.03, 500)]
    decision = award(task(), bids, RULE)
    assert decision.winner == "c" and decision.score == pytest.approx(0.035)
    assert [s.bidder for s in decision.ranked] == ["c", "a", "b"]
    assert decision.rejected == {}


def test_the_weights_change_the_winner() -> None:
    bids = [bid("cheap", 0.001, 9000), bid("fast", 0.05, 100)]
    assert award(task(), bids, AwardRule(cost_weight=1, latency_weight=0)).winner == "cheap"
    assert award(task(), bids, AwardRule(cost_weight=0, latency_weight=1)).winner == "fast"
    assert award(task(), bids, AwardRule(cost_weight=1, latency_weight=0.01)).winner == "fast"


def test_capability_filter_requires_every_capability() -> None:
    t = task("review:contract", "lang:de")
    bids = [
        bid("cheap", 0.001, 100, "review:contract"),
        bid("able", 0.5, 900, "review:contract", "lang:de", "review:nda"),
        bid("none", 0.0, 0, "review:nda"),
    ]
    decision = award(t, bids, RULE)
    assert decision.winner == "able"
    assert decision.rejected == {
        "cheap": "lacks capability lang:de",
        "none": "lacks capability lang:de, review:contract",
    }


def test_ties_break_by_cost_then_latency_then_name() -> None:
    rule = AwardRule(cost_weight=1, latency_weight=1)
    # equal scores (1.0): lower cost wins
    assert award(task(), [bid("x", 0.5, 500), bid("y", 0.25, 750)], rule).winner == "y"
    # equal score and cost: lower latency wins (only possible with a 0 weight)
    rule0 = AwardRule(cost_weight=1, latency_weight=0)
    assert award(task(), [bid("x", 0.5, 900), bid("y", 0.5, 100)], rule0).winner == "y"
    # everything equal: the bidder name decides, whatever the arrival order
    same = [bid("medium", 0.5, 500), bid("large", 0.5, 500), bid("small", 0.5, 500)]
    for order in itertools.permutations(same):
        assert award(task(), order, rule).winner == "large"
    # float noise below 1e-9 USD is a tie, not a win: 0.1 + 0.2 costs the same as 0.3, so
    # the lower latency decides
    noisy = [bid("a", 0.3, 500), bid("b", 0.1 + 0.2, 100)]
    assert award(task(), noisy, rule0).winner == "b"


def test_no_bidders_means_no_winner() -> None:
    decision = award(task(), [], RULE)
    assert decision.winner is None and decision.score is None
    assert decision.ranked == [] and decision.rejected == {}


def test_every_bidder_excluded_or_incapable_means_no_winner() -> None:
    bids = [bid("a", 0.1, 100), bid("b", 0.2, 100, "review:invoice")]
    decision = award(task(), bids, RULE, excluded=["a"])
    assert decision.winner is None
    assert decision.rejected == {
        "a": "failed this task in an earlier round",
        "b": "lacks capability review:nda",
    }


def test_an_excluded_failed_winner_never_wins_again() -> None:
    bids = [bid("a", 0.01, 100), bid("b", 0.2, 100)]
    assert award(task(), bids, RULE).winner == "a"
    assert award(task(), bids, RULE, excluded={"a"}).winner == "b"


def test_exclusions_can_carry_their_reason() -> None:
    bids = [bid("a", 0.01, 100), bid("b", 0.2, 100)]
    decision = award(task(), bids, RULE, excluded={"a": "refused by the award policy: x"})
    assert decision.winner == "b"
    assert decision.rejected == {"a": "refused by the award policy: x"}


def test_bids_for_another_task_or_round_and_duplicate_bids_are_rejected() -> None:
    bids = [
        bid("other", 0.0, 0, task_id="t2"),
        bid("stale", 0.0, 0, round=1),
        bid("twice", 0.0, 0, round=2),
        bid("twice", 0.01, 0, round=2),
        bid("ok", 0.9, 900, round=2),
    ]
    decision = award(task(), bids, RULE, round=2)
    assert decision.winner == "ok"
    assert decision.rejected == {
        "other": "bid for task 't2', not 't1'",
        "stale": "bid for round 1, not round 2",
        "twice": "sent 2 bids in round 2; one is allowed",
    }


def test_score_is_the_documented_formula() -> None:
    rule = AwardRule(cost_weight=2.0, latency_weight=0.5)
    assert score(bid("a", 0.25, 3000), rule) == pytest.approx(2.0 * 0.25 + 0.5 * 3.0)


def test_the_rule_refuses_weights_that_cannot_rank() -> None:
    with pytest.raises(ValidationError, match="cannot both be 0"):
        AwardRule(cost_weight=0, latency_weight=0)
    with pytest.raises(ValidationError, match="cost_weight"):
        AwardRule(cost_weight=-1)
    with pytest.raises(ValidationError, match="latency_weight"):
        AwardRule(latency_weight=float("nan"))
    with pytest.raises(ValidationError, match="expected_cost_usd"):
        bid("a", -0.1, 0)


def _brute_force(
    t: AuctionTask, bids: list[Bid], rule: AwardRule, excluded: set[str]
) -> str | None:
    """The rule as its docstring states it, written independently of ``award``."""
    best: tuple[float, float, float, str] | None = None
    for b in bids:
        if b.bidder in excluded or not set(t.requires) <= set(b.capabilities):
            continue
        s = round(
            rule.cost_weight * b.expected_cost_usd
            + rule.latency_weight * b.expected_latency_ms / 1000,
            9,
        )
        key = (s, round(b.expected_cost_usd, 9), round(b.expected_latency_ms, 6), b.bidder)
        if best is None or key < best:
            best = key
    return best[3] if best else None


def test_exhaustively_against_the_stated_rule_in_every_arrival_order() -> None:
    """Every subset of 3 bidders x 2 costs x 2 latencies x capable or not, every exclusion
    set, two rules, every arrival order: ``award`` picks what the stated rule picks, and the
    winner is eligible and scores no worse than any eligible bid."""
    t = task("review:contract")
    names = ["a", "b", "c"]
    options = [
        (cost, latency, caps)
        for cost in (0.01, 0.02)
        for latency in (1000.0, 2000.0)
        for caps in (("review:contract",), ("review:nda",))
    ]
    rules = [AwardRule(), AwardRule(cost_weight=1, latency_weight=0.02)]
    checked = 0
    for count in range(0, 4):
        for chosen in itertools.product(options, repeat=count):
            bids = [
                bid(name, cost, latency, *caps)
                for name, (cost, latency, caps) in zip(names, chosen, strict=False)
            ]
            for excluded_n in range(0, count + 1):
                excluded = set(names[:excluded_n])
                for rule in rules:
                    expected = _brute_force(t, bids, rule, excluded)
                    for order in itertools.permutations(bids):
                        decision = award(t, order, rule, excluded=excluded)
                        assert decision.winner == expected, (bids, excluded, rule)
                        checked += 1
                    eligible = {s.bidder for s in decision.ranked}
                    assert eligible | set(decision.rejected) == {b.bidder for b in bids}
                    if expected is not None:
                        assert decision.score == min(s.score for s in decision.ranked)
    assert checked > 10_000
