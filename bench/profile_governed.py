"""Where the time of the governed step goes, without Temporal.

    .venv/bin/python bench/profile_governed.py [--calls 300] [--cprofile]

Calls the REAL ``FinanceActivities.post_journal_entry`` in an activity context (no server), an
allowed entry with a unique idempotency key each time, and times its parts by wrapping methods
of the instance and of the modules it calls (nothing in activities/ is changed). Parts that a
refactor renamed are reported as missing rather than guessed. ``--cprofile`` adds a profile of
the synchronous part (the transaction), where almost all the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == REPO_ROOT / "bench":
    sys.path[0] = str(REPO_ROOT)

from temporalio.testing import ActivityEnvironment  # noqa: E402

import activities.finance as finance_module  # noqa: E402
import activities.policy as policy_module  # noqa: E402
from activities.finance import FinanceActivities  # noqa: E402
from baton.settings import Settings  # noqa: E402
from bench.seeding import seed_periods  # noqa: E402
from bench.timers import with_timer  # noqa: E402
from worker import build_runtime  # noqa: E402
from workflows.contracts import AdjustingEntry, PostEntryInput  # noqa: E402

TIMES: dict[str, list[float]] = defaultdict(list)
WHOLE = "whole post_journal_entry (direct call, includes the thread hop)"


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a timer: each call's duration goes to ``TIMES[name]``."""
    return with_timer(fn, lambda seconds: TIMES[name].append(seconds))


def request(tenant: str, period: str, key: str) -> PostEntryInput:
    return PostEntryInput(
        tenant=tenant,
        period=period,
        entry=AdjustingEntry(
            entry_id="ADJ-B0042",
            account="6100-bank-fees",
            amount=Decimal("-12.50"),
            source_ids=["B0042"],
            rationale="bench: bank fee never booked",
        ),
        preparer="agent:reconciler",
        requested_by="alice",
        idempotency_key=key,
    )


async def main(calls: int, profile: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="baton-profile-"))
    runtime = build_runtime(
        dataclasses.replace(
            Settings(), database_url=f"sqlite:///{tmp / 'b.db'}", policy_dir=REPO_ROOT / "policy"
        )
    )
    tenant, period = "acme", "3000-01"
    seed_periods(runtime.db, [(tenant, period)])
    fin = next(
        a.__self__
        for a in runtime.activities
        if isinstance(getattr(a, "__self__", None), FinanceActivities)
    )
    env = ActivityEnvironment()
    base = ActivityEnvironment.default_info()

    # (owner, attribute, label): the parts of the governed step as the code stands
    parts: list[tuple[Any, str, str]] = [
        (fin, "_post", "transaction on the worker thread (lookup, decide, write, audit)"),
        (fin.switch, "raise_if_blocking", "  kill switch matched (only while one is engaged)"),
        (finance_module, "_decide_posting", "  policy decision and its audit event inside it"),
        (policy_module, "decide_sync", "    of which the decision (embedded OPA, traced, logged)"),
        (fin.policy, "evaluate_sync", "      of which the evaluation (OPA's own call)"),
        (fin.ledger, "append_in", "  audit append inside it (2 hash-chained rows)"),
    ]
    missing = []
    for owner, attr, label in parts:
        if hasattr(owner, attr):
            setattr(owner, attr, timed(label, getattr(owner, attr)))
        else:
            missing.append(f"{type(owner).__name__}.{attr}")

    warm = 30
    for i in range(calls + warm):
        env.info = dataclasses.replace(base, activity_id=f"r{i}", workflow_id="profile/real")
        t0 = time.perf_counter()
        outcome = await env.run(fin.post_journal_entry, request(tenant, period, f"real/{i}"))
        TIMES[WHOLE].append(time.perf_counter() - t0)
        assert outcome.posting_id is not None, outcome.decision.reasons
    print(f"post_journal_entry, {calls} calls after {warm} warm-up (median / p95 ms):")
    for name in [WHOLE, *(label for _, _, label in parts)]:
        v = sorted(TIMES[name][warm:])
        if not v:
            continue
        med, p95 = 1000 * statistics.median(v), 1000 * v[int(0.95 * len(v)) - 1]
        print(f"  {name:66s} {med:6.2f} / {p95:6.2f}")
    if missing:
        print(f"  (not found, not timed: {', '.join(missing)})")
    report = runtime.ledger.verify()
    print(f"audit chain after the run: {'OK' if report.ok else report.problems[:3]}")

    if profile and hasattr(fin, "_post"):
        post = fin._post.__wrapped__  # type: ignore[attr-defined]
        prof = cProfile.Profile()

        async def profiled(i: int) -> None:
            env.info = dataclasses.replace(base, activity_id=f"p{i}", workflow_id="profile/prof")
            inp = request(tenant, period, f"prof/{i}")
            original = fin._post  # type: ignore[attr-defined]

            def run(*args: Any) -> Any:
                prof.enable()
                try:
                    return post(*args)
                finally:
                    prof.disable()

            fin._post = run  # type: ignore[attr-defined]
            try:
                await env.run(fin.post_journal_entry, inp)
            finally:
                fin._post = original  # type: ignore[attr-defined]

        for i in range(100):
            await profiled(i)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--cprofile", action="store_true", help="also cProfile 100 calls")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.cprofile))
