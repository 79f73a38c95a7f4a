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
