"""Contracts of tool-using agents (issue 18): tool calls, their results, the payload store's
references, the model turns of the agent loop and the agent run.

A conversation never crosses a Temporal boundary by value: messages and tool results live in the
payload store (activities/payload_store.py) and the workflow carries :class:`PayloadRef`\\ s
(digest, size, a short preview). Tool arguments do cross (policy, approvals and the audit bind
to them), bounded by ``MAX_ARGUMENT_BYTES``.

Imports only pydantic, the standard library and other contract modules.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from workflows.contracts.base import AgentInput, Budget, Contract
from workflows.contracts.governance import (
    ApprovalGrant,
    BusinessClaim,
    Obligations,
    PolicyDecision,
    claim_field,
)
from workflows.contracts.support import RoutedUsage, Tier

#: The policy every tool call asks unless its ToolSpec names another (policy/base/tool_call.rego).
TOOL_CALL_POLICY = "baton/base/tool_call"
#: The largest tool-argument document a call may carry through the workflow (JSON bytes).
MAX_ARGUMENT_BYTES = 16 * 1024
#: Characters of a stored payload shown in its reference (Web UI, history).
PREVIEW_CHARS = 40
_NO_OBLIGATIONS = Obligations().model_dump(mode="json")

#: The key of a tool result's ``data`` that marks it as a suspected prompt injection.
INJECTION_FLAG = "injection_suspected"

#: The tool the loop offers for the agent's final answer (its parameters: the output schema).
FINAL_ANSWER_TOOL = "final_answer"


class _Compact(Contract):
    """A contract that crosses the history once or twice per tool call: fields equal to their
    default are left out of its JSON (the receiver fills them in again), so a long agent run's
    history stays small (workflows/agent_loop.py)."""

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for name, spec in type(self).model_fields.items():
            if name not in out or spec.is_required():
                continue
            default = spec.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            if out[name] == default:
                del out[name]
        return out


class PayloadRef(_Compact):
    """A stored payload (activities/payload_store.py): the workflow carries this, not the text."""

    digest: str = Field(description="sha256 of the stored bytes; the payload table's key.")
    size: int = Field(ge=0, description="Bytes stored.")
    preview: str = Field(default="", max_length=PREVIEW_CHARS)


class ToolResult(Contract):
    """What a tool answers: text for the model, an error flag, optional structured data.

    MCP tools map onto this one to one (content text, ``isError``, ``structuredContent``)."""

    text: str = ""
    is_error: bool = False
    data: dict[str, Any] | None = None


class ToolPrincipal(Contract):
    """Who calls a tool: the process, the tenant, the agent (its role) and the run's requester."""

    process: str
    tenant: str
    agent: str
    requested_by: str


class FlaggedResult(Contract):
    """A tool result the worker flagged as a prompt injection (it reads as instructions to the
    agent): policy refuses sensitive tools for the rest of the run (policy/base/mcp_tool.rego)."""

    tool: str
    reasons: list[str] = []


class ToolHistory(_Compact):
    """The run's tool calls so far, as policy reads them (policy/base/tool_call.rego,
    policy/base/mcp_tool.rego)."""

    calls: dict[str, int] = Field(default={}, description="Allowed calls made, per tool.")
    total_calls: int = Field(default=0, ge=0)
    amounts: dict[str, float] = Field(default={}, description="Amount moved, per tool.")
    denials: int = Field(default=0, ge=0, description="Calls policy or an approver refused.")
    denied: dict[str, int] = Field(default={}, description="Refused calls, per tool.")
    flagged_results: list[FlaggedResult] = Field(
        default=[], description="Results flagged as a prompt injection so far, in order."
    )

    def allowed(self, tool: str, amount: float | None) -> ToolHistory:
        calls = {**self.calls, tool: self.calls.get(tool, 0) + 1}
        amounts = dict(self.amounts)
        if amount is not None:
            amounts[tool] = round(amounts.get(tool, 0.0) + amount, 2)
        return self.model_copy(
            update={"calls": calls, "total_calls": self.total_calls + 1, "amounts": amounts}
        )

    def refused(self, tool: str) -> ToolHistory:
        denied = {**self.denied, tool: self.denied.get(tool, 0) + 1}
        return self.model_copy(update={"denials": self.denials + 1, "denied": denied})

    def read(self, tool: str, data: dict[str, Any] | None) -> ToolHistory:
        """After a call ran: its result, when the worker flagged it as a prompt injection
        (``data["injection_suspected"]``, set by activities/mcp_tools.py), is remembered."""
        if not data or data.get(INJECTION_FLAG) is not True:
            return self
        reasons = [str(r) for r in data.get("injection_reasons", [])]
        flagged = [*self.flagged_results, FlaggedResult(tool=tool, reasons=reasons)]
        return self.model_copy(update={"flagged_results": flagged})


class ToolCallRequest(_Compact):
    """One call a model asked for (the OpenAI ``tool_calls`` item, arguments parsed)."""

    call_id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = {}

    @field_validator("arguments")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, default=str))
        if size > MAX_ARGUMENT_BYTES:
            raise ValueError(f"tool arguments must be at most {MAX_ARGUMENT_BYTES} bytes of JSON")
        return value


class ToolCallInput(_Compact):
    """The activity ``call_tool``: run one tool if, and only if, policy allows it now."""

    tool: str
    arguments: dict[str, Any]
    call_id: str = Field(description="The model's id of the call (the tool message answers it).")
    idempotency_key: str = Field(min_length=1)
    principal: ToolPrincipal
    history: ToolHistory = ToolHistory()
    approval: ApprovalGrant | None = None
    policy: str = TOOL_CALL_POLICY
    #: the run's business-key claim (activities/claims.py): a side-effecting call claims the
    #: key, or checks the run still owns it, in the transaction policy allows it in
    claim: BusinessClaim | None = claim_field()


class ToolCallOutcome(_Compact):
    """What ``call_tool`` did: policy's decision, and when allowed the result (stored; the
    reference is the tool message the model reads next)."""

    decision: PolicyDecision
    ran: bool = False
    is_error: bool = False
    #: the tool message (role ``tool``) as stored: the result when it ran, else empty
    message: PayloadRef | None = None
    #: a short structured summary of the result (e.g. {"credit_id": ...}) for the audit/status
    data: dict[str, Any] | None = None
    tool_ms: float = Field(default=0.0, description="Time the tool itself took.")

    @model_serializer(mode="wrap")
    def _small(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = _Compact._compact(self, handler)  # type: ignore[arg-type]
        decision = out.get("decision")
        if isinstance(decision, dict) and decision.get("obligations") == _NO_OBLIGATIONS:
            decision.pop("obligations")  # a decision with no obligations: the usual case
        return out


class UndoToolInput(Contract):
    """The activity ``undo_tool``: run a tool's compensation for one earlier call (by key)."""

    tool: str = Field(description="The compensation tool.")
    of_tool: str
    call_key: str = Field(description="The idempotency key of the call being undone.")
    principal: ToolPrincipal


class UndoToolOutcome(Contract):
    undone: bool
    text: str = ""


class ToolSchema(Contract):
    """A tool as the model is shown it (OpenAI ``tools`` item)."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolReply(_Compact):
    """A message the next turn adds: a stored one (``ref``) or a short note by value (an
    approver's rejection, a refused call), stored by the turn as the call's tool message."""

    call_id: str = ""
    ref: PayloadRef | None = None
    text: str | None = Field(default=None, max_length=4000)


class AgentTurnInput(_Compact, AgentInput):
    """The activity ``agent_turn``: one model turn of the agent loop (routed).

    ``conversation`` is the stored list of message references so far; ``appended`` are the
    messages to add first (tool results since the last turn, or the opening messages)."""

    agent: str
    task_class: str = "act"
    tenant: str
    min_tier: Tier = "cheap"
    process: str = "agent_run"
    conversation: PayloadRef | None = None
    appended: list[ToolReply] = []
    task: dict[str, Any] | None = Field(default=None, description="The task (first turn only).")
    tools: list[str] = Field(description="The tools the agent may call this turn.")
    output: str = Field(description="The agent step's name: its output schema and checks.")
    turn: int = Field(ge=1)
    #: an agent step declared in a process definition (workflows/dsl): its instructions, and
    #: ``output`` names its answer in workflows/agent_steps.py ANSWERS (None: a declared step)
    instructions: str | None = Field(default=None, max_length=8000)


class AgentTurn(_Compact):
    """One model turn's outcome: the calls it asks for, or its final answer (validated)."""

    conversation: PayloadRef
    tool_calls: list[ToolCallRequest] = []
    final: dict[str, Any] | None = None
    #: the final answer was refused (schema or meaning): the tool message telling the model why
    refused: PayloadRef | None = None
    usage: RoutedUsage
    mode: Literal["native", "structured"] = "native"
    #: tool -> its compensation tool, for the step's side-effecting tools that have one (the
    #: workflow registers the compensation before the call runs)
    compensations: dict[str, str] = {}


class AgentRunInput(Contract):
    """Start an agent run: one declared agent step (workflows/agent_loop.py AGENT_STEPS) on a
    task. Continued runs carry their state in ``carry``."""

    run_key: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    agent: str = Field(min_length=1, description="An agent step of AGENT_STEPS.")
    tenant: str = Field(min_length=1)
    requested_by: str = Field(min_length=1)
    task: dict[str, Any] = Field(description="The agent's task as a JSON document.")
    budget_usd: float | None = Field(default=None, gt=0, description="The run's model budget.")
    approval_timeout_seconds: float = Field(default=3600, gt=0)
    max_history_events: int | None = Field(
        default=None,
        ge=100,
        description="Continue as new past this many history events (default: the step's).",
    )
    carry: dict[str, Any] | None = Field(
        default=None, description="State of the run continued from (set by the loop itself)."
    )

    @property
    def budget(self) -> Budget:
        """The run's model budget (workflows/process_base.py reads it)."""
        return Budget(run_usd=self.budget_usd)


class AgentRunResult(Contract):
    run_key: str
    agent: str
    output: dict[str, Any]
    turns: int
    tool_calls: int
    denials: int
    continued: int = Field(description="Times the run continued as new.")
    tokens: int
    cost_usd: float
    conversation: PayloadRef


__all__ = [
    "AgentRunInput",
    "AgentRunResult",
    "AgentTurn",
    "AgentTurnInput",
    "FINAL_ANSWER_TOOL",
    "FlaggedResult",
    "INJECTION_FLAG",
    "MAX_ARGUMENT_BYTES",
    "PREVIEW_CHARS",
    "PayloadRef",
    "TOOL_CALL_POLICY",
    "ToolCallInput",
    "ToolCallOutcome",
    "ToolCallRequest",
    "ToolHistory",
    "ToolPrincipal",
    "ToolResult",
    "ToolReply",
    "ToolSchema",
    "UndoToolInput",
    "UndoToolOutcome",
]
