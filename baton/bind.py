"""Checking a ``host:port`` bind address from the environment. Its own module so settings
(baton/settings.py) and telemetry (baton/telemetry.py) both use it without importing each other.
"""

from __future__ import annotations

__all__ = ["check_bind_address"]


def check_bind_address(variable: str, bind: str) -> str:
    """``host:port`` with a numeric port, or a ValueError naming the variable."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{variable} must be host:port, e.g. 0.0.0.0:9464, got {bind!r}")
    return bind
