"""Throttles: limits per agent, model and tenant hold across workers under a burst; excess work
waits instead of failing; the limits file is validated and re-read when it changes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from activities.database import Database
from activities.throttle import Throttle, ThrottleConfig, load_config
from tests.conftest import Harness, _harness
from tests.support.config_files import assert_refuses_missing_and_broken
from tests.support.scripted_model import Fault
from tests.test_approvals import decision


def limits(**by_key: dict[str, float]) -> ThrottleConfig:
    return ThrottleConfig.model_validate({"limits": by_key})


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    database.create_tables()
    return database


async def burst(throttles: list[Throttle], keys: list[str], calls: int, hold: float) -> int:
    """Run ``calls`` concurrent holders spread over ``throttles`` (one per worker); the most
    that ever held a slot at the same time."""
    in_flight = most = 0

    async def one(throttle: Throttle) -> None:
        nonlocal in_flight, most
        async with throttle.slot(keys):
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(hold)
            in_flight -= 1

    await asyncio.gather(*(one(throttles[i % len(throttles)]) for i in range(calls)))
    return most


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_concurrency_limit_holds_across_two_workers_under_a_burst(
    backend: str, database_url: str, request: pytest.FixtureRequest
) -> None:
    url = database_url if backend == "sqlite" else request.getfixturevalue("pg_database")
    db = Database(url)
    db.create_tables()
    config = limits(**{"agent:reconciler": {"concurrency": 2}})
    workers = [Throttle(db, config), Throttle(db, config)]
    started = time.monotonic()
    assert await burst(workers, ["agent:reconciler", "tenant:acme"], calls=8, hold=0.15) == 2
    assert time.monotonic() - started >= 0.6  # 8 calls, 2 at a time, 0.15 s each: they waited
    db.dispose()


async def test_rate_limit_smooths_a_burst_instead_of_refusing_it(db: Database) -> None:
    throttle = Throttle(db, limits(**{"model:gpt-4o": {"per_minute": 120}}))  # 2 per second
    started = time.monotonic()
    for _ in range(5):  # 2 at once (one second's worth), then one every 0.5 s
        async with throttle.slot(["model:gpt-4o"]):
            pass
    assert time.monotonic() - started >= 1.2


async def test_every_key_of_a_call_must_have_room(db: Database) -> None:
    config = limits(**{"tenant:acme": {"concurrency": 1}, "agent:reconciler": {"concurrency": 5}})
    throttle = Throttle(db, config)
    assert await burst([throttle], ["agent:reconciler", "tenant:acme"], calls=4, hold=0.05) == 1
    # another tenant is not held back by acme's limit
    assert await burst([throttle], ["agent:reconciler", "tenant:globex"], calls=4, hold=0.05) == 4


async def test_unlisted_keys_are_not_throttled(db: Database) -> None:
    throttle = Throttle(db, limits(**{"agent:reconciler": {"concurrency": 1}}))
    async with throttle.slot(["agent:close_memo_writer"]) as waited:
        assert waited == 0.0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"limits": {"reconciler": {"concurrency": 1}}}, "expected 'agent:<role>'"),
        ({"limits": {"agent:x": {}}}, "sets neither concurrency nor per_minute"),
        ({"limits": {"agent:x": {"concurrency": 0}}}, "limits.agent:x.concurrency"),
        ({"limits": {"agent:x": {"per_minute": -1}}}, "limits.agent:x.per_minute"),
        ({"limit": {}}, "limit: Extra inputs are not permitted"),
    ],
)
def test_bad_limits_files_name_the_field(tmp_path: Path, document: object, message: str) -> None:
    path = tmp_path / "throttles.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unreadable_or_invalid_json_is_named(tmp_path: Path) -> None:
    assert_refuses_missing_and_broken(load_config, ValueError, tmp_path, missing="cannot read it")


async def test_an_edited_limits_file_applies_without_a_restart(
    tmp_path: Path, db: Database
) -> None:
    path = tmp_path / "throttles.json"
    path.write_text(json.dumps({"limits": {"agent:reconciler": {"concurrency": 1}}}))
    throttle = Throttle(db, path)
    assert await burst([throttle], ["agent:reconciler"], calls=3, hold=0.05) == 1
    path.write_text(json.dumps({"limits": {"agent:reconciler": {"concurrency": 3}}}))
    later = time.time() + 5
    import os

    os.utime(path, (later, later))  # a new mtime even on coarse-grained file systems
    assert await burst([throttle], ["agent:reconciler"], calls=3, hold=0.2) == 3
    path.write_text("{broken")  # a bad edit keeps the last good limits
    os.utime(path, (later + 5, later + 5))
    assert throttle.config().limits["agent:reconciler"].concurrency == 3


async def test_closes_in_a_burst_never_exceed_the_agents_limit_and_all_complete(
    temporal_client: object,
    model_server: object,
    database_url: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "throttles.json"
    path.write_text(json.dumps({"limits": {"agent:reconciler": {"concurrency": 1}}}))
    async with _harness(
        temporal_client,
        model_server,
        database_url,
        throttles_file=path,  # type: ignore[arg-type]
    ) as h:
        await run_burst(h)


async def run_burst(h: Harness) -> None:
    from activities.seed import seed_period

    year = h.period[:4]
    periods = [f"{year}-{m:02d}" for m in (6, 7, 8)]
    for period in periods:
        seed_period(h.db, h.tenant, period)
        # each reconciler call (the first model call of a close) takes 0.4 s, so three at once
        # would overlap
        h.model.script(Fault.delay(0.4), match=f'"period":"{period}"')
    h.model.reset_concurrency()
    async with h.worker():
        handles = await asyncio.gather(
            *(h.client.start_finance_close(h.start_input(period=p)) for p in periods)
        )
        for handle in handles:
            request = (await h.wait_for_pending(handle.id, timeout=60)).pending[0]
            await h.client.decide(handle.id, decision(request, "carol"))
        await asyncio.gather(*(handle.result() for handle in handles))
    assert h.model.max_concurrency("reconciler") == 1
    waited = [
        json.loads(r.detail_json).get("throttled_seconds", 0)
        for handle in handles
        for r in h.runtime.ledger.trail(handle.id)
        if r.action == "agent.proposed_adjustments"
    ]
    assert len(waited) == 3 and max(waited) > 0.2  # someone waited for the slot, nobody failed
