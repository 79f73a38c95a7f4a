"""Fixtures the policy tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from activities.policy import EmbeddedOpaEngine, RegorusEngine
from tests.support.paths import POLICY_DIR


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A copy of the repository's policy directory, free for the test to edit."""
    return Path(shutil.copytree(POLICY_DIR, tmp_path / "policy"))


@pytest.fixture(params=[EmbeddedOpaEngine, RegorusEngine], ids=["opa", "regorus"])
def reloading_engine(
    request: pytest.FixtureRequest, policy_copy: Path
) -> EmbeddedOpaEngine | RegorusEngine:
    """Each in-process engine (OPA, then Regorus) on ``policy_copy``, checking its files before
    every decision (``reload_interval=0``): an edit the test makes applies to the next one."""
    engine_class: type[EmbeddedOpaEngine] | type[RegorusEngine] = request.param
    return engine_class(policy_copy, reload_interval=0)
