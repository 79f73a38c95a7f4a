"""A test process without an agent loop that makes governed tool calls one after the other
through :class:`~workflows.agent_loop.ToolCaller` (the sandbox imports this small module, not
the test module with its MCP client)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from temporalio import workflow

from workflows.agent_loop import ToolCaller
from workflows.contracts import Budget, Contract
from workflows.contracts.tools import PayloadRef, ToolPrincipal
from workflows.process_base import GovernedProcess


class PlannedCall(Contract):
    tool: str
    arguments: dict[str, Any] = {}


class ToolCallsInput(Contract):
    process: str = Field(description="The principal's process: selects the MCP allow-list.")
    agent: str = Field(description="The principal's role.")
    tenant: str
    requested_by: str
    calls: list[PlannedCall]
    approval_timeout_seconds: float = 3600

    @property
    def budget(self) -> Budget:
        return Budget()


class CallDone(Contract):
    """What the process saw of one call."""

    ran: bool
    is_error: bool = False
    data: dict[str, Any] | None = None
    #: the stored tool message (the result, or why policy refused it)
    message: PayloadRef | None = None
    #: a short note instead of a stored message (a refusal, an approver's rejection)
    text: str | None = None


@workflow.defn(name="ToolCallsTestProcess")
class ToolCallsTestProcess(GovernedProcess):
    @workflow.init
    def __init__(self, inp: ToolCallsInput) -> None:
        self.govern(inp, inp.process)
        principal = ToolPrincipal(
            process=inp.process, tenant=inp.tenant, agent=inp.agent, requested_by=inp.requested_by
        )
        self.caller = ToolCaller(self, principal, tuple(sorted({c.tool for c in inp.calls})))

    @workflow.run
    async def run(self, inp: ToolCallsInput) -> list[CallDone]:
        self.begin("tool_calls.started", {"calls": len(inp.calls)}, tenant=inp.tenant)
        return await self._undoing_on_failure(
            self._calls(inp), event="tool_calls.run", what="tool calls"
        )

    async def _calls(self, inp: ToolCallsInput) -> list[CallDone]:
        done = []
        for planned in inp.calls:
            call = await self.caller.call(planned.tool, planned.arguments)
            done.append(
                CallDone(
                    ran=call.ran,
                    is_error=call.outcome is not None and call.outcome.is_error,
                    data=call.outcome.data if call.outcome is not None else None,
                    message=call.reply.ref,
                    text=call.reply.text,
                )
            )
        await self.finish("tool_calls.finished", {"calls": len(done)})
        return done
