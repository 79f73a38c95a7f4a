"""The bench's instant agents override one method of the real agents; if that method's signature
drifts the bench breaks silently (it is not run by CI), so the signatures are pinned here."""

from __future__ import annotations

import inspect

from activities.agents import AgentActivities
from bench.stand_ins import InstantAgents


def test_instant_agents_override_ask_with_the_real_signature() -> None:
    assert inspect.signature(InstantAgents._ask) == inspect.signature(AgentActivities._ask)
    assert issubclass(InstantAgents, AgentActivities)
