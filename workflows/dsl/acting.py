"""An agent that acts as a step of a process definition (``type: agent`` with ``agent:`` an
object): the step declared from the YAML, run by the agent loop every process uses
(workflows/agent_loop.py) inside the interpreter workflow, so every tool call is a governed
step of the process (policy, approval with edit/reject, audit, compensation on its saga).

What it adds to the loop is a record: each tool call with its arguments and verdict, for the
step's output (``steps.<id>.output.calls``) that later steps read.

Must not: run a second copy of the loop or of the governed step; do I/O (workflow code).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.exceptions import ApplicationError

from workflows import errors
from workflows.agent_loop import AgentLoop
from workflows.agent_steps import AGENT_STEPS, ANSWERS, AgentLimits, answer_of
from workflows.agent_steps import AgentStep as DeclaredAgentStep
from workflows.contracts import ApprovalGrant, Budget, digest
from workflows.contracts.tools import (
    ToolCallOutcome,
    ToolCallRequest,
    ToolHistory,
    ToolPrincipal,
    ToolReply,
)
from workflows.dsl.model import AgentThatActs
from workflows.process_base import GovernedProcess


def declared_step(spec: AgentThatActs, step_id: str) -> DeclaredAgentStep:
    """The agent step the YAML declares: inline instructions, or a declared agent step named
    by ``instructions`` (its tools, answer and role unless the YAML gives them)."""
    base = AGENT_STEPS.get(spec.instructions)
    limits = AgentLimits(
        max_turns=spec.limits.max_turns,
        max_tool_calls=spec.limits.max_tool_calls,
        max_tokens=spec.limits.max_tokens,
        max_usd=spec.limits.usd,
        # a process run does not continue as new in the middle of a step
        continue_after_events=10**9,
    )
    if base is not None:
        limits = dataclasses.replace(limits, context_messages=base.limits.context_messages)
        step = dataclasses.replace(
            base,
            tools=tuple(spec.tools) if spec.tools is not None else base.tools,
            limits=limits,
        )
        role = spec.role or base.name
        if spec.output is None and role == base.name:
            return step  # the worker holds this declaration: turns name it
        answer = spec.output or answer_of(base.output)
        if answer is None:
            raise ValueError(f"agent step {base.name!r} has no answer in ANSWERS: name output")
        return dataclasses.replace(
            step,
            name=role,
            output=ANSWERS[answer].model,
            check=ANSWERS[answer].check,
            answer=answer,
        )
    answer = spec.output or "text"
    if answer not in ANSWERS:
        raise ValueError(f"unknown answer {answer!r} (answers: {', '.join(sorted(ANSWERS))})")
    return DeclaredAgentStep(
        name=spec.role or step_id,
        instructions=spec.instructions,
        tools=tuple(spec.tools or ()),
        output=ANSWERS[answer].model,
        check=ANSWERS[answer].check,
        limits=limits,
        answer=answer,
    )


class RecordedLoop(AgentLoop):
    """The agent loop, keeping each tool call's arguments and verdict for the step's output."""

    def __init__(
        self, process: GovernedProcess, step: DeclaredAgentStep, principal: ToolPrincipal
    ) -> None:
        super().__init__(process, step, principal, None)
        self.max_history_events = 10**9
        self.calls: dict[str, dict[str, Any]] = {}

    async def _call(self, call: ToolCallRequest, history: ToolHistory) -> ToolReply:
        record = self.calls.setdefault(
            call.call_id, {"call_id": call.call_id, "tool": call.name, "arguments": call.arguments}
        )
        reply = await super()._call(call, history)
        verdict = record.get("verdict")
        if verdict is None:
            record["verdict"] = "not_a_tool"
        elif verdict == "approval_required":  # the approver said no (or edited too often)
            record["verdict"] = "rejected"
        if reply.text is not None:
            record["told"] = reply.text
        return reply

    async def _act(
        self,
        call: ToolCallRequest,
        arguments: dict[str, Any],
        history: ToolHistory,
        grant_: ApprovalGrant | None,
    ) -> ToolCallOutcome | None:
        record = self.calls[call.call_id]
        record["arguments"] = arguments
        if arguments != call.arguments:  # an approver edited them
            record["edited"] = True
        try:
            outcome = await super()._act(call, arguments, history, grant_)
        except ApplicationError as err:
            if err.type == errors.POLICY_DENIED:
                record["verdict"] = "denied"
            raise
        if outcome is None:
            record["verdict"] = "approval_required"
        elif outcome.decision.verdict == "deny":
            record["verdict"] = "invalid"
        else:
            record["verdict"] = "approved" if grant_ is not None else "allowed"
            if grant_ is not None:
                record["approved_by"] = list(grant_.approvers)
            if outcome.data:
                record["data"] = outcome.data
        return outcome


async def run_agent(
    process: GovernedProcess,
    step: DeclaredAgentStep,
    step_id: str,
    task: dict[str, Any],
    principal: ToolPrincipal,
) -> dict[str, Any]:
    """Run the agent to its final answer; the step's output."""
    loop = RecordedLoop(process, step, principal)
    usd = step.limits.max_usd
    # the step's model turns may cost ``usd`` on top of what the run spent so far; the budget
    # role may raise it (process_base.py), the tenant's daily cap holds either way
    process._budget = Budget(run_usd=round(process.cost.cost_usd + usd, 8) if usd else None)
    answer = await loop.run(task, process._budget)
    if answer is None:
        raise errors.failure(
            errors.AGENT_LIMIT,
            f"step {step_id!r}: the run's history is too large to go on (a process definition's "
            "agent step does not continue as new): lower its limits",
        )
    calls = list(loop.calls.values())
    process.audit.record(
        f"agent:{step.name}",
        "agent.finished",
        detail={
            "step": step_id,
            "agent": step.name,
            "turns": loop.turns,
            "tool_calls": loop.history.total_calls,
            "denials": loop.history.denials,
            "tokens": loop.tokens,
            "cost_usd": loop.cost_usd,
            "output_digest": digest(answer),
        },
    )
    return {
        "answer": answer,
        "calls": calls,
        "turns": loop.turns,
        "tool_calls": loop.history.total_calls,
        "denials": loop.history.denials,
        "tokens": loop.tokens,
        "cost_usd": loop.cost_usd,
    }


__all__ = [
    "RecordedLoop",
    "declared_step",
    "run_agent",
]
