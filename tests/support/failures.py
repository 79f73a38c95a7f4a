"""Runs a test expects to fail."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle


async def expect_failure(handle: WorkflowHandle[Any, Any]) -> WorkflowFailureError:
    """The error ``handle``'s run failed with, once it has ended (the test fails if the run
    completed instead)."""
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    return failed.value
