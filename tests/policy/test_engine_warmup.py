"""Compiling the embedded OPA engine's bundle is the worker's own work, not an engine that does
not answer: a cold or just-edited engine compiles before ``decide()`` starts its timeout, so the
first decision after a start or a policy edit is the policy's, never "engine unavailable".

A busy machine is made deterministic here: every compile is held back by SLOW seconds, longer
than the decision's TIMEOUT (seen for real: 8.7 s for Baton's bundle at load average 15, against
the 5 s default timeout)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from activities import policy
from activities.policy import ENGINE_UNAVAILABLE, EmbeddedOpaEngine, PolicyLoadError, decide
from tests.policy.test_policy_engines import POSTING, query
from tests.support.paths import POLICY_DIR

SLOW = 1.0
TIMEOUT = 0.5  # far above an evaluation (about a millisecond), below a compile here


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every compile of a bundle takes SLOW seconds more; the list counts them."""
    done: list[float] = []
    build: Callable[..., Any] = policy._build_opa

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW)
        done.append(SLOW)
        return build(*args, **kwargs)

    monkeypatch.setattr(policy, "_build_opa", slow_build)
    return done


def decided_by_policy(decision: policy.PolicyDecision) -> bool:
    return not any(r.startswith(ENGINE_UNAVAILABLE) for r in decision.reasons)


async def test_a_cold_engine_decides_within_a_timeout_shorter_than_its_compile(
    compiles: list[float],
) -> None:
    decision = await decide(EmbeddedOpaEngine(POLICY_DIR), query(), "cold-1", timeout=TIMEOUT)
    assert decision.verdict == "allow" and decided_by_policy(decision), decision.reasons
    assert len(compiles) == 1


async def test_an_edited_bundle_recompiles_before_the_timeout_starts(
    tmp_path: Path, compiles: list[float]
) -> None:
    policy_dir = Path(shutil.copytree(POLICY_DIR, tmp_path / "policy"))
    engine = EmbeddedOpaEngine(policy_dir, reload_interval=0)
    first = await decide(engine, query(), "edit-1", timeout=TIMEOUT)
    rego = policy_dir / "finance" / "posting.rego"
    rego.write_text(rego.read_text() + "\n# an edit: a new revision to compile\n")
    second = await decide(engine, query(), "edit-2", timeout=TIMEOUT)
    assert (first.verdict, second.verdict) == ("allow", "allow"), second.reasons
    assert second.revision != first.revision  # the edited bundle decided, freshly compiled
    assert len(compiles) == 2


async def test_warm_compiles_the_bundle_the_decisions_then_use(compiles: list[float]) -> None:
    engine = EmbeddedOpaEngine(POLICY_DIR)
    assert engine.warm() >= SLOW  # what a worker does at start (worker.py logs the seconds)
    decision = await decide(engine, query(), "warm-1", timeout=TIMEOUT)
    assert decision.verdict == "allow" and decided_by_policy(decision), decision.reasons
    assert len(compiles) == 1  # the decision found the bundle compiled


def test_a_bundle_that_does_not_compile_is_reported_by_decisions_not_by_warm(
    tmp_path: Path,
) -> None:
    policy_dir = Path(shutil.copytree(POLICY_DIR, tmp_path / "policy"))
    rego = policy_dir / "finance" / "posting.rego"
    rego.write_text(rego.read_text() + "\nbroken := if {\n")
    engine = EmbeddedOpaEngine(policy_dir)
    engine.warm()  # logs, does not raise: the worker still starts
    with pytest.raises(PolicyLoadError, match="does not compile"):
        engine.evaluate_sync(POSTING, {})
