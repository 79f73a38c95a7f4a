"""Contracts of governed MCP tool calls: what a workflow sends the ``call_mcp_tool`` activity
and what it gets back. Imports only pydantic, the standard library and workflows.contracts.

No credential ever appears here: a call names a server and a tool; the worker that runs the
activity holds the server's credentials (activities/mcp_tools.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from workflows.contracts import ApprovalGrant, Contract, PolicyDecision

__all__ = [
    "MCP_TOOL_POLICY",
    "McpCaller",
    "McpCallHistory",
    "McpToolCall",
    "McpToolOutcome",
    "mcp_tool_name",
]

#: The policy package every MCP tool call is decided by (``data.baton.base.mcp_tool.decision``).
MCP_TOOL_POLICY = "baton/base/mcp_tool"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def mcp_tool_name(server: str, tool: str) -> str:
    """The governed name of an MCP tool, as policy, the audit trail and the model see it:
    ``mcp:<server>/<tool>``."""
    return f"mcp:{server}/{tool}"


class McpCaller(Contract):
    """Who asks: policy's ``principal``. ``process`` selects the allow-list."""

    process: str = Field(min_length=1, description="The process (allow-list key), e.g. 'support'.")
    role: str = Field(min_length=1, description="The agent's role, e.g. 'l2_researcher'.")
    tenant: str = Field(min_length=1)
    requested_by: str = ""


class McpCallHistory(Contract):
    """The run's tool calls so far, as the caller counted them (an agent loop counts its native
    tools too). The activity adds what the audit trail shows of this workflow's MCP calls, so
    policy never sees fewer calls or flagged results than really happened."""

    calls: dict[str, int] = {}
    total_calls: int = Field(default=0, ge=0)


class McpToolCall(Contract):
    """One governed call of an MCP tool."""

    server: str = Field(pattern=_NAME)
    tool: str = Field(pattern=_NAME)
    arguments: dict[str, Any] = {}
    caller: McpCaller
    history: McpCallHistory = McpCallHistory()
    #: a human's approval of exactly this call (policy re-checks it against the call's digest)
    approval: ApprovalGrant | None = None
    #: idempotency key (workflow id + step + payload digest); sent to the server as _meta
    key: str = Field(min_length=1)
    #: names the call in the Web UI and where a held decision is kept
    subject: str = ""


class McpToolOutcome(Contract):
    """What came of a call, readable by the model: the policy decision, and when the tool ran,
    its text (an error the model can read when it failed or timed out)."""

    decision: PolicyDecision
    tool: str = Field(description="mcp:<server>/<tool>")
    ran: bool = False
    is_error: bool = False
    error_kind: (
        Literal["tool_error", "timeout", "unavailable", "unknown_tool", "unknown_outcome"] | None
    ) = None
    text: str = ""
    structured: dict[str, Any] | None = None
    truncated: bool = False
    #: the result looked like instructions to the agent (a prompt injection): audited, and
    #: policy refuses sensitive tools for the rest of the run
    injection_suspected: bool = False
    injection_reasons: list[str] = []
    output_digest: str | None = None
    duration_ms: int = 0
