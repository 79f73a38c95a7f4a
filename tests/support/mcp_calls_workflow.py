"""A test workflow that runs governed MCP tool calls one after the other, as an agent loop
would (the sandbox imports this small module, not the test module with its MCP client)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.mcp_tools import McpActivities
    from workflows.contracts_mcp import McpToolCall, McpToolOutcome
    from workflows.presets import PRESETS


@workflow.defn(name="McpToolCallsTestWorkflow")
class McpToolCallsTestWorkflow:
    @workflow.run
    async def run(self, calls: list[McpToolCall]) -> list[McpToolOutcome]:
        preset = PRESETS["connector"]
        outcomes = []
        for call in calls:
            outcomes.append(
                await workflow.execute_activity_method(
                    McpActivities.call_mcp_tool,
                    call,
                    start_to_close_timeout=preset.start_to_close,
                    retry_policy=preset.retry,
                    summary=f"mcp {call.server}/{call.tool}",
                )
            )
        return outcomes
