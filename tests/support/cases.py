"""Tables of test cases: rows of ``(name, *values)`` turned into pytest parameters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def named_cases(table: Iterable[tuple[Any, ...]]) -> list[Any]:
    """One ``pytest.param`` per row of ``table`` (``(name, *values)``): its values, with the
    name as the test id."""
    return [pytest.param(*values, id=name) for name, *values in table]
