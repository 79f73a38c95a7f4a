"""The real-model flows' own checks (tests/support/real_runs.py), on the rule-based stand-in.

The ``real_model`` tests accept a run only as completed-and-complete or failed-cleanly; these
fast tests keep those checks honest: on the stand-in every flow completes and passes the
"every item addressed" checks, and a close whose reconciler keeps answering with nothing is a
clean failure (typed, nothing posted, the refusals' notes in the audit), not a completion.
"""

from __future__ import annotations

import pytest

from tests.conftest import Harness
from tests.support import real_runs
from tests.support.real_runs import COMPLETED, FAILED_CLEANLY
from tests.support.scripted_model import Fault


@pytest.mark.parametrize("process", list(real_runs.FLOWS))
async def test_each_flow_completes_with_every_item_addressed_on_the_stand_in(
    harness: Harness, process: str
) -> None:
    assert await real_runs.FLOWS[process](harness) == COMPLETED


async def test_a_close_whose_reconciler_answers_nothing_fails_cleanly(harness: Harness) -> None:
    empty = Fault.output({"entries": [], "no_entry_needed": []})
    harness.model.script(*[empty] * 12, match="agent: reconciler")
    verdict = await real_runs.finance_close(harness)
    assert verdict.startswith(FAILED_CLEANLY + ": "), verdict
    assert "not addressed" in verdict or "refused" in verdict, verdict


async def test_a_support_agent_that_never_finishes_fails_cleanly(harness: Harness) -> None:
    """The support agent proposes a credit, then repeats a lookup until its turns run out (as
    Qwen tends to): failed cleanly with AgentLimitReached, the credit reversed, every call
    checked against its policy row."""
    from activities.tools import credits_of

    credit = {"customer": "Initech", "case_id": "K-1", "amount_usd": 40, "reason": "charged twice"}
    lookup = ("lookup_customer", {"customer": "Initech"})
    harness.model.script(
        Fault.tool_calls(("propose_credit", credit)),
        *[Fault.tool_calls(lookup)] * 12,
        match="agent: case_resolver",
    )
    verdict = await real_runs.support_agent(harness)
    assert verdict.startswith(FAILED_CLEANLY + ": ") and "AgentLimitReached" in verdict, verdict
    [made] = credits_of(harness.db, harness.tenant)
    assert made.amount_cents == 4000 and made.reversed_at is not None


def test_the_bench_classifies_asks_by_how_they_ended() -> None:
    """bench/real_model_bench.py: an ask answered at once, one answered after its repair turn,
    one escalated to the strong model, and one refused to the end."""
    from collections import Counter

    from bench.real_model_bench import agent_rows
    from tests.support.recording_proxy import Exchange

    def call(agent: str, model: str, question: str, repair: bool = False) -> Exchange:
        return Exchange(agent, model, repair, question, 2.0, 200, 100, 20)

    exchanges = [
        call("a", "cheap", "q1"),
        call("a", "cheap", "q2"),
        call("a", "cheap", "q2", repair=True),
        call("a", "cheap", "q3"),
        call("a", "cheap", "q3", repair=True),
        call("a", "strong", "q3"),
        call("b", "cheap", "q4"),
        call("b", "cheap", "q4", repair=True),
    ]
    refused = {"a": Counter(meaning=3), "b": Counter(schema=1, meaning=1)}
    [a, b] = agent_rows(exchanges, refused, "strong", runs=2)
    assert a[:5] == ["a", "6", "100%", "50%", "33% / 33% / 33% / 0%"]
    assert b[:5] == ["b", "2", "50%", "0%", "0% / 0% / 0% / 100%"]
    assert a[7] == "360"  # tokens per run
