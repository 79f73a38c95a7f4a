"""Agents that act: the tool-using agent loop, run in the workflow (issue 18).

:class:`AgentLoop` runs one declared :class:`~workflows.agent_steps.AgentStep` inside a governed
process, top to bottom:

1. a model turn is an activity (``agent_turn``, activities/agent_turn.py), routed over the
   catalogue with the run's budget (a refused call asks the budget role: process_base.py);
2. each tool call the turn asks for is a :class:`~workflows.governed.GovernedStep` run by
   ``Governance.act`` (kill switch, throttles, policy in the tool's own transaction, saga,
   audit); calls of one turn run concurrently;
3. policy's verdict decides what the model sees next: allow -> the tool's result; deny -> why
   (the model may try something else); require_approval -> an :class:`ApprovalRound` bound to
   the digest of tool name + arguments: approved -> the call runs with the grant (policy checks
   it again); rejected -> the approver's message; edited -> the new arguments are validated,
   digested and checked by policy again (and may need another round);
4. a side-effecting tool's compensation is registered before it runs; a failed or cancelled
   run undoes them in reverse (the process's failure path);
5. the final answer (``final_answer``) is validated for shape and meaning in the turn; a refused
   one is the model's to repair, within ``max_turns``.

History stays small: messages and tool results live in the payload store and the loop carries
references; between turns, when the history passes the step's ``continue_after_events`` (or
Temporal suggests it), the run continues as new with its state in ``AgentRunInput.carry``
(conversation, counts, compensations to re-register, money spent).

:class:`AgentRunWorkflow` is a process of one agent step (``AgentRun``), for service teams that
want an agent that acts without a process around it, the tests and the bench.

:class:`ToolCaller` is the loop's per-call code without model turns: a process without an agent
loop runs a tool call (e.g. one MCP tool) through it as the same governed step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import errors
from workflows.agent_steps import AGENT_STEPS, AgentStep
from workflows.contracts import ApprovalGrant, Budget, digest
from workflows.contracts.support import RoutedUsage
from workflows.contracts.tools import (
    AgentRunInput,
    AgentRunResult,
    AgentTurn,
    AgentTurnInput,
    PayloadRef,
    ToolCallInput,
    ToolCallOutcome,
    ToolCallRequest,
    ToolHistory,
    ToolPrincipal,
    ToolReply,
    ToolResult,
    UndoToolInput,
)
from workflows.governed import ApprovalRound, Compensation, GovernedStep, grant
from workflows.process_base import GovernedProcess

with workflow.unsafe.imports_passed_through():
    from activities.agent_turn import AgentTurnActivities
    from activities.tools import ToolActivities

__all__ = [
    "AGENT_RUN_PROCESS",
    "AgentLoop",
    "AgentRunWorkflow",
    "MAX_EDIT_ROUNDS",
    "MAX_REPEATED_CALLS",
    "REPEAT_GUARD_PATCH",
    "REPEAT_WINDOW",
    "ToolCallDone",
    "ToolCaller",
    "act_as_agent",
]

AGENT_RUN_PROCESS = "agent_run"
#: Rounds of approver edits one call may go through before it is refused.
MAX_EDIT_ROUNDS = 3
#: Small models ask for the same call again and again: a call repeating one of the last
#: REPEAT_WINDOW calls (same tool, same arguments) is not made again (the model is told to use
#: the result it has), and a run that repeats MAX_REPEATED_CALLS times fails AgentLimitReached.
REPEAT_WINDOW = 32
MAX_REPEATED_CALLS = 3
#: Replay safety: runs started before the guard made repeated calls again.
REPEAT_GUARD_PATCH = "agent-loop-repeat-guard"


class AgentLoop:
    """One agent step's loop, inside ``process`` (a GovernedProcess: its ``act``, ``approve``,
    ``_step`` and saga are the ones every process uses)."""

    def __init__(
        self, process: GovernedProcess, step: AgentStep, principal: ToolPrincipal, carry: Any
    ) -> None:
        self.process = process
        self.step = step
        self.principal = principal
        carry = carry or {}
        ref = carry.get("conversation")
        self.conversation: PayloadRef | None = (
            PayloadRef.model_validate(ref) if ref is not None else None
        )
        self.pending = [ToolReply.model_validate(r) for r in carry.get("pending", [])]
        self.history = ToolHistory.model_validate(carry.get("history", {}))
        self.turns: int = carry.get("turns", 0)
        self.tokens: int = carry.get("tokens", 0)
        self.cost_usd: float = carry.get("cost_usd", 0.0)
        self.continued: int = carry.get("continued", 0)
        self.compensations: dict[str, str] = carry.get("compensations", {})
        #: signatures (tool + arguments digest) of the latest calls, and the repeats refused
        self.recent: list[str] = list(carry.get("recent", []))
        self.repeats: int = carry.get("repeats", 0)
        #: compensations registered so far, as data (re-registered after continue-as-new)
        self.undo_log: list[dict[str, str]] = []
        for undo in carry.get("undo", []):
            self._register_undo(undo["tool"], undo["of_tool"], undo["call_key"])
        self.stage = "starting"
        self.max_history_events = step.limits.continue_after_events

    # -- the loop ----------------------------------------------------------------------------

    @classmethod
    def acting_for(
        cls, process: GovernedProcess, step: AgentStep, *, tenant: str | None = None
    ) -> AgentLoop:
        """A fresh loop of ``step`` acting for ``process``'s run: the tool calls' principal is
        the process, its run's tenant (or ``tenant``), the agent and the run's requester."""
        principal = ToolPrincipal(
            process=process.gate.process,
            tenant=process.inp.tenant if tenant is None else tenant,
            agent=step.name,
            requested_by=process.inp.requested_by,
        )
        return cls(process, step, principal, None)

    async def carry_out(self, task: dict[str, Any], *, min_tier: str = "cheap") -> dict[str, Any]:
        """The step's final answer, with the run's budget as it stands, for a step run inside a
        process that never continues as new for it (the process's own run is the step's)."""
        process = self.process
        answer = await self.run(task, process._budget or process.inp.budget, min_tier=min_tier)
        assert answer is not None  # the step never continues as new (continue_after_events)
        return answer

    def facts(self) -> dict[str, int]:
        """What the loop did, for the audit trail: model turns, tool calls, refused calls."""
        return {
            "turns": self.turns,
            "tool_calls": self.history.total_calls,
            "denials": self.history.denials,
        }

    async def run(
        self, task: dict[str, Any], budget: Budget, *, min_tier: str = "cheap"
    ) -> dict[str, Any] | None:
        """The step's final answer; None when the run should continue as new first.
        ``min_tier``: the lowest model tier asked (a process that escalated says "strong")."""
        limits = self.step.limits
        while True:
            if self.turns >= limits.max_turns:
                raise errors.failure(
                    errors.AGENT_LIMIT,
                    f"{self.step.name} used its {limits.max_turns} turns without a final answer",
                )
            if self.tokens >= limits.max_tokens:
                raise errors.failure(
                    errors.AGENT_LIMIT,
                    f"{self.step.name} used {self.tokens} tokens (limit {limits.max_tokens})",
                )
            if self.turns > 0 and self._history_large():
                return None
            self.turns += 1
            self.process.stage = f"{self.step.name}: turn {self.turns}"
            turn: AgentTurn = await self.process._step(
                "agent",
                AgentTurnActivities.agent_turn,
                AgentTurnInput(
                    agent=self.step.name,
                    task_class=self.step.task_class,
                    tenant=self.principal.tenant,
                    min_tier="strong" if min_tier == "strong" else "cheap",
                    process=self.principal.process,
                    conversation=_bare(self.conversation),
                    appended=[
                        p.model_copy(update={"ref": _bare(p.ref)}) if p.ref else p
                        for p in self.pending
                    ],
                    tools=list(self.step.tools),
                    output=self.step.answer or self.step.name,
                    turn=self.turns,
                    instructions=self.step.instructions if self.step.answer else None,
                    task=task if self.conversation is None else None,
                    budget=budget,
                ),
                f"agent {self.step.name}: turn {self.turns}",
            )
            self.conversation = turn.conversation
            self.compensations = turn.compensations
            self.tokens += turn.usage.tokens
            self.cost_usd = round(self.cost_usd + turn.usage.cost_usd, 8)
            self.pending = []
            if turn.final is not None:
                return turn.final
            if turn.refused is not None:
                self.pending = [ToolReply(ref=turn.refused)]
                continue
            made = self.history.total_calls + self.history.denials
            if made + len(turn.tool_calls) > limits.max_tool_calls:
                raise errors.failure(
                    errors.AGENT_LIMIT,
                    f"{self.step.name} asked for {len(turn.tool_calls)} more tool calls after "
                    f"{made} (limit {limits.max_tool_calls})",
                )
            # calls of one turn run at once; each one's policy sees the earlier ones of the
            # turn as made (so parallel calls cannot pass a count limit together)
            seen = self.history
            ahead: list[ToolHistory] = []
            for call in turn.tool_calls:
                ahead.append(seen)
                seen = seen.allowed(call.name, _amount(call))
            self.pending = list(
                await asyncio.gather(
                    *(self._call(c, h) for c, h in zip(turn.tool_calls, ahead, strict=True))
                )
            )

    def _history_large(self) -> bool:
        info = workflow.info()
        if self.process.gate.pending():
            return False
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.max_history_events
        )

    def usage(self, min_tier: str = "cheap") -> RoutedUsage:
        """What the loop's turns cost so far, as a routed step reports it (model ``agent``)."""
        return RoutedUsage(
            task_class=self.step.task_class,
            model="agent",
            tier="strong" if min_tier == "strong" else "cheap",
            tokens=self.tokens,
            cost_usd=self.cost_usd,
        )

    def carry(self) -> dict[str, Any]:
        """The loop's state for the run that continues this one."""
        return {
            "conversation": self.conversation.model_dump() if self.conversation else None,
            "pending": [p.model_dump(mode="json") for p in self.pending],
            "history": self.history.model_dump(mode="json"),
            "turns": self.turns,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "continued": self.continued + 1,
            "compensations": self.compensations,
            "undo": self.undo_log,
            "recent": self.recent,
            "repeats": self.repeats,
        }

    # -- one tool call -----------------------------------------------------------------------

    async def _call(self, call: ToolCallRequest, history: ToolHistory) -> ToolReply:
        if call.name not in self.step.tools:
            self.history = self.history.refused(call.name)
            self.process.audit.record(
                f"agent:{self.step.name}",
                "tool.refused",
                detail={"tool": call.name, "call_id": call.call_id},
                rationale="the agent step does not declare this tool",
            )
            return ToolReply(
                call_id=call.call_id,
                text=f"'{call.name}' is not one of your tools ({', '.join(self.step.tools)})",
            )
        repeated = self._repeated(call)
        if repeated is not None:
            return repeated
        arguments = call.arguments
        grant_: ApprovalGrant | None = None
        excluded = [self.principal.requested_by]
        for _round in range(MAX_EDIT_ROUNDS + 1):
            try:
                outcome = await self._act(call, arguments, history, grant_)
            except ApplicationError as err:
                if err.type != errors.POLICY_DENIED:
                    raise
                self.history = self.history.refused(call.name)
                return ToolReply(call_id=call.call_id, text=err.message)
            if outcome is not None:
                if outcome.decision.verdict == "deny":  # invalid arguments: the model is told
                    self.history = self.history.refused(call.name)
                elif outcome.ran:
                    if arguments == call.arguments:  # made as asked: a repeat is not made
                        signature = _signature(call.name, arguments)
                        self.recent = [*self.recent, signature][-REPEAT_WINDOW:]
                    amount = _amount(call.model_copy(update={"arguments": arguments}))
                    self.history = self.history.allowed(call.name, amount)
                    self.history = self.history.read(call.name, outcome.data)
                return ToolReply(call_id=call.call_id, ref=outcome.message)
            decision = self.process.held.pop(call.call_id)
            payload = {"tool": call.name, "arguments": arguments}
            approval = await self.process.approve(
                ApprovalRound(
                    action=f"tool:{call.name}",
                    payload=payload,
                    summary=f"{self.step.name} wants to call {call.name}: "
                    f"{'; '.join(decision.reasons)}",
                    obligations=decision.obligations,
                    policy_reasons=decision.reasons,
                    action_payload={**payload, "agent": self.step.name},
                    excluded=excluded,
                    settles=frozenset({"approved", "amended", "rejected"}),
                    waiting=f"waiting for approval of {call.name}",
                    restore_stage=True,
                )
            )
            if approval.outcome == "approved":
                grant_ = grant(approval)
                continue
            if approval.outcome == "rejected":
                self.history = self.history.refused(call.name)
                return ToolReply(
                    call_id=call.call_id,
                    text=f"{approval.decided_by} rejected this call: {approval.rationale}",
                )
            # amended: the approver's arguments, validated and checked by policy again
            assert approval.arguments is not None
            arguments = approval.arguments
            grant_ = None
            if approval.decided_by:
                excluded = [*excluded, approval.decided_by]
        self.history = self.history.refused(call.name)
        return ToolReply(
            call_id=call.call_id,
            text=f"no approval after {MAX_EDIT_ROUNDS} rounds of edited arguments",
        )

    def _repeated(self, call: ToolCallRequest) -> ToolReply | None:
        """The reply to a call that repeats one of the last calls made as the model asked
        (same tool, same arguments; not made again), else None. Fails the run after
        MAX_REPEATED_CALLS repeats: a model that keeps asking for the same thing is stuck, and
        each turn costs. A call that was denied, rejected or edited may be asked again."""
        if _signature(call.name, call.arguments) not in self.recent or not workflow.patched(
            REPEAT_GUARD_PATCH
        ):
            return None
        self.repeats += 1
        self.process.audit.record(
            f"agent:{self.step.name}",
            "tool.repeated",
            detail={"tool": call.name, "call_id": call.call_id, "repeats": self.repeats},
            rationale="the same tool with the same arguments was called just before",
        )
        if self.repeats >= MAX_REPEATED_CALLS:
            raise errors.failure(
                errors.AGENT_LIMIT,
                f"{self.step.name} asked {self.repeats} times for a call it had already made "
                f"(last: {call.name}); stopping a loop that does not move",
            )
        return ToolReply(
            call_id=call.call_id,
            text=f"You already called {call.name} with these arguments; its result is above. "
            "Do not repeat a call: use that result, call another tool, or give your final "
            "answer.",
        )

    async def _act(
        self,
        call: ToolCallRequest,
        arguments: dict[str, Any],
        history: ToolHistory,
        grant_: ApprovalGrant | None,
    ) -> ToolCallOutcome | None:
        wid = workflow.info().workflow_id
        key = (
            f"{wid}/tool/{call.call_id}/{digest({'tool': call.name, 'arguments': arguments})[:16]}"
        )
        undo: Compensation | None = None
        compensation = self.compensations.get(call.name)
        if compensation is not None:
            undo = self._undo(compensation, call.name, key)
        return await self.process.act(
            GovernedStep(
                what=f"the call of {call.name}",
                activity=ToolActivities.call_tool,
                arg=ToolCallInput(
                    tool=call.name,
                    arguments=arguments,
                    call_id=call.call_id,
                    idempotency_key=key,
                    principal=self.principal,
                    history=history,
                    approval=grant_,
                ),
                summary=f"tool {call.name} ({self.step.name}"
                f"{', approved' if grant_ is not None else ''})",
                key=key,
                subject=call.call_id,
                undo=undo,
                grant=grant_,
            )
        )

    def _undo(self, tool: str, of_tool: str, key: str) -> Compensation:
        if key not in {u["call_key"] for u in self.undo_log}:
            self.undo_log.append({"tool": tool, "of_tool": of_tool, "call_key": key})
        return Compensation(
            description=f"{tool} of {of_tool} ({key.rsplit('/', 2)[-2]})",
            activity=ToolActivities.undo_tool,
            arg=UndoToolInput(tool=tool, of_tool=of_tool, call_key=key, principal=self.principal),
            summary=f"compensation: {tool} of {of_tool}",
        )

    def _register_undo(self, tool: str, of_tool: str, key: str) -> None:
        """A compensation registered by the run this one continues (its action ran there)."""
        self.process.compensate_with(self._undo(tool, of_tool, key), key)


async def act_as_agent(
    process: GovernedProcess,
    step: AgentStep,
    task: dict[str, Any],
    *,
    tenant: str,
    min_tier: str = "cheap",
) -> tuple[dict[str, Any], AgentLoop]:
    """One agent step as a step of ``process`` (its requester is the principal's, its budget
    the run's): the final answer and the loop (turns, tokens, cost, the calls it made). The
    step never continues as new in the middle of a process (its ``continue_after_events``)."""
    principal = ToolPrincipal(
        process=process.gate.process,
        tenant=tenant,
        agent=step.name,
        requested_by=process.inp.requested_by,
    )
    loop = AgentLoop(process, step, principal, None)
    answer = await loop.run(task, process._budget or process.inp.budget, min_tier=min_tier)
    assert answer is not None  # continue_after_events keeps the step in this run
    return answer, loop


@dataclass(frozen=True)
class ToolCallDone:
    """How one governed tool call of :class:`ToolCaller` ended.

    ``reply`` is what a model would read next: the stored tool message (``reply.ref``, in the
    payload store) when the tool ran or policy refused it, else a short note (``reply.text``:
    a refusal, an approver's rejection). ``outcome`` is ``call_tool``'s outcome when the tool
    ran: ``is_error`` and ``data`` (a short structured result, e.g. an MCP tool's
    ``structuredContent``, and ``injection_suspected`` when the result was flagged)."""

    reply: ToolReply
    outcome: ToolCallOutcome | None = None

    @property
    def ran(self) -> bool:
        return self.outcome is not None and self.outcome.ran


class ToolCaller(AgentLoop):
    """Governed tool calls for a process without an agent loop (e.g. one MCP call as a step of
    a process): each call is the agent loop's own per-call code, so it is a
    :class:`~workflows.governed.GovernedStep` run by ``Governance.act`` through ``call_tool``
    (kill switch, policy in the tool's own transaction, idempotency key, audit, compensation)
    and a held call is an :class:`ApprovalRound` bound to the digest of tool name + arguments.

    One caller per run keeps the run's :class:`ToolHistory` (counts, refusals, results flagged
    as a prompt injection), so policy sees every earlier call. ``principal.agent`` is the role
    policy checks; ``tools`` are the only tools it may call. No model turn is ever run."""

    def __init__(
        self,
        process: GovernedProcess,
        principal: ToolPrincipal,
        tools: tuple[str, ...],
        *,
        compensations: dict[str, str] | None = None,
        carry: Any = None,
    ) -> None:
        step = AgentStep(name=principal.agent, instructions="", tools=tools, output=ToolResult)
        super().__init__(process, step, principal, carry)
        self.compensations = {**self.compensations, **(compensations or {})}
        #: calls made so far (a continued run goes on counting: call ids stay unique)
        self._calls = self.history.total_calls + self.history.denials
        self._outcomes: dict[str, ToolCallOutcome] = {}

    async def call(
        self, tool: str, arguments: dict[str, Any], *, call_id: str | None = None
    ) -> ToolCallDone:
        """Call ``tool`` once, governed; the run's history grows by this call."""
        self._calls += 1
        call_id = call_id or f"call-{self._calls}"
        reply = await self._call(
            ToolCallRequest(call_id=call_id, name=tool, arguments=arguments), self.history
        )
        return ToolCallDone(reply=reply, outcome=self._outcomes.pop(call_id, None))

    def _repeated(self, call: ToolCallRequest) -> ToolReply | None:
        """A process asks for its calls itself: one that repeats a call is made again."""
        return None

    async def _act(
        self,
        call: ToolCallRequest,
        arguments: dict[str, Any],
        history: ToolHistory,
        grant_: ApprovalGrant | None,
    ) -> ToolCallOutcome | None:
        outcome = await super()._act(call, arguments, history, grant_)
        if outcome is not None and outcome.ran:
            self._outcomes[call.call_id] = outcome
        return outcome


def _signature(tool: str, arguments: dict[str, Any]) -> str:
    return digest({"tool": tool, "arguments": arguments})[:16]


def _bare(ref: PayloadRef | None) -> PayloadRef | None:
    """A reference without its preview (the activity needs the digest; the preview is for
    people, and it is in the history already where the reference was made)."""
    return ref.model_copy(update={"preview": ""}) if ref is not None else None


def _amount(call: ToolCallRequest) -> float | None:
    for name in ("amount_usd", "amount"):
        value = call.arguments.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@workflow.defn(name="AgentRun")
class AgentRunWorkflow(GovernedProcess):
    """One agent step as a governed process (``agent_run``)."""

    @workflow.init
    def __init__(self, inp: AgentRunInput) -> None:
        self.govern(inp, AGENT_RUN_PROCESS)
        step = AGENT_STEPS.get(inp.agent)
        if step is None:
            raise errors.failure(
                "UnknownAgentStep",
                f"agent: unknown agent step {inp.agent!r}; known: {', '.join(sorted(AGENT_STEPS))}",
            )
        principal = ToolPrincipal(
            process=AGENT_RUN_PROCESS,
            tenant=inp.tenant,
            agent=step.name,
            requested_by=inp.requested_by,
        )
        self.loop = AgentLoop(self, step, principal, inp.carry)
        if inp.max_history_events is not None:
            self.loop.max_history_events = inp.max_history_events
        spent = self.loop.cost_usd
        if inp.budget_usd is not None and inp.carry is not None:
            # what the runs before this one spent counts against the run's budget
            self._budget = Budget(run_usd=max(round(inp.budget_usd - spent, 8), 0.0))

    @workflow.run
    async def run(self, inp: AgentRunInput) -> AgentRunResult:
        if inp.carry is None:
            self.begin(
                "agent.started",
                {"agent": inp.agent, "run_key": inp.run_key, "task_digest": digest(inp.task)},
                tenant=inp.tenant,
            )
        return await self._undoing_on_failure(
            self._act(inp), event="agent.run", what="agent run", failed_event="agent.failed"
        )

    async def _act(self, inp: AgentRunInput) -> AgentRunResult:
        output = await self.loop.run(inp.task, self._budget or inp.budget)
        if output is None:  # the history is large: continue as new, state carried
            await self.audit.flush()
            workflow.continue_as_new(inp.model_copy(update={"carry": self.loop.carry()}))
        loop = self.loop
        assert loop.conversation is not None and output is not None
        await self.finish(
            "agent.finished",
            {
                "agent": inp.agent,
                "turns": loop.turns,
                "tool_calls": loop.history.total_calls,
                "denials": loop.history.denials,
                "tokens": loop.tokens,
                "cost_usd": loop.cost_usd,
                "output_digest": digest(output),
                "conversation": loop.conversation.digest,
            },
        )
        return AgentRunResult(
            run_key=inp.run_key,
            agent=inp.agent,
            output=output,
            turns=loop.turns,
            tool_calls=loop.history.total_calls,
            denials=loop.history.denials,
            continued=loop.continued,
            tokens=loop.tokens,
            cost_usd=loop.cost_usd,
            conversation=loop.conversation,
        )
