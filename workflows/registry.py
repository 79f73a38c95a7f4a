"""The process registry: one :class:`ProcessSpec` per business process Baton runs.

A spec says what a process is to everything outside its workflow: the workflow class (every worker
registers it), the input model (the client validates a dict with it), the business key (the
workflow id: one run per key), the Web UI's summary and details, the memo, and how it starts
(canary-versioned and shadow-capable, or at most once per key). ``worker.py`` registers
:func:`workflow_classes`, ``BatonClient.start`` looks a process up by its input
(:func:`spec_for`), and the CLI lists :data:`PROCESSES`.

This module holds no process logic and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from workflows.agent_loop import AgentRunWorkflow
from workflows.canary_monitor import CanaryMonitorWorkflow
from workflows.contracts import FinanceCloseInput, OnboardingInput
from workflows.contracts.customer import CustomerOnboardingInput
from workflows.contracts.support import SupportCaseInput
from workflows.customer_onboarding import CustomerOnboardingWorkflow
from workflows.document_review import DocumentReviewWorkflow
from workflows.dsl.interpreter import ProcessWorkflow
from workflows.dsl.model import ProcessRunInput
from workflows.errors import BatonError
from workflows.finance_close import FinanceCloseWorkflow
from workflows.hr_onboarding import HrOnboardingWorkflow
from workflows.repair import DoctorWorkflow, RepairWorkflow
from workflows.supervisor import SupervisorWorkflow
from workflows.support import SupportCaseWorkflow, SupportCoordinatorWorkflow, case_workflow_id

__all__ = [
    "PROCESSES",
    "processes",
    "register_process",
    "SERVICE_WORKFLOWS",
    "ProcessSpec",
    "UnknownProcess",
    "spec_for",
    "spec_named",
    "workflow_classes",
]

#: How a process starts: ``versioned`` (the canary assigns a version, shadow runs are allowed,
#: a failed run may run again), ``once`` (at most one run per business key, ever: a second
#: start returns the first run) or ``plain`` (the business key refuses a second run).
StartStyle = Literal["versioned", "once", "plain"]


@dataclass(frozen=True)
class ProcessSpec:
    """What a business process is to the worker, the client and the CLI."""

    name: str  # the BatonProcess search attribute value and the CLI's name for it
    workflow: type
    input: type[BaseModel]
    business_key: Callable[[Any], str]  # the workflow id: one run per key
    summary: Callable[[Any], str]  # the Web UI's one-line summary of a run
    details: Callable[[Any], str] = lambda inp: ""
    memo: Callable[[Any], dict[str, Any]] = field(
        default=lambda inp: {"requested_by": inp.requested_by}
    )
    start: StartStyle = "plain"

    def validate(self, inp: BaseModel | dict[str, Any]) -> Any:
        """The typed input; a dict is validated (``pydantic.ValidationError`` names the field)."""
        return inp if isinstance(inp, self.input) else self.input.model_validate(inp)


class UnknownProcess(BatonError, LookupError):
    """No registered process takes this input or has this name."""


def _shadow(inp: Any) -> str:
    return "SHADOW " if inp.shadow else ""


PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec(
        name="finance_close",
        workflow=FinanceCloseWorkflow,
        input=FinanceCloseInput,
        business_key=lambda inp: inp.workflow_id(),
        summary=lambda inp: f"{_shadow(inp)}Finance close {inp.tenant} {inp.period}",
        details=lambda inp: (
            f"Month-end close of **{inp.tenant}** for **{inp.period}**, requested by "
            f"{inp.requested_by}. Postings need policy approval; see the "
            "`pending_approvals` query while it waits."
        ),
        memo=lambda inp: {"requested_by": inp.requested_by, "period": inp.period},
        start="versioned",
    ),
    ProcessSpec(
        name="hr_onboarding",
        workflow=HrOnboardingWorkflow,
        input=OnboardingInput,
        business_key=lambda inp: inp.workflow_id(),
        summary=lambda inp: f"{_shadow(inp)}HR onboarding {inp.tenant} {inp.employee_id}",
        details=lambda inp: (
            f"Onboarding of **{inp.employee_id}** ({inp.tenant}), requested by "
            f"{inp.requested_by}. Privileged accesses need the manager's approval; see "
            "the `pending_approvals` and `board_history` queries."
        ),
        memo=lambda inp: {"requested_by": inp.requested_by, "employee_id": inp.employee_id},
        start="versioned",
    ),
    ProcessSpec(
        name="customer_onboarding",
        workflow=CustomerOnboardingWorkflow,
        input=CustomerOnboardingInput,
        business_key=lambda inp: inp.workflow_id(),
        summary=lambda inp: f"Customer onboarding {inp.tenant} {inp.customer_id}",
        details=lambda inp: (
            f"Onboarding of new customer **{inp.customer_id}** ({inp.tenant}) from CRM "
            f"event {inp.event_id}. Plan exceptions need approval; see the "
            "`pending_approvals` and `status` queries."
        ),
        memo=lambda inp: {"requested_by": inp.requested_by, "event_id": inp.event_id},
        start="once",
    ),
    ProcessSpec(
        name="support_escalation",
        workflow=SupportCaseWorkflow,
        input=SupportCaseInput,
        business_key=lambda inp: case_workflow_id(inp.case),
        summary=lambda inp: f"Support case {inp.case.tenant} {inp.case.case_id}",
    ),
    ProcessSpec(
        name="yaml",
        workflow=ProcessWorkflow,
        input=ProcessRunInput,
        business_key=lambda inp: f"{inp.definition.name}-{inp.input.get('run_key', '')}",
        summary=lambda inp: f"{inp.definition.name} v{inp.definition.version}",
    ),
)

#: Workflows that serve the processes (queues, canaries, supervision) and take no business key.
SERVICE_WORKFLOWS: tuple[type, ...] = (
    CanaryMonitorWorkflow,
    SupportCoordinatorWorkflow,
    DocumentReviewWorkflow,
    SupervisorWorkflow,
    RepairWorkflow,  # baton repair: an orphaned run's compensations (workflows/repair.py)
    DoctorWorkflow,  # baton doctor --schedule: the scheduled orphan check
    AgentRunWorkflow,  # one agent that acts (workflows/agent_loop.py)
)


#: Processes extensions added (baton/extensions.py), in the order they were registered.
_EXTENSION_PROCESSES: list[ProcessSpec] = []


def register_process(spec: ProcessSpec) -> None:
    """Add an extension's process (its workflow is registered by every worker that loaded it)."""
    if any(s.name == spec.name for s in processes()):
        raise ValueError(f"a process named {spec.name!r} is registered already")
    _EXTENSION_PROCESSES.append(spec)


def processes() -> tuple[ProcessSpec, ...]:
    """Baton's processes, then the extensions' ones."""
    return (*PROCESSES, *_EXTENSION_PROCESSES)


def workflow_classes() -> list[type]:
    """Every workflow a Baton worker registers (once each: an extension's process may reuse a
    workflow, e.g. a second input model for the same one)."""
    return list(dict.fromkeys([*(spec.workflow for spec in processes()), *SERVICE_WORKFLOWS]))


def spec_for(inp: BaseModel) -> ProcessSpec:
    """The process that takes ``inp`` (by its input model)."""
    for spec in processes():
        if isinstance(inp, spec.input):
            return spec
    known = ", ".join(s.input.__name__ for s in processes())
    raise UnknownProcess(f"no process takes a {type(inp).__name__} (known inputs: {known})")


def spec_named(name: str) -> ProcessSpec:
    """The process called ``name`` (its BatonProcess value)."""
    for spec in processes():
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in processes())
    raise UnknownProcess(f"unknown process {name!r} (known: {known})")
