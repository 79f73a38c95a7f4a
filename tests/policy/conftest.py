"""Fixtures the policy tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.paths import POLICY_DIR


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A copy of the repository's policy directory, free for the test to edit."""
    return Path(shutil.copytree(POLICY_DIR, tmp_path / "policy"))
