"""One model turn of an agent that acts (the loop itself runs in the workflow:
workflows/agent_loop.py).

``agent_turn`` loads the conversation from the payload store (activities/payload_store.py), adds
the messages the workflow hands it (tool results, approvers' answers), asks a model routed over
the catalogue (activities/router.py: cheap tier first, fallback between endpoints on 5xx and
timeouts, the run's and the tenant's budget before every request, the base policy on every
request, a charge and an audit row per answered request) and stores the assistant's message.

How a model is asked depends on its catalogue entry's ``tool_calling``:

* ``native``: the chat API's ``tools`` with ``tool_choice: auto``; the answer's ``tool_calls``
  are the calls, and the agent finishes by calling ``final_answer`` (its parameters are the
  step's output schema);
* ``structured``: no native tool calling. The tools are described in the system prompt and the
  model answers a JSON document ``{"calls": [{"name", "arguments"}], "final": ...}`` the way its
  ``structured_output`` mode says (json_schema, json_object_schema, tool_call or prompt).

A final answer is validated for shape (the output model) and meaning (the step's answer check,
activities/answer_checks.py); a refused one comes back to the model as the final_answer call's
tool message, and the next turn repairs it (the loop's turn limit bounds the repairs).

The conversation is stored as a chain of nodes ``{"head", "prev", "added", "count"}``, so a turn
writes only what it adds; the model sees the opening messages plus the last
``context_messages`` of the rest.

Must not: be imported by workflows; decide tool policy (activities/tools.py asks it per call).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import answer_checks
from activities.payload_store import PayloadStore
from activities.router import ModelSpec, Router
from activities.structured import (
    answer_text,
    extract_json,
    parse_answer,
    request_kwargs,
    wire_schema,
)
from activities.tools import ToolRegistry, tool_message
from workflows.agent_steps import AGENT_STEPS, ANSWERS, AgentStep, turn_step
from workflows.contracts.support import RoutedUsage
from workflows.contracts.tools import (
    FINAL_ANSWER_TOOL,
    AgentTurn,
    AgentTurnInput,
    PayloadRef,
    ToolCallRequest,
)


class _WireCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str  # a JSON object, as text (strict-mode friendly)


class _WireMove(BaseModel):
    """The structured-mode answer: the calls to make, or the final answer (JSON text)."""

    model_config = ConfigDict(extra="forbid")
    calls: list[_WireCall]
    final: str


class _TurnDigest(BaseModel):
    calls: list[str]
    final: bool


STRUCTURED_TOOLS_PROMPT = (
    "\n\nYou have no native tool calling here. Answer ONLY a JSON document "
    '{"calls": [{"name": <tool>, "arguments": <JSON object as a string>}], "final": ""} to call '
    'tools, or {"calls": [], "final": <your final answer as a JSON string>} to finish. Tools:\n'
)


def system_prompt(step: AgentStep) -> str:
    return f"agent: {step.name}\n{step.instructions}"


class AgentTurnActivities:
    """The ``agent_turn`` activity. Built once in worker.py."""

    def __init__(self, router: Router, payloads: PayloadStore, registry: ToolRegistry) -> None:
        self.router = router
        self.payloads = payloads
        self.registry = registry

    # -- the conversation -----------------------------------------------------------------

    def _extend(
        self, inp: AgentTurnInput, task: dict[str, Any] | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        """The conversation with the turn's new messages stored: (node, window, total).

        A node keeps the last ``context_messages`` digests (``tail``), so a turn reads its
        window in one query however long the conversation is."""
        keep = _step_of(inp).limits.context_messages
        prev: dict[str, Any] = {"head": [], "prev": None, "added": [], "count": 0, "tail": []}
        if inp.conversation is not None:
            prev = self.payloads.get(inp.conversation)
        notes: list[Any] = []
        for reply in inp.appended:
            if reply.ref is None:
                notes.append(
                    tool_message(reply.call_id, reply.text or "")
                    if reply.call_id
                    else {"role": "user", "content": reply.text or ""}
                )
        opening = (
            [{"role": "user", "content": json.dumps(task)}] if task and not prev["head"] else []
        )
        stored = iter(self.payloads.put_many([*notes, *opening]) if notes or opening else [])
        added = [
            reply.ref.digest if reply.ref is not None else next(stored).digest
            for reply in inp.appended
        ]
        head = [next(stored).digest for _ in opening] or prev["head"]
        node = {
            "head": head,
            "prev": inp.conversation.digest if inp.conversation is not None else None,
            "added": added,
            "count": prev["count"] + len(added),
            "tail": [*prev["tail"], *added][-keep:],
        }
        return node, self._window(node), node["count"]

    def _window(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        messages = self.payloads.get_many(list(node["head"]) + list(node["tail"]))
        head, rest = messages[: len(node["head"])], messages[len(node["head"]) :]
        while rest and rest[0].get("role") == "tool":  # its assistant message was cut off
            rest.pop(0)
        return head + rest

    # -- the activity ---------------------------------------------------------------------

    @activity.defn(name="agent_turn")
    async def agent_turn(self, inp: AgentTurnInput) -> AgentTurn:
        step = _step_of(inp)
        await self.registry.load()
        node, window, _ = await asyncio.to_thread(self._extend, inp, inp.task)
        tools = [
            {"type": "function", "function": s.model_dump()}
            for s in self.registry.schemas(inp.tools)
        ]
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": FINAL_ANSWER_TOOL,
                    "description": f"Finish: the {step.name}'s final answer.",
                    "parameters": wire_schema(step.output),
                },
            }
        )
        prompt = system_prompt(step)

        def send(spec: ModelSpec) -> Any:
            """The request the chosen model takes: native tools, or the calls as JSON."""
            if spec.tool_calling == "native":
                kwargs: dict[str, Any] = {
                    "model": spec.name,
                    "messages": [{"role": "system", "content": prompt}, *window],
                    "tools": tools,
                    "tool_choice": "auto",
                    "max_tokens": spec.max_tokens,
                    "timeout": spec.options(self.router.timeout_seconds).timeout_s,
                }
                if spec.accepts_seed:
                    kwargs["seed"] = spec.seed
                if spec.accepts_temperature:
                    kwargs["temperature"] = spec.temperature
            else:
                described = json.dumps([t["function"] for t in tools], separators=(",", ":"))
                kwargs = request_kwargs(
                    spec.options(self.router.timeout_seconds),
                    model=spec.name,
                    agent=step.name,
                    system=prompt + STRUCTURED_TOOLS_PROMPT + described,
                    content=json.dumps(_flatten(window)),
                    schema=wire_schema(_WireMove, pattern=spec.schema_pattern),
                )
            return _create(self.router.client(spec), kwargs)

        routed = await self.router.exchange(
            step.name, inp.task_class, prompt, json.dumps(window), inp, send
        )
        spec = routed.spec
        native = spec.tool_calling == "native"
        assistant, calls = (
            _native_answer(routed.response) if native else _structured_answer(routed.response, spec)
        )
        judged = _judge_turn(step, window, calls)
        out = _TurnDigest(calls=[c.name for c in judged.calls], final=judged.final is not None)
        settled: list[AgentTurn] = []
        # the assistant message, the conversation node and the ``model.routed`` audit row
        # commit together (one transaction per turn for what it adds)
        usage = await self.router.settle(
            step.name,
            routed,
            out,
            inp,
            also=lambda session: settled.append(
                self._settle(session, inp, step, node, assistant, judged)
            ),
        )
        turn = settled[0]
        compensations = {}
        for name in inp.tools:
            declared = self.registry.get(name)
            if declared.side_effects and declared.compensation:
                compensations[name] = declared.compensation
        return turn.model_copy(
            update={
                # each request's charge and audit row are in the database: the history keeps
                # the totals (one turn per tool call crosses it)
                "usage": usage.model_copy(update={"calls": []}),
                "mode": "native" if native else "structured",
                "compensations": compensations,
            }
        )

    def _settle(
        self,
        session: Session,
        inp: AgentTurnInput,
        step: AgentStep,
        node: dict[str, Any],
        assistant: dict[str, Any],
        judged: _Judged,
    ) -> AgentTurn:
        """Store the assistant message and the new conversation node (the caller's
        transaction)."""
        final_call, calls, final = judged.final_call, judged.calls, judged.final
        keep = step.limits.context_messages
        refused: PayloadRef | None = None
        assistant_ref = self.payloads.put_in(session, assistant)
        if judged.refused_text is not None and final_call is not None:
            refused = self.payloads.put_in(
                session, tool_message(final_call.call_id, judged.refused_text)
            )
        elif final_call is None and not calls:
            nudge = {
                "role": "user",
                "content": "Call one of your tools, or finish with final_answer.",
            }
            refused = self.payloads.put_in(session, nudge)
        stored = self.payloads.put_in(
            session,
            {
                **node,
                "added": [*node["added"], assistant_ref.digest],
                "count": node["count"] + 1,
                "tail": [*node["tail"], assistant_ref.digest][-keep:],
            },
        )
        return AgentTurn(
            conversation=stored,
            tool_calls=calls,
            final=final,
            refused=refused,
            usage=RoutedUsage(task_class=inp.task_class, model="", tier="cheap"),
        )


def _step_of(inp: AgentTurnInput) -> AgentStep:
    """The turn's agent step: a declared one, or one a process definition declared."""
    step = turn_step(inp.agent, inp.output, inp.instructions, tuple(inp.tools))
    if step is None:
        known = ANSWERS if inp.instructions is not None else AGENT_STEPS
        what = "answer" if inp.instructions is not None else "agent step"
        raise ApplicationError(
            f"unknown {what} {inp.output!r}; known: {', '.join(sorted(known))}",
            type="UnknownAgentStep",
            non_retryable=True,
        )
    return step


def _create(client: openai.AsyncOpenAI, kwargs: dict[str, Any]) -> Any:
    """``POST /chat/completions`` through the SDK's client as sent: the same request
    ``chat.completions.create`` makes, without its per-request walk over every message's type
    annotations (~30 ms for a 40-message conversation with tools on a busy 2-core machine,
    paid on every turn of a long agent run). The response is parsed into the SDK's
    ``ChatCompletion``; errors are the SDK's (APIStatusError, APITimeoutError ...)."""
    body = {k: v for k, v in kwargs.items() if k != "timeout"}
    return client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body=body,
        options={"timeout": kwargs.get("timeout")},
    )


@dataclass(frozen=True)
class _Judged:
    """A turn's calls after its final answer (if any) was judged."""

    calls: list[ToolCallRequest]
    final_call: ToolCallRequest | None
    final: dict[str, Any] | None
    refused_text: str | None


def _judge_turn(
    step: AgentStep, window: list[dict[str, Any]], calls: list[ToolCallRequest]
) -> _Judged:
    """A final answer is validated for shape and meaning; it ends the turn (other calls of it
    are not made); a refused one goes back to the model."""
    final_call = next((c for c in calls if c.name == FINAL_ANSWER_TOOL), None)
    if final_call is None:
        return _Judged(calls, None, None, None)
    problems = _judge(step, final_call.arguments, window)
    if problems:
        refused_text = (
            "your final answer was refused: " + "; ".join(problems) + ". Fix every "
            "problem and call final_answer again."
        )
        return _Judged([], final_call, None, refused_text)
    return _Judged([], final_call, final_call.arguments, None)


def _judge(step: AgentStep, arguments: dict[str, Any], window: list[dict[str, Any]]) -> list[str]:
    try:
        answer = step.output.model_validate(arguments)
    except ValidationError as err:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        ]
    if step.check is None:
        return []
    known = _passage_ids(window)
    check = getattr(answer_checks, step.check)(known)
    return list(check(answer))


def _passage_ids(window: list[dict[str, Any]]) -> list[str]:
    """passage ids the agent's tool results showed it (search_knowledge answers ``[id] text``)."""
    import re

    found: list[str] = []
    for m in window:
        if m.get("role") == "tool" and isinstance(m.get("content"), str):
            found += re.findall(r"^\[([^\]\s]+)\]", m["content"], re.M)
    return found


def _native_answer(response: Any) -> tuple[dict[str, Any], list[ToolCallRequest]]:
    if not getattr(response, "choices", None):
        return {"role": "assistant", "content": ""}, []
    message = response.choices[0].message
    calls: list[ToolCallRequest] = []
    raw_calls = []
    for call in getattr(message, "tool_calls", None) or []:
        fn = call.function
        try:
            arguments = json.loads(fn.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_unparsed": str(fn.arguments)[:1000]}
        if not isinstance(arguments, dict):
            arguments = {"_unparsed": arguments}
        calls.append(ToolCallRequest(call_id=call.id, name=fn.name, arguments=arguments))
        raw_calls.append(
            {
                "id": call.id,
                "type": "function",
                "function": {"name": fn.name, "arguments": fn.arguments},
            }
        )
    assistant: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
    if raw_calls:
        assistant["tool_calls"] = raw_calls
    return assistant, calls


def _lenient_move(text: str, mode: Any) -> _WireMove | None:
    """The tool-call document read as JSON that allows raw control characters (a literal
    newline) inside strings, which small models write (measured on Qwen2.5-Coder-0.5B through
    llama.cpp's json_schema mode); None when it is still not the document."""
    try:
        doc = json.loads(extract_json(text) if mode == "prompt" else text, strict=False)
        return _WireMove.model_validate(doc)
    except (ValueError, ValidationError):
        return None


def _structured_answer(response: Any, spec: Any) -> tuple[dict[str, Any], list[ToolCallRequest]]:
    """A structured-mode answer as if it were native: the same assistant message shape."""
    text = answer_text(response, spec.structured_output)
    try:
        move = parse_answer(text, _WireMove, spec.structured_output)
    except Exception as err:  # noqa: BLE001 - any unparseable answer is told to the model
        lenient = _lenient_move(text, spec.structured_output)
        if lenient is None:
            raise ApplicationError(
                f"the model's tool-call document is not valid: {err}", type="AgentOutputInvalid"
            ) from None
        move = lenient
    calls = []
    for c in move.calls:
        try:
            arguments = json.loads(c.arguments or "{}", strict=False)
        except json.JSONDecodeError:
            arguments = {"_unparsed": c.arguments[:1000]}
        calls.append(
            ToolCallRequest(
                call_id=f"call_{uuid.uuid4().hex[:16]}",
                name=c.name,
                arguments=arguments if isinstance(arguments, dict) else {"_unparsed": arguments},
            )
        )
    if move.final:
        try:
            final = json.loads(move.final, strict=False)
        except json.JSONDecodeError:
            final = {"_unparsed": move.final[:1000]}
        calls = [
            ToolCallRequest(
                call_id=f"call_{uuid.uuid4().hex[:16]}",
                name=FINAL_ANSWER_TOOL,
                arguments=final if isinstance(final, dict) else {},
            )
        ]
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in calls
        ],
    }
    return assistant, calls


def _flatten(window: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a model without tool calling: calls and results as plain text."""
    out = []
    for m in window:
        if m.get("role") == "tool":
            out.append({"result_of": m.get("tool_call_id"), "content": m.get("content")})
        elif m.get("tool_calls"):
            out.append({"you_called": [c["function"] for c in m["tool_calls"]]})
        else:
            out.append({"role": m.get("role"), "content": m.get("content")})
    return out


__all__ = ["AgentTurnActivities", "STRUCTURED_TOOLS_PROMPT", "system_prompt"]
