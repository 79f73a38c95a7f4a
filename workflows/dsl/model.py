"""The process-definition language: pydantic models of a YAML process (the JSON Schema for
editors is generated from these; see ``baton schema`` and processes/process.schema.json).

A definition is data: it crosses the Temporal boundary inside the interpreter's input, so a
running instance keeps the exact definition it started with. Values that are strings may hold
``${...}`` expressions (workflows/dsl/expressions.py). Only pydantic and the standard library here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from workflows.contracts.security import Name, bounded_json

LANGUAGE_VERSION = 1
STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"

Expr = Annotated[str, Field(description="An expression, e.g. '${steps.collect.output.ledger}'.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class RetryOverride(Strict):
    """Overrides of the step kind's retry preset (workflows/presets.py); unset fields keep it."""

    maximum_attempts: int | None = Field(default=None, ge=0, le=1000)
    initial_interval_seconds: float | None = Field(default=None, gt=0, le=3600)
    maximum_interval_seconds: float | None = Field(default=None, gt=0, le=86400)
    backoff_coefficient: float | None = Field(default=None, ge=1, le=10)


class Compensation(Strict):
    """The undo of a step: a connector action registered BEFORE the step runs (saga)."""

    action: str = Field(description="Catalog name of the connector action that undoes the step.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    summary: str | None = None


class StepBase(Strict):
    id: str = Field(pattern=STEP_ID, description="Unique step id; outputs are steps.<id>.output.")
    summary: str | None = Field(
        default=None, description="Shown as the activity summary in the Web UI (may hold ${})."
    )
    needs: list[str] = Field(
        default_factory=list, description="Steps of the same block that must run first."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="start-to-close timeout override."
    )
    retry: RetryOverride | None = None
    compensation: Compensation | None = None


class AgentLimitsSpec(Strict):
    """What an agent that acts may use before the step fails with AgentLimitReached (turns,
    tool calls, tokens) or asks the budget role (usd: its model turns' cost)."""

    max_turns: int = Field(default=8, gt=0, le=200, description="Model turns at most.")
    max_tool_calls: int = Field(default=12, gt=0, le=500, description="Tool calls at most.")
    max_tokens: int = Field(default=200_000, gt=0, le=50_000_000)
    usd: float | None = Field(
        default=None, gt=0, le=10_000, description="Most the step's model turns may cost (USD)."
    )


class AgentThatActs(Strict):
    """An agent that acts (workflows/agent_loop.py): it calls tools until it finishes with an
    answer; every tool call is a governed step (policy, approval, audit, compensation)."""

    instructions: str = Field(
        min_length=1,
        max_length=8000,
        description="What the agent is told, or the name of a declared agent step "
        "(workflows/agent_steps.py: case_resolver, l2_researcher ...).",
    )
    tools: list[str] | None = Field(
        default=None,
        description="Tools it may call: built-in and mcp__<server>__<tool> (default: the "
        "declared agent step's).",
    )
    output: str | None = Field(
        default=None,
        description="The answer it must finish with, by name (workflows/agent_steps.py "
        "ANSWERS; default: the declared agent step's).",
    )
    role: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Its role in tool policy (policy/data/tools.json roles) and the first line "
        "of its prompt (default: the declared agent step's name, else the step id).",
    )
    limits: AgentLimitsSpec = Field(default_factory=AgentLimitsSpec)
    input: dict[str, Any] | Expr = Field(
        default_factory=dict, description="The task it is given: an object (may hold ${})."
    )


#: what each tool call of an agent that acts came to (``steps.<id>.output.calls[*].verdict``):
#: policy allowed it; a human approved it; policy denied it; a human rejected it; its
#: arguments were invalid; the agent asked for a tool it does not have
TOOL_VERDICTS = ("allowed", "approved", "denied", "rejected", "invalid", "not_a_tool")


def _agent_kind(value: Any) -> str:
    return "task" if isinstance(value, str) else "acts"


class AgentStep(StepBase):
    """An agent task of the catalogue (``agent: memo.write`` with ``with:``), or an agent that
    acts (``agent:`` an object with instructions, tools, output, limits and input)."""

    type: Literal["agent"]
    agent: Annotated[
        Annotated[str, Tag("task")] | Annotated[AgentThatActs, Tag("acts")],
        Discriminator(_agent_kind),
    ] = Field(description="Catalog name of the agent task, e.g. memo.write; or an agent that acts.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class ConnectorStep(StepBase):
    type: Literal["connector"]
    action: str = Field(description="Catalog name of the connector action.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class GovernedActionStep(StepBase):
    """A governed step: a connector action that asks policy in its own transaction (its output
    carries the ``decision``), once, or once per item with ``for_each`` (one after the other).
    Its compensation is registered before each attempt, once per idempotency key. Allowed: done;
    denied: the run fails with PolicyDenied; a human first: the item waits for the approval step
    that guards it (``guards: <this step>``), under its ``subject``."""

    type: Literal["governed"]
    action: str = Field(description="Catalog name of a connector action that asks policy itself.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    for_each: Expr | None = Field(default=None, description="Run it once per item.")
    as_: str = Field(default="item", alias="as", pattern=r"^[a-z][a-z0-9_]*$")
    subject: str = Field(
        default="",
        description="What an item's decision is kept under, e.g. '${entry.entry_id}' "
        "(needed with for_each; default: the step id).",
    )


class PolicyStep(StepBase):
    """A policy gate: ask OPA; deny fails the process unless on_deny is 'continue'."""

    type: Literal["policy"]
    policy: str = Field(description="Rego package path under data, e.g. baton/finance/posting.")
    input: dict[str, Any] | str
    subject: str = ""
    for_each: Expr | None = Field(default=None, description="Ask once per item (one batch).")
    as_: str = Field(default="item", alias="as", pattern=r"^[a-z][a-z0-9_]*$")
    on_deny: Literal["fail", "continue"] = "fail"


class ApprovalStep(StepBase):
    """Put an action before humans (workflows/approval_gate.py): N-of-M, SLA, escalation.

    With ``guards: <step id>`` the approval is that governed step's (an extension action):
    asked only when policy held the step back, built from the decision policy took on it
    (obligations, reasons), bound to the digest of the action and its arguments; approved, the
    step runs again with the approval (policy re-checks it). Rejected: ApprovalRejected;
    expired: ApprovalExpired. Without ``guards``, ``action``, ``request_summary``, ``payload``,
    ``obligations`` and ``requested_by`` say it all by hand."""

    type: Literal["approval"]
    guards: str | None = Field(
        default=None,
        pattern=STEP_ID,
        description="The governed step (an extension action) this approval is for.",
    )
    action: str | None = None
    request_summary: str | None = Field(
        default=None, description="What the approvers are asked (may hold ${})."
    )
    payload: Any = Field(default=None, description="The exact action approved (bound by digest).")
    obligations: Expr | None = Field(
        default=None, description="Policy obligations (a list) naming the approvers."
    )
    entries: Expr | None = Field(default=None, description="Adjusting entries shown, if any.")
    round: Expr | int = Field(default=1, description="1 for the first request, +1 per re-ask.")
    findings: Expr | None = None
    requested_by: str | None = None
    exclude: list[str] | Expr = Field(
        default_factory=list, description="May not decide (preparers, amenders)."
    )
    sla_seconds: Expr | int = 3 * 24 * 3600
    max_rounds: int | None = Field(
        default=None,
        ge=1,
        le=50,
        description="guards a governed step: requests at most, the first one and one per "
        "amendment or requested change (default 5).",
    )
    revise: list[Step] = Field(
        default_factory=list,
        description="guards a governed step: what answers an approver's requested changes "
        "(e.g. the preparing agent; ${held} the items, ${approval} the outcome).",
    )
    revised: Expr | None = Field(
        default=None,
        description="The items the revise steps give back, e.g. '${steps.revise.output.entries}'.",
    )

    @model_validator(mode="after")
    def _guarded_or_complete(self) -> ApprovalStep:
        if self.guards is None:
            missing = [
                name
                for name in ("action", "request_summary", "payload", "obligations", "requested_by")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"an approval step without guards needs {', '.join(missing)} "
                    "(or guards: <the governed step it approves>)"
                )
        if self.guards is None and (self.max_rounds or self.revise or self.revised):
            raise ValueError(
                "max_rounds, revise and revised belong to an approval step that guards a "
                "governed step (guards: <its id>)"
            )
        if bool(self.revise) != (self.revised is not None):
            raise ValueError(
                "revise and revised go together: the steps that answer requested changes, "
                "and the items they give back"
            )
        return self


class FailStep(StepBase):
    type: Literal["fail"]
    error: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", description="Failure type users match.")
    message: str


class SetStep(StepBase):
    """Set process variables, read as ``${vars.<name>}``: state carried across loop iterations
    (e.g. the entries still waiting for an approval). All values are computed, then assigned."""

    type: Literal["set"]
    values: dict[str, Any] = Field(min_length=1)


class WaitEventStep(StepBase):
    """Wait for the ``dsl_event`` signal with this name; output is its data (null on timeout)."""

    type: Literal["wait_event"]
    event: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    timeout: Expr | float = Field(description="Seconds to wait.")
    on_timeout: Literal["fail", "continue"] = "fail"


class SubprocessStep(StepBase):
    """Run a process of this file's ``subprocesses`` as a child workflow."""

    type: Literal["subprocess"]
    process: str
    input: dict[str, Any] = Field(default_factory=dict)


class Branch(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    steps: list[Step] = Field(min_length=1)


class ParallelStep(StepBase):
    """Branches run concurrently: all must finish, or any / n_of (the rest are cancelled and
    their completed steps compensated at once)."""

    type: Literal["parallel"]
    mode: Literal["all", "any", "n_of"] = "all"
    n: int | None = Field(default=None, ge=1)
    branches: list[Branch] = Field(min_length=1)


class ConditionStep(StepBase):
    type: Literal["condition"]
    if_: Expr = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")


class SwitchCase(Strict):
    value: str | int | bool | None
    steps: list[Step] = Field(default_factory=list)


class SwitchStep(StepBase):
    type: Literal["switch"]
    expression: Expr = Field(description="The value compared with each case.")
    cases: list[SwitchCase] = Field(min_length=1)
    default: list[Step] = Field(default_factory=list)


class LoopStep(StepBase):
    """A bounded loop: over a list (for_each) or while a condition holds; max_iterations caps
    both. Output: the list of ``collect`` values (of iterations where collect_if holds)."""

    type: Literal["loop"]
    for_each: Expr | None = None
    while_: Expr | None = Field(default=None, alias="while")
    as_: str = Field(default="item", alias="as", pattern=r"^[a-z][a-z0-9_]*$")
    max_iterations: int = Field(ge=1, le=10_000)
    steps: list[Step] = Field(min_length=1)
    collect: Any = None
    collect_if: Expr | None = None


Step = Annotated[
    AgentStep
    | ConnectorStep
    | GovernedActionStep
    | PolicyStep
    | ApprovalStep
    | FailStep
    | SetStep
    | WaitEventStep
    | SubprocessStep
    | ParallelStep
    | ConditionStep
    | SwitchStep
    | LoopStep,
    Field(discriminator="type"),
]


class InputField(Strict):
    type: Literal["string", "integer", "number", "boolean", "object", "array"]
    default: Any = None
    required: bool = True
    description: str = ""


class SubprocessDefinition(Strict):
    input: dict[str, InputField] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    output: Any = None


class ProcessDefinition(Strict):
    """A process: inputs, steps, output. ``version`` is the definition's own revision."""

    language: Literal[1] = Field(default=1, description="Version of this language.")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str = Field(min_length=1, max_length=40, description="The definition's revision.")
    description: str = ""
    audit_prefix: str = Field(
        default="process", pattern=r"^[a-z][a-z0-9_]*$", description="<prefix>.started etc."
    )
    input: dict[str, InputField] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    output: Any = None
    subprocesses: dict[str, SubprocessDefinition] = Field(default_factory=dict)


class ProcessRunInput(Strict):
    """The interpreter workflow's input: the validated definition travels with the run."""

    definition: ProcessDefinition
    input: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(
        default="", max_length=4096, description="Where the definition came from (file path)."
    )
    requested_by: Name = "baton"
    subprocess: Name | None = Field(default=None, description="Run this subprocess instead.")
    approval_timeout_seconds: float = Field(
        default=3 * 24 * 3600,
        gt=0,
        le=90 * 24 * 3600,
        description="SLA of approvals asked without their own (an agent's tool calls).",
    )

    @field_validator("input")
    @classmethod
    def _input_is_bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        bounded_json(v, "input")
        return v


class ProcessEvent(Strict):
    """Payload of the ``dsl_event`` signal a wait_event step waits for."""

    name: Name
    data: Any = None

    @field_validator("data")
    @classmethod
    def _data_is_bounded(cls, v: Any) -> Any:
        return bounded_json(v, "data")


class ProcessRunResult(Strict):
    name: str
    version: str
    output: Any = None
    compensated: list[str] = Field(default_factory=list)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def bind_inputs(spec: dict[str, InputField], values: dict[str, Any]) -> dict[str, Any]:
    """The process input with defaults applied; ValueError naming every bad field."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name in values:
        if name not in spec:
            problems.append(f"{name}: not an input of this process (inputs: {', '.join(spec)})")
    for name, field in spec.items():
        if name not in values:
            if field.default is not None or not field.required:
                out[name] = field.default
            else:
                problems.append(f"{name}: required ({field.type}) is missing")
            continue
        value = values[name]
        ok = isinstance(value, _JSON_TYPES[field.type]) and not (
            isinstance(value, bool) and field.type in ("integer", "number")
        )
        if not ok:
            problems.append(f"{name}: expected {field.type}, got {value!r}")
        out[name] = value
    if problems:
        raise ValueError("invalid process input: " + "; ".join(problems))
    return out


__all__ = [
    "AgentLimitsSpec",
    "AgentStep",
    "AgentThatActs",
    "ApprovalStep",
    "Branch",
    "Compensation",
    "ConditionStep",
    "ConnectorStep",
    "Expr",
    "FailStep",
    "GovernedActionStep",
    "InputField",
    "LANGUAGE_VERSION",
    "LoopStep",
    "ParallelStep",
    "PolicyStep",
    "ProcessDefinition",
    "ProcessEvent",
    "ProcessRunInput",
    "ProcessRunResult",
    "RetryOverride",
    "STEP_ID",
    "SetStep",
    "Step",
    "StepBase",
    "Strict",
    "TOOL_VERDICTS",
    "SubprocessDefinition",
    "SubprocessStep",
    "SwitchCase",
    "SwitchStep",
    "WaitEventStep",
    "bind_inputs",
]
