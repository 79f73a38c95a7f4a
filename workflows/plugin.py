"""The Baton Temporal plugin: one object that configures clients, workers and replayers alike.

- data converter: pydantic, so every contract round-trips with its types (Decimal, datetime);
- workflow failure types: a pydantic ``ValidationError`` raised in workflow code fails the
  workflow with a readable message instead of retrying the workflow task forever;
- sandbox pass-through: modules that are safe and deterministic to share with the sandbox.
"""

from __future__ import annotations

import dataclasses

import pydantic
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Why each module may pass through the sandbox (loaded once, shared with workflow code):
PASSTHROUGH = [
    "pydantic",  # the contracts' base; pure, and re-importing it per workflow is slow
    "pydantic_core",  # pydantic's compiled core
    "annotated_types",  # pydantic dependency
    # pure models (pydantic + stdlib only). Activities, imported through the sandbox, use the
    # same classes; re-importing them inside would make PeriodData != PeriodData.
    "workflows.contracts",
]


def _runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    if isinstance(existing, SandboxedWorkflowRunner):
        restrictions = existing.restrictions
    else:
        restrictions = SandboxRestrictions.default
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(restrictions).with_passthrough_modules(*PASSTHROUGH)
    )


class BatonPlugin(SimplePlugin):
    def __init__(self) -> None:
        super().__init__(
            "baton.BatonPlugin",
            data_converter=pydantic_data_converter,
            workflow_runner=_runner,
            workflow_failure_exception_types=[pydantic.ValidationError],
        )
