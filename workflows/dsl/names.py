"""The validator's one "did you mean" (shared by the step checks and the agent-step checks)."""

from __future__ import annotations

import difflib
from typing import Any

__all__ = ["nearest"]


def nearest(name: str, known: Any) -> str:
    """`` (did you mean `x`?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    if not close:  # a dotted name's last part alone: "classify" for "ap.clasify"
        tails = {str(k).rsplit(".", 1)[-1]: str(k) for k in known}
        tail = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[tail[0]]] if tail else []
    return f" (did you mean `{close[0]}`?)" if close else ""
