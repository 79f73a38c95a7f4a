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


with workflow.unsafe.imports_passed_through():
    from workflows.contracts_tools import ToolCallInput, ToolCallOutcome, ToolHistory


@workflow.defn(name="AgentToolCallsTestWorkflow")
class AgentToolCallsTestWorkflow:
    """Runs tool calls through the agent loop's ``call_tool`` activity one after the other,
    keeping the run's tool history the way the agent loop does (allowed calls counted, refused
    ones counted as denials), so policy sees what it would see in a real agent run."""

    @workflow.run
    async def run(self, calls: list[ToolCallInput]) -> list[ToolCallOutcome]:
        preset = PRESETS["connector"]
        history = ToolHistory()
        outcomes: list[ToolCallOutcome] = []
        for call in calls:
            outcome: ToolCallOutcome = await workflow.execute_activity(
                "call_tool",
                call.model_copy(update={"history": history}),
                result_type=ToolCallOutcome,
                start_to_close_timeout=preset.start_to_close,
                retry_policy=preset.retry,
                summary=f"tool {call.tool}",
            )
            if outcome.decision.verdict == "allow":
                history = history.allowed(call.tool, None)
            else:
                history = history.refused(call.tool)
            outcomes.append(outcome)
        return outcomes
