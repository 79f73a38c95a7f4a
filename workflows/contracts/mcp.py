"""Names of governed MCP tool calls: the policy package that decides them and the name policy
and the audit trail give a tool. An MCP tool is called like every other tool, through the agent
loop's ``call_tool`` (workflows/contracts/tools.py has its contracts). Imports only the standard
library.

No credential ever appears here: a call names a server and a tool; the worker that runs it
holds the server's credentials (activities/mcp_tools.py).
"""

from __future__ import annotations

__all__ = ["MCP_TOOL_POLICY", "mcp_tool_name"]

#: The policy package every MCP tool call is decided by (``data.baton.base.mcp_tool.decision``).
MCP_TOOL_POLICY = "baton/base/mcp_tool"


def mcp_tool_name(server: str, tool: str) -> str:
    """The governed name of an MCP tool, as policy, the audit trail and the model see it:
    ``mcp:<server>/<tool>``."""
    return f"mcp:{server}/{tool}"
