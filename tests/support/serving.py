"""Run a test's in-process server (the scripted model, the OPA-compatible server, a webhook
receiver, ...) for as long as a fixture holds it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` started (HTTP servers on a free port of 127.0.0.1, their default) and stopped
    on the way out, also when the test using it failed."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
