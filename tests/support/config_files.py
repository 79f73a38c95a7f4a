"""What every loader of a JSON configuration file must do with a file it cannot use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def assert_refuses_missing_and_broken(
    load: Callable[[Path], object], error: type[Exception], tmp_path: Path, *, missing: str
) -> None:
    """``load`` raises ``error`` for a file that is not there (its message matching ``missing``)
    and for one that is not JSON (saying "not valid JSON")."""
    with pytest.raises(error, match=missing):
        load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(error, match="not valid JSON"):
        load(tmp_path / "bad.json")
