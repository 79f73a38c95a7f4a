"""What ``baton validate`` checks of an agent that acts (``type: agent`` with ``agent:`` an
object; workflows/dsl/acting.py runs it): its tools exist (the built-in ones, and MCP tools
``mcp__<server>__<tool>`` whose server the MCP configuration names, when one is given), its
answer is one of ANSWERS, its task is an object, and the process has a ``tenant`` input.

MCP servers list their tools when the worker starts: a tool of a configured server is checked
then; without a configuration, :func:`notes` says so instead of failing the definition.

Not used inside workflows (it reads the MCP configuration file).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from workflows.agent_steps import AGENT_STEPS, ANSWERS, answer_of
from workflows.dsl.model import TOOL_VERDICTS, AgentStep, AgentThatActs, ProcessDefinition
from workflows.dsl.names import nearest

MCP_PREFIX = "mcp__"
#: the MCP configuration (BATON_MCP_CONFIG) the checks read; None: none configured here
_MCP_CONFIG: ContextVar[Path | None] = ContextVar("baton_dsl_mcp_config", default=None)


@contextlib.contextmanager
def mcp_config(path: Path | None) -> Iterator[None]:
    """Check MCP tool names against the servers of this configuration file while inside."""
    token = _MCP_CONFIG.set(path)
    try:
        yield
    finally:
        _MCP_CONFIG.reset(token)


@functools.cache
def builtin_tool_names() -> tuple[str, ...]:
    from activities.tools import builtin_tools  # the tool declarations (no I/O at import)

    return tuple(sorted(t.name for t in builtin_tools()))


def mcp_servers() -> tuple[list[str] | None, str | None]:
    """The configured MCP servers' names (None: no configuration), or why they are unknown."""
    path = _MCP_CONFIG.get()
    if path is None:
        return None, None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        servers = raw.get("servers", []) if isinstance(raw, dict) else []
        return [str(s.get("name")) for s in servers if isinstance(s, dict)], None
    except (OSError, ValueError) as err:
        return [], f"the MCP configuration {path} cannot be read: {err}"


def check(checker: Any, info: Any) -> None:
    """Every problem of the agent step ``info.step`` (the validator's _Checker reports them)."""
    step: AgentStep = info.step
    spec = step.agent
    assert isinstance(spec, AgentThatActs)
    p, ap = info.path, (*info.path, "agent")
    if step.with_:
        checker.error(
            (*p, "with"), "an agent that acts takes its task as agent.input, not with:", key=None
        )
    checker.refuse_presets(
        step,
        p,
        lambda name: (
            f"{name} does not apply to an agent that acts (its turns and tool calls "
            "use their presets): bound it with agent.limits"
        ),
    )
    if "tenant" not in checker.inputs:
        checker.error(
            p,
            f"step {step.id!r}: an agent that acts needs the process input 'tenant' (string): "
            "tool policy and model budgets are per tenant",
            key="id",
        )
    base = AGENT_STEPS.get(spec.instructions)
    if spec.tools is None and base is None:
        checker.error(
            (*ap, "instructions"),
            "agent.tools: required unless agent.instructions names a declared agent step "
            f"({', '.join(sorted(AGENT_STEPS))})",
        )
    if spec.tools is not None:
        check_tools(checker, spec.tools, (*ap, "tools"))
    elif base is not None:  # the declared step's tools: their MCP servers must be configured
        check_tools(checker, list(base.tools), (*ap, "instructions"))
    if spec.output is not None and spec.output not in ANSWERS:
        checker.error(
            (*ap, "output"),
            f"agent.output: unknown answer {spec.output!r}{nearest(spec.output, list(ANSWERS))} "
            f"(answers: {', '.join(sorted(ANSWERS))})",
        )
    if base is not None and spec.output is None and spec.role not in (None, base.name):
        if answer_of(base.output) is None:
            checker.error(
                (*ap, "role"), f"agent.role: with a role of its own, {base.name} needs an output"
            )
    scope = checker.loop_vars(info.frames)
    checker.check_value(spec.input, (*ap, "input"), info.frames, scope, info, "object")


def check_tools(checker: Any, tools: list[str], path: tuple[Any, ...]) -> None:
    builtin = builtin_tool_names()
    servers, unreadable = mcp_servers()
    if unreadable is not None and any(t.startswith(MCP_PREFIX) for t in tools):
        checker.error(path, f"agent.tools: {unreadable}")
        servers = None
    seen: set[str] = set()
    for i, name in enumerate(tools):
        where = (*path, i)
        if name in seen:
            checker.error(where, f"agent.tools: {name!r} is listed twice")
        seen.add(name)
        if name in builtin:
            continue
        if name.startswith(MCP_PREFIX):
            parts = name[len(MCP_PREFIX) :].split("__")
            if len(parts) != 2 or not all(parts):
                checker.error(
                    where, f"agent.tools: {name!r} is not an MCP tool name mcp__<server>__<tool>"
                )
            elif servers is not None and parts[0] not in servers:
                checker.error(
                    where,
                    f"agent.tools: {name!r}: no MCP server {parts[0]!r} in the MCP configuration"
                    f"{nearest(parts[0], servers)} (servers: {', '.join(servers) or 'none'})",
                )
            continue
        checker.error(
            where,
            f"agent.tools: unknown tool {name!r}{nearest(name, builtin)} (built-in tools: "
            f"{', '.join(builtin)}; MCP tools are named mcp__<server>__<tool>)",
        )


def notes(definition: ProcessDefinition) -> list[str]:
    """What could not be checked here: MCP tools (their servers list them at worker start)."""
    servers, _ = mcp_servers()
    by_step: dict[str, list[str]] = {}
    for step_id, tool in _mcp_tools(definition.model_dump(by_alias=True)):
        by_step.setdefault(step_id, []).append(tool)
    out: list[str] = []
    for step_id, tools in by_step.items():
        if servers is None:
            out.append(
                f"note: step {step_id!r}: MCP tools {', '.join(tools)} are checked when the "
                "worker starts (no MCP configuration here: set BATON_MCP_CONFIG to check "
                "their servers)"
            )
        else:
            out.append(
                f"note: step {step_id!r}: MCP tools {', '.join(tools)}: their servers are "
                "configured; the tools themselves are checked when the worker starts"
            )
    return out


def _mcp_tools(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        agent = value.get("agent")
        if value.get("type") == "agent" and isinstance(agent, dict):
            tools = agent.get("tools")
            declared = AGENT_STEPS.get(str(agent.get("instructions")))
            if tools is None and declared is not None:
                tools = list(declared.tools)
            for tool in tools or []:
                if isinstance(tool, str) and tool.startswith(MCP_PREFIX):
                    yield str(value.get("id")), tool
        for v in value.values():
            yield from _mcp_tools(v)
    elif isinstance(value, list):
        for v in value:
            yield from _mcp_tools(v)


def output_type(spec: AgentThatActs) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The JSON Schema of the step's output (answer, calls with verdicts, counts)."""
    name = spec.output
    if name is None:
        base = AGENT_STEPS.get(spec.instructions)
        if base is None:
            name = "text"
        else:
            answer = TypeAdapter(base.output).json_schema()
            return output_schema(answer), answer.pop("$defs", {})
    if name not in ANSWERS:
        return None
    answer = TypeAdapter(ANSWERS[name].model).json_schema()
    defs = answer.pop("$defs", {})
    return output_schema(answer), defs


def output_schema(answer_schema: dict[str, Any]) -> dict[str, Any]:
    """The step's output: ``answer``, ``calls`` (each with its verdict) and the counts."""
    call = {
        "type": "object",
        "properties": {
            "call_id": {"type": "string"},
            "tool": {"type": "string"},
            "arguments": {"type": "object"},
            "verdict": {"type": "string", "enum": list(TOOL_VERDICTS)},
            "approved_by": {"type": "array", "items": {"type": "string"}},
            "told": {"type": "string"},
            "edited": {"type": "boolean"},
            "data": {"type": "object"},
        },
        "required": ["call_id", "tool", "arguments", "verdict"],
    }
    return {
        "type": "object",
        "properties": {
            "answer": answer_schema,
            "calls": {"type": "array", "items": call},
            "turns": {"type": "integer"},
            "tool_calls": {"type": "integer"},
            "denials": {"type": "integer"},
            "tokens": {"type": "integer"},
            "cost_usd": {"type": "number"},
        },
        "required": ["answer", "calls", "turns", "tool_calls", "denials", "tokens", "cost_usd"],
    }


__all__ = [
    "MCP_PREFIX",
    "builtin_tool_names",
    "check",
    "check_tools",
    "mcp_config",
    "mcp_servers",
    "notes",
    "output_schema",
    "output_type",
]
