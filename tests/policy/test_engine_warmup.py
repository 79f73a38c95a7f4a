"""Compiling the embedded OPA engine's bundle is the worker's own work, not an engine that does
not answer: a cold or just-reloaded engine compiles before ``decide()`` starts its timeout, so the
first decision after a start or a policy edit is the policy's, never "engine unavailable"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from activities.policy import ENGINE_UNAVAILABLE, EmbeddedOpaEngine, PolicyLoadError, decide
from tests.policy.test_policy_engines import POSTING, query
from tests.support.paths import POLICY_DIR

#: Far below a compile of Baton's bundle (about a second on 2 cores), far above an evaluation.
TIMEOUT = 0.1


def test_compiling_the_bundle_takes_longer_than_the_timeout_used_below() -> None:
    """What makes the next tests mean something: a cold compile outlasts TIMEOUT."""
    took = EmbeddedOpaEngine(POLICY_DIR).warm()
    assert took > TIMEOUT, f"the bundle compiled in {took:.3f} s"


async def test_a_cold_engine_decides_within_a_timeout_shorter_than_its_compile() -> None:
    decision = await decide(EmbeddedOpaEngine(POLICY_DIR), query(), "cold-1", timeout=TIMEOUT)
    assert decision.verdict == "allow", decision.reasons
    assert not any(r.startswith(ENGINE_UNAVAILABLE) for r in decision.reasons)


async def test_an_edited_bundle_recompiles_before_the_timeout_starts(tmp_path: Path) -> None:
    policy_dir = Path(shutil.copytree(POLICY_DIR, tmp_path / "policy"))
    engine = EmbeddedOpaEngine(policy_dir, reload_interval=0)
    first = await decide(engine, query(), "edit-1", timeout=TIMEOUT)
    rego = policy_dir / "finance" / "posting.rego"
    rego.write_text(rego.read_text() + "\n# an edit: a new revision to compile\n")
    second = await decide(engine, query(), "edit-2", timeout=TIMEOUT)
    assert (first.verdict, second.verdict) == ("allow", "allow"), second.reasons
    assert second.revision != first.revision  # the edited bundle decided, freshly compiled


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
