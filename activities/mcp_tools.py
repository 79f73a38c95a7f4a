"""MCP servers as governed tools: their configuration, a client, and the toolset that makes
their tools tools of the agent loop's registry.

What this module owns:

* **Configuration** (``BATON_MCP_CONFIG``, a JSON file; :func:`load_mcp_config`): each server
  has a name, a transport (``stdio``: command, args, cwd, env; ``http``: a streamable HTTP url
  and headers), a per-call timeout and the tools it holds that are read only. Credentials are
  referenced as ``${ENV_VAR}`` inside ``env`` values (stdio) or header values (http) and
  resolved from the WORKER's environment when the worker starts: a workflow, its history and
  the audit trail only ever name the server and the tool. A credential-like header or
  variable written out literally is refused, naming the field.
* **The client** (:class:`McpToolbox`): lists every server's tools when the worker starts
  (cached with their input JSON schemas) and calls one with a timeout. Each call opens its own
  session (a stdio server is a fresh process, killed afterwards), so a tool that hangs costs
  its timeout and nothing more. Failures come back as results the model can read: an
  ``isError`` result, an exception, a timeout, an unreachable server. Any credential a server
  echoes is scrubbed from results and error messages before they leave the worker.
* **The toolset** (:class:`McpToolset`): every server registered with the agent loop's
  :class:`~activities.tools.ToolRegistry`, its tools offered to models as
  ``mcp__<server>__<tool>`` and run by ``call_tool`` like any other tool (policy
  ``baton/base/mcp_tool``: catalogue, per-process allow-list, roles, limits, sensitive tools
  refused after untrusted content). This is the one path of an MCP call: an agent's tool call,
  and a process without an agent loop calling one tool through
  :class:`~workflows.agent_loop.ToolCaller`, are both the governed step ``call_tool`` runs
  (policy in the tool's own transaction, idempotency key, audit, compensation).

A result that reads as instructions to the agent (a prompt injection) gets an
``mcp.result_flagged`` audit row and ``injection_suspected`` in its data; the run's
``ToolHistory`` remembers it (``flagged_results``), so policy refuses sensitive tools for the
rest of the run.

Idempotency: MCP has no idempotency contract, so every tool is treated as side-effecting
unless the configuration lists it under ``read_only``. A call carries its key as
``_meta.idempotency_key`` (a server may honour it), and before a side-effecting call an
``mcp.call_started`` row is written (idempotent per activity): an attempt that finds its call
started (the worker died mid-call) does not call again but reports an unknown outcome to the
model. Tool failures are results, not activity failures, so Temporal retries only what broke
on the worker.

Must not: put a credential in any return value, exception or audit row; be imported by
workflow code other than through ``workflow.unsafe.imports_passed_through``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from activities.audit import AuditLedger, activity_event
from activities.tools import ToolContext, ToolRegistry, ToolSpec
from workflows.contracts import digest
from workflows.contracts.mcp import MCP_TOOL_POLICY, mcp_tool_name
from workflows.contracts.tools import INJECTION_FLAG, ToolResult
from workflows.errors import BatonError

__all__ = [
    "MAX_RESULT_CHARS",
    "McpCallResult",
    "McpConfig",
    "McpConfigError",
    "McpServerConfig",
    "McpTool",
    "McpToolbox",
    "McpToolset",
    "ResolvedServer",
    "SCRUBBED",
    "load_mcp_config",
    "model_tool_name",
    "scan_for_injection",
]

log = logging.getLogger("baton.mcp")

#: A tool result's text is cut here (the model reads it; history stays small, design 13).
MAX_RESULT_CHARS = 16_000
SCRUBBED = "[credential removed]"

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Header and variable names that carry a credential: their values must be ${ENV} references.
_SECRET_NAME = re.compile(r"authorization|token|secret|password|passwd|api[-_]?key|cookie", re.I)


class McpConfigError(BatonError, ValueError):
    """The MCP configuration cannot be used; the message names the field and what it needs."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class McpServerConfig(_Config):
    """One MCP server, as written in the configuration file."""

    #: lower case, digits, '-' and single '_' (a double one separates server and tool in
    #: the name a model is offered: mcp__<server>__<tool>)
    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]*(_[a-z0-9-]+)*$", max_length=40, description="e.g. 'crm'"
    )
    transport: Literal["stdio", "http"]
    #: stdio: the program to start and how
    command: str | None = None
    args: list[str] = []
    cwd: str | None = None
    env: dict[str, str] = {}
    #: http: the streamable HTTP endpoint and the headers every request carries
    url: str | None = None
    headers: dict[str, str] = {}
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: how long connecting may take (a stdio server starting its program, the HTTP handshake),
    #: on top of the call's own timeout, and listing the tools
    connect_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: tools with no side effects: safe to retry, and policy may treat them as reads
    read_only: list[str] = []

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("command is required for transport 'stdio' (the program to run)")
            if self.url or self.headers:
                raise ValueError("url and headers are for transport 'http', not 'stdio'")
        else:
            if not self.url or not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError(
                    "url is required for transport 'http': an http(s) URL of the streamable "
                    f"HTTP endpoint, e.g. http://127.0.0.1:8931/mcp (got {self.url!r})"
                )
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("command, args, cwd and env are for transport 'stdio', not 'http'")
        return self


class McpConfig(_Config):
    """The configuration file: ``{"servers": [...]}``."""

    servers: list[McpServerConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> McpConfig:
        names = [s.name for s in self.servers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"server names must be unique; named twice: {', '.join(twice)}")
        return self


def _field_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(file)"


def load_mcp_config(
    source: Path | Mapping[str, Any], environ: Mapping[str, str]
) -> list[ResolvedServer]:
    """Read and check the configuration, and resolve its credential references from
    ``environ`` (the worker's environment, passed in by worker.py). Every problem is one
    :class:`McpConfigError` naming the field (``servers[0].headers.Authorization``)."""
    where = str(source) if isinstance(source, Path) else "MCP configuration"
    if isinstance(source, Path):
        try:
            raw = json.loads(source.read_text())
        except FileNotFoundError:
            raise McpConfigError(f"{where}: no such file (BATON_MCP_CONFIG)") from None
        except json.JSONDecodeError as err:
            raise McpConfigError(f"{where}: not JSON ({err})") from None
    else:
        raw = dict(source)
    try:
        config = McpConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in err.errors())
        raise McpConfigError(f"{where}: {problems}") from None
    return [_resolve(where, i, server, environ) for i, server in enumerate(config.servers)]


def _resolve(
    where: str, index: int, server: McpServerConfig, environ: Mapping[str, str]
) -> ResolvedServer:
    secrets: set[str] = set()

    def resolve(kind: str, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in values.items():
            name = f"servers[{index}].{kind}.{key}"
            refs = _REF.findall(value)
            if _SECRET_NAME.search(key) and not refs:
                raise McpConfigError(
                    f"{where}: {name} looks like a credential written into the file; reference "
                    'an environment variable of the worker instead, e.g. "Bearer ${CRM_TOKEN}"'
                )
            for ref in refs:
                if not environ.get(ref):
                    raise McpConfigError(
                        f"{where}: {name} needs the environment variable {ref}, which is not "
                        f"set on this worker (MCP server '{server.name}')"
                    )
                secrets.add(environ[ref])
            out[key] = _REF.sub(lambda m: environ[m.group(1)], value)
        return out

    return ResolvedServer(
        config=server,
        env=resolve("env", server.env),
        headers=resolve("headers", server.headers),
        secrets=frozenset(s for s in secrets if len(s) >= 4),
    )


@dataclass(frozen=True)
class ResolvedServer:
    """A server with its credentials resolved: lives on the worker only, never printed."""

    config: McpServerConfig
    env: dict[str, str] = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    secrets: frozenset[str] = field(repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    def scrub(self, text: str) -> str:
        """``text`` with every credential of this server replaced."""
        for secret in self.secrets:
            text = text.replace(secret, SCRUBBED)
        return text


@dataclass(frozen=True)
class McpTool:
    """One tool a server listed: what the model is offered (name, description, JSON schema)."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool

    @property
    def qualified_name(self) -> str:
        return mcp_tool_name(self.server, self.name)


@dataclass(frozen=True)
class McpCallResult:
    """A call's result on the worker (already scrubbed of credentials)."""

    is_error: bool
    text: str
    structured: dict[str, Any] | None = None
    error_kind: Literal["tool_error", "timeout", "unavailable", "unknown_tool"] | None = None
    truncated: bool = False
    duration_ms: int = 0


class McpToolbox:
    """Every configured MCP server: tools listed at worker start, calls with a timeout."""

    def __init__(self, servers: list[ResolvedServer]) -> None:
        self.servers = {s.name: s for s in servers}
        self._tools: dict[str, dict[str, McpTool]] = {}

    async def start(self) -> list[McpTool]:
        """List every server's tools (the worker does this before it polls). A server that
        does not answer is logged and listed again at its first call."""
        for name in self.servers:
            try:
                await self.list_tools(name)
            except Exception as err:  # noqa: BLE001 - one server down must not stop the worker
                log.warning(
                    "MCP server %r did not list its tools: %s", name, self.describe(name, err)
                )
        return self.tools()

    def listed(self, server: str) -> list[McpTool] | None:
        """The server's tools as last listed; None when it has not listed them yet."""
        found = self._tools.get(server)
        return None if found is None else list(found.values())

    def tools(self) -> list[McpTool]:
        """The tools listed so far, server by server."""
        return [t for by_name in self._tools.values() for t in by_name.values()]

    async def list_tools(self, server: str) -> list[McpTool]:
        resolved = self.servers[server]
        config = resolved.config
        async with asyncio.timeout(config.connect_timeout_seconds + config.timeout_seconds):
            async with self._session(resolved) as session:
                listed, cursor = [], None
                while True:
                    page = await session.list_tools(cursor)
                    listed += page.tools
                    cursor = page.nextCursor
                    if not cursor:
                        break
        read_only = set(resolved.config.read_only)
        self._tools[server] = {
            t.name: McpTool(
                server=server,
                name=t.name,
                description=t.description or "",
                input_schema=dict(t.inputSchema),
                read_only=t.name in read_only,
            )
            for t in listed
        }
        log.info("MCP server %r lists %d tools", server, len(listed))
        return list(self._tools[server].values())

    async def tool(self, server: str, name: str) -> McpTool | None:
        """The tool, listing the server first if that did not work at start."""
        if server not in self.servers:
            return None
        if server not in self._tools:
            await self.list_tools(server)
        return self._tools[server].get(name)

    def is_read_only(self, server: str, name: str) -> bool:
        resolved = self.servers.get(server)
        return resolved is not None and name in resolved.config.read_only

    async def call(
        self, server: str, name: str, arguments: dict[str, Any], *, key: str | None = None
    ) -> McpCallResult:
        """Call a tool within the server's timeout. Never raises but for cancellation: every
        failure is an error result the model can read."""
        started = time.monotonic()

        def done(**fields: Any) -> McpCallResult:
            return McpCallResult(duration_ms=int((time.monotonic() - started) * 1000), **fields)

        resolved = self.servers.get(server)
        if resolved is None:
            return done(
                is_error=True,
                error_kind="unknown_tool",
                text=f"MCP server '{server}' is not configured on this worker",
            )
        limit = resolved.config.timeout_seconds
        connecting = False
        try:
            tool = await self.tool(server, name)
            if tool is None:
                known = ", ".join(sorted(self._tools.get(server, {}))) or "none"
                return done(
                    is_error=True,
                    error_kind="unknown_tool",
                    text=f"MCP server '{server}' has no tool '{name}' (it lists: {known})",
                )
            meta = {"idempotency_key": key} if key else None
            async with AsyncExitStack() as stack:
                connecting = True
                async with asyncio.timeout(resolved.config.connect_timeout_seconds):
                    session = await stack.enter_async_context(self._session(resolved))
                connecting = False
                async with asyncio.timeout(limit):
                    result = await session.call_tool(
                        name, arguments, read_timeout_seconds=timedelta(seconds=limit), meta=meta
                    )
        except Exception as err:  # noqa: BLE001 - the model reads it; the worker stays up
            # a timeout raised inside the session's task groups arrives wrapped in a group
            if isinstance(_leaf(err), TimeoutError):
                if connecting:
                    return done(
                        is_error=True,
                        error_kind="unavailable",
                        text=f"the MCP server '{server}' did not connect within "
                        f"{resolved.config.connect_timeout_seconds:g} s; "
                        f"{mcp_tool_name(server, name)} was not called",
                    )
                return done(
                    is_error=True,
                    error_kind="timeout",
                    text=f"the tool {mcp_tool_name(server, name)} did not answer within "
                    f"{limit:g} s and was stopped; it may be retried later or another way found",
                )
            text = self.describe(server, err)
            kind: Literal["timeout", "unavailable"] = (
                "timeout" if "timed out" in text.lower() else "unavailable"
            )
            return done(
                is_error=True,
                error_kind=kind,
                text=f"the tool {mcp_tool_name(server, name)} could not be called: {text}",
            )
        text, truncated = self._text(resolved, result.content)
        structured = result.structuredContent
        if structured is not None:
            structured = json.loads(resolved.scrub(json.dumps(structured)))
            if len(json.dumps(structured)) > MAX_RESULT_CHARS:
                structured, truncated = None, True
        return done(
            is_error=bool(result.isError),
            error_kind="tool_error" if result.isError else None,
            text=text,
            structured=structured,
            truncated=truncated,
        )

    @staticmethod
    def _text(resolved: ResolvedServer, content: list[Any]) -> tuple[str, bool]:
        parts = []
        for item in content:
            kind = getattr(item, "type", "")
            if kind == "text":
                parts.append(item.text)
            elif kind == "resource" and hasattr(item.resource, "text"):
                parts.append(item.resource.text)
            else:  # images, audio, links: named, not inlined
                parts.append(f"[{kind or 'content'} omitted]")
        text = resolved.scrub("\n".join(parts))
        if len(text) > MAX_RESULT_CHARS:
            return text[:MAX_RESULT_CHARS] + "\n[truncated]", True
        return text, False

    def describe(self, server: str, err: BaseException) -> str:
        """An exception as one line, without credentials (exception groups unwrapped)."""
        err = _leaf(err)
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        resolved = self.servers.get(server)
        return resolved.scrub(text) if resolved is not None else text

    def _session(self, resolved: ResolvedServer) -> Any:
        """An initialised ClientSession on its own connection (an async context manager)."""
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        config = resolved.config

        class _Open:
            async def __aenter__(self) -> Any:
                self.stack = AsyncExitStack()
                await self.stack.__aenter__()
                try:
                    if config.transport == "stdio":
                        assert config.command is not None
                        params = StdioServerParameters(
                            command=config.command,
                            args=config.args,
                            env=resolved.env or None,
                            cwd=config.cwd,
                        )
                        read, write = await self.stack.enter_async_context(stdio_client(params))
                    else:
                        assert config.url is not None
                        http = await self.stack.enter_async_context(
                            httpx.AsyncClient(
                                headers=resolved.headers,
                                timeout=httpx.Timeout(config.timeout_seconds),
                                follow_redirects=False,
                            )
                        )
                        read, write, _ = await self.stack.enter_async_context(
                            streamable_http_client(config.url, http_client=http)
                        )
                    session = await self.stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    return session
                except BaseException:
                    await self.stack.aclose()
                    raise

            async def __aexit__(self, *exc: Any) -> bool | None:
                return await self.stack.__aexit__(*exc)

        return _Open()


def _leaf(err: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


# ----------------------------------------------------------------------------------------------
# Prompt injection: a result that talks to the agent instead of answering it
# ----------------------------------------------------------------------------------------------

_INJECTION_PATTERNS = [
    (re.compile(r"ignore (all |any )?(the )?(previous|prior|above|earlier) instructions", re.I),
     "tells the agent to ignore its instructions"),
    (re.compile(r"disregard (all |any )?(the |your )?(previous|prior|system) ", re.I),
     "tells the agent to disregard its instructions"),
    (re.compile(r"\byou (must|should) (now )?(call|use|invoke|run)\b", re.I),
     "orders the agent to call a tool"),
    (re.compile(r"(^|\n)\s*(system|assistant)\s*:", re.I),
     "poses as a system or assistant message"),
    (re.compile(r"\b(tell|inform) (nobody|no one|no-one)\b|\bdo not (tell|mention)\b", re.I),
     "asks the agent to hide what it does"),
]  # fmt: skip


def scan_for_injection(text: str, tool_names: Iterable[str], called: str) -> list[str]:
    """Why ``text`` (a tool's result) looks like a prompt injection; empty when it does not.
    A result naming another tool of this worker counts only together with another sign, so a
    help text that mentions a tool is not flagged."""
    reasons = [reason for pattern, reason in _INJECTION_PATTERNS if pattern.search(text)]
    named = sorted(
        n for n in set(tool_names) if n != called and re.search(rf"\b{re.escape(n)}\b", text)
    )
    if named and reasons:
        reasons.append(f"names the tool(s) {', '.join(named)}")
    return reasons


# ----------------------------------------------------------------------------------------------
# The agent loop's registry (activities/tools.py): MCP tools run through ``call_tool`` like any
# other tool (validation, policy, idempotency record, payload store, audit, compensation path)
# ----------------------------------------------------------------------------------------------

_MODEL_NAME = re.compile(r"^[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*$")
#: The longest an MCP call may take through the agent loop (inside call_tool's 30 s).
MAX_TOOL_SECONDS = 25.0
#: Structured content larger than this stays out of the outcome the workflow carries.
MAX_DATA_CHARS = 2_000


def model_tool_name(server: str, tool: str) -> str:
    """The name a model is offered: ``mcp__<server>__<tool>`` (OpenAI function names allow
    only letters, digits, ``_`` and ``-``). Policy reads it as ``mcp:<server>/<tool>``."""
    return f"mcp__{server}__{tool}"


class McpToolset:
    """Every configured server as a toolset of the agent loop's :class:`ToolRegistry`: each
    listed tool becomes a :class:`ToolSpec` (its JSON schema, side effects unless the server's
    configuration lists it as read only, policy ``baton/base/mcp_tool``), and ``call_tool`` runs
    it through :meth:`McpToolbox.call`. A result that reads as a prompt injection is audited
    (``mcp.result_flagged``) and marked in the result's data."""

    def __init__(self, toolbox: McpToolbox, ledger: AuditLedger) -> None:
        self.toolbox = toolbox
        self.ledger = ledger

    def register(self, registry: ToolRegistry) -> None:
        for server in self.toolbox.servers:
            registry.register_toolset(
                f"mcp:{server}", functools.partial(self.specs, server), self.call
            )

    async def specs(self, server: str) -> list[ToolSpec]:
        listed = self.toolbox._tools.get(server)
        tools = (
            list(listed.values()) if listed is not None else await self.toolbox.list_tools(server)
        )
        config = self.toolbox.servers[server].config
        # the toolbox stops a call at the server's timeouts with a readable error; the
        # registry's own limit catches what that misses, and stays inside the activity's
        # start-to-close (the connector preset: 30 s) so a slow call is not retried as a timeout
        timeout = min(config.connect_timeout_seconds + config.timeout_seconds + 2, MAX_TOOL_SECONDS)
        specs = []
        for tool in tools:
            name = model_tool_name(server, tool.name)
            if not _MODEL_NAME.match(tool.name) or len(name) > 64:
                log.warning(
                    "MCP tool %r of %r: its name cannot be offered to a model", tool.name, server
                )
                continue
            specs.append(
                ToolSpec(
                    name=name,
                    description=f"[{server}] {tool.description}".strip(),
                    parameters=tool.input_schema,
                    side_effects=not tool.read_only,
                    policy=MCP_TOOL_POLICY,
                    timeout_seconds=timeout,
                    toolset=f"mcp:{server}",
                )
            )
        return specs

    async def call(self, ctx: ToolContext, name: str, arguments: dict[str, Any]) -> ToolResult:
        _, server, tool = name.split("__", 2)
        if not self.toolbox.is_read_only(server, tool):
            # call_tool keeps a call's outcome under its key once the call is over; a call that
            # started and never reported (the worker died mid-call) is not called again
            started = activity_event(
                "mcp/started",
                actor=f"mcp:{server}",
                action="mcp.call_started",
                detail={"tool": mcp_tool_name(server, tool), "key": ctx.idempotency_key},
                input_digest=digest(arguments),
            )
            written = await asyncio.to_thread(self.ledger.append, [started])
            if written.already_present:
                return ToolResult(
                    is_error=True,
                    text=f"an earlier attempt of {mcp_tool_name(server, tool)} started and did "
                    "not report back; it was not called again (it may have side effects): "
                    "check before retrying",
                    data={"error_kind": "unknown_outcome"},
                )
        result = await self.toolbox.call(server, tool, arguments, key=ctx.idempotency_key)
        names = [model_tool_name(t.server, t.name) for t in self.toolbox.tools()]
        names += [t.name for t in self.toolbox.tools()]
        reasons = scan_for_injection(result.text, names, tool)
        data = result.structured
        if data is not None and len(json.dumps(data)) > MAX_DATA_CHARS:
            data = None
        if result.error_kind is not None:  # a process may branch on it (timeout, tool_error...)
            data = {**(data or {}), "error_kind": result.error_kind}
        if reasons:
            flagged = activity_event(
                "mcp/flagged",
                actor=f"mcp:{server}",
                action="mcp.result_flagged",
                detail={"tool": mcp_tool_name(server, tool), "reasons": reasons},
                output_digest=digest({"text": result.text, "structured": result.structured}),
                rationale="the tool's result reads as instructions to the agent (prompt injection)",
            )
            await asyncio.to_thread(self.ledger.append, [flagged])
            data = {**(data or {}), INJECTION_FLAG: True, "injection_reasons": reasons}
        return ToolResult(text=result.text, is_error=result.is_error, data=data)
