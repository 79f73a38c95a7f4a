"""Timers the profiling benches wrap around the functions they measure."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any


def with_timer(fn: Callable[..., Any], record: Callable[[float], None]) -> Callable[..., Any]:
    """``fn`` (sync or async) wrapped so that each call's duration in seconds (perf_counter) is
    passed to ``record``, also when the call raises."""
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                record(time.perf_counter() - began)

        return timed_async

    @functools.wraps(fn)
    def timed_sync(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(time.perf_counter() - began)

    return timed_sync
