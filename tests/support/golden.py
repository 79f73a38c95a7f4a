"""Golden histories (tests/golden/): runs recorded once and committed, which must keep replaying
on the current workflow code, so a change that alters a command sequence without
``workflow.patched`` fails here before it breaks runs in flight.

Record them again (only for a change meant to alter a command sequence, behind
``workflow.patched``, next to the old ones) with ``BATON_REGENERATE_GOLDEN=1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from workflows.plugin import BatonPlugin

GOLDEN = Path(__file__).parent.parent / "golden"


def regenerating() -> bool:
    """Whether this run records the golden histories again (``BATON_REGENERATE_GOLDEN=1``)."""
    return os.environ.get("BATON_REGENERATE_GOLDEN") == "1"


def write(path: Path, history: WorkflowHistory) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(history.to_json_dict(), indent=1))


async def record(path: Path, handle: WorkflowHandle[Any, Any]) -> None:
    """Write the history of ``handle``'s run (once it has finished) to ``path``."""
    write(path, await handle.fetch_history())


def load(path: Path, name: str) -> WorkflowHistory:
    """The committed history at ``path`` (a missing file fails the test, saying how to record
    it)."""
    if not path.exists():
        pytest.fail(f"{path} is missing: run with BATON_REGENERATE_GOLDEN=1")
    return WorkflowHistory.from_json(name, path.read_text())


async def assert_replays(history: WorkflowHistory, workflow: type, **options: Any) -> None:
    """``history`` replays on the current code of ``workflow`` with Baton's plugin (and the
    Replayer ``options``, e.g. interceptors), without any non-determinism."""
    replayer = Replayer(workflows=[workflow], plugins=[BatonPlugin()], **options)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


async def load_and_replay(path: Path, name: str, workflow: type) -> WorkflowHistory:
    """The committed history at ``path`` (``load``), once it replayed on the current code of
    ``workflow`` (``assert_replays``)."""
    history = load(path, name)
    await assert_replays(history, workflow)
    return history
