"""A scripted fake of a hosted LLM endpoint, for failure tests.

``ScriptedModelServer`` answers like the local rule-based model server (it IS that server, it is
not a language model) and, on top, replays a script of faults a hosted OpenAI-compatible endpoint
produces in real life: rate limits with ``Retry-After``, 5xx, 4xx rejections, slow answers,
answers that are not JSON, and well-formed answers with content chosen by the test (e.g. an
adjusting entry on an account the policy forbids). It records every chat completion request so a
test can assert how many attempts Temporal made and what each one carried.

Usage::

    server.script(Fault.status(429, retry_after=1), Fault.status(503), match="agent: reconciler")
    ...  # run the workflow
    assert server.attempts("reconciler") == 3

Faults are consumed first in, first out, by requests whose raw body or one of whose message
texts contains ``match`` (``None`` matches any request); requests no fault matches are answered
by the rules.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from baton.devstack.model_server import (
    ModelRequestHandler,
    ModelServer,
    agent_name,
    error_body,
    message_text,
    parse_chat_request,
    tool_calls_completion,
)

FaultKind = Literal[
    "status", "malformed", "delay", "output", "reconciled", "disconnect", "tool_calls"
]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict",
    429: "rate_limit_exceeded",
}

#: What ``Fault.malformed()`` answers by default: chatty prose around a truncated JSON document.
MALFORMED_CONTENT = 'Sure! Here are the adjusting entries you asked for: {"entries": [{"entry_'


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour of the model endpoint. Build with the class methods."""

    kind: FaultKind
    status_code: int = 200
    retry_after: float | str | None = None
    body: Any = None
    seconds: float = 0.0
    content: str | None = None

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None, body: Any = None) -> Fault:
        """Answer HTTP ``code`` (OpenAI-style error body unless ``body`` is given)."""
        return cls("status", status_code=code, retry_after=retry_after, body=body)

    @classmethod
    def malformed(cls, content: str = MALFORMED_CONTENT) -> Fault:
        """Answer 200 with assistant content that is not valid JSON for the schema."""
        return cls("malformed", content=content)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep ``seconds``, then answer by the rules (longer than the client's timeout: a
        timeout)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def output(cls, obj: Any) -> Fault:
        """Answer 200 with exactly this JSON value as the assistant content."""
        return cls("output", content=json.dumps(obj))

    @classmethod
    def reconciled(cls, proposal: dict[str, Any], reason: str = "scripted: left as is") -> Fault:
        """A reconciler answer with exactly these ``entries`` that addresses every other item of
        the request's input under ``no_entry_needed`` (with ``reason``): a complete answer the
        answer check accepts, whatever the test period's unmatched items are. A source id of
        the entries that is not in the input (a test does not know its period's unmatched
        ids) is replaced by the next input item the entries do not cite yet."""
        return cls("reconciled", content=json.dumps(proposal), body=reason)

    @classmethod
    def tool_calls(cls, *calls: tuple[str, dict[str, Any]] | dict[str, Any]) -> Fault:
        """Answer a turn of an agent that acts with these tool calls, each ``(name, arguments)``
        or ``{"name", "arguments", "id"}`` (the ``final_answer`` call finishes the agent)."""
        items = [c if isinstance(c, dict) else {"name": c[0], "arguments": c[1]} for c in calls]
        return cls("tool_calls", content=json.dumps(items))

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without answering (the SDK sees a connection error)."""
        return cls("disconnect")


def searchable_text(raw: bytes) -> str:
    """What ``match`` is looked for in: the raw body plus each message's text, decoded.

    In the raw body the agent input is a JSON string inside JSON, so its quotes are escaped;
    adding the decoded texts lets ``match='"period":"2101-11"'`` work as a test author means it.
    """
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return text
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list):
        text += "\n" + "\n".join(message_text(m) for m in messages)
    return text


def from_task(body: dict[str, Any], calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``calls`` with each argument written ``"$task.<field>"`` replaced by that field of the
    agent's task (the turn's first user message), for values a test cannot know in advance
    (the customer onboarding's ``plan_id``), and ``"$cited"`` by the passage ids the tool
    results so far returned (``[KB-...#0] text`` lines)."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    results = "\n".join(message_text(m) for m in messages if m.get("role") == "tool")
    cited = sorted(set(re.findall(r"^\[([^\]\s]+)\]", results, re.M)))
    users = [m for m in messages if m.get("role") == "user"]
    try:
        task = json.loads(message_text(users[0])) if users else {}
    except json.JSONDecodeError:
        task = {}
    task = task if isinstance(task, dict) else {}
    for call in calls:
        args = call.get("arguments")
        if isinstance(args, dict):
            call["arguments"] = {k: _filled(v, task, cited) for k, v in args.items()}
    return calls


def _filled(value: Any, task: dict[str, Any], cited: list[str]) -> Any:
    if value == "$cited":
        return cited
    if isinstance(value, str) and value.startswith("$task."):
        return task.get(value[6:], value)
    return value


def complete_proposal(body: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """``fault``'s proposal plus ``no_entry_needed`` for every input item its entries skip."""
    proposal = json.loads(fault.content or "{}")
    _, payload = parse_chat_request(body)
    items = [str(b.get("line_id")) for b in payload.get("unmatched_bank", [])]
    items += [str(e.get("entry_id")) for e in payload.get("unmatched_ledger", [])]
    items += [str(i) for i in payload.get("duplicate_ledger_ids", [])]
    known = list(dict.fromkeys(items))
    entries = proposal.get("entries", [])
    cited = {s for e in entries for s in e.get("source_ids", []) if s in known}
    spare = iter([i for i in known if i not in cited])
    for e in entries:
        e["source_ids"] = [s if s in known else next(spare, s) for s in e.get("source_ids", [])]
    cited = {s for e in entries for s in e.get("source_ids", [])}
    waived = [{"source_id": i, "reason": str(fault.body)} for i in dict.fromkeys(items)]
    return {
        "entries": entries,
        "no_entry_needed": [w for w in waived if w["source_id"] not in cited],
    }


class ScriptedRequestHandler(ModelRequestHandler):
    def chat_completion(self, raw: bytes) -> None:
        server: ScriptedModelServer = self.owner
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = None
        fault = server.take_fault(raw, self.route)
        agent = agent_name(body)
        server.enter(agent)
        try:
            self._answer(server, raw, body, fault)
        finally:
            server.leave(agent)

    def _answer(
        self, server: ScriptedModelServer, raw: bytes, body: Any, fault: Fault | None
    ) -> None:
        server.record(
            {
                "path": self.route,
                "agent": agent_name(body),
                "body": body,
                "fault": fault,
                "raw": raw.decode("utf-8", errors="replace"),
                "at": time.monotonic(),
            }
        )
        if fault is not None:
            self.log_note = f"fault={fault.kind}"
        if fault is None or not isinstance(body, dict):
            super().chat_completion(raw)
        elif fault.kind == "status":
            self._send_status(fault)
        elif fault.kind in ("malformed", "output"):
            self.send_completion(body, fault.content or "")
        elif fault.kind == "tool_calls":
            calls = from_task(body, json.loads(fault.content or "[]"))
            self.send_json(200, tool_calls_completion(body, calls))
        elif fault.kind == "reconciled":
            self.send_completion(body, json.dumps(complete_proposal(body, fault)))
        elif fault.kind == "delay":
            # Wakes early when the server stops, so a stopped test never waits out a delay.
            server.stopping.wait(fault.seconds)
            super().chat_completion(raw)
        elif fault.kind == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_status(self, fault: Fault) -> None:
        code = fault.status_code
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.body is None:
            default = "server_error" if code >= 500 else "invalid_request_error"
            kind = _ERROR_TYPES.get(code, default)
            body: bytes = json.dumps(error_body(f"scripted fault: HTTP {code}", kind)).encode()
        elif isinstance(fault.body, bytes | str):
            body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        else:
            body = json.dumps(fault.body).encode()
        self.send_bytes(code, body, headers=headers)


class ScriptedModelServer(ModelServer):
    """The rule-based model server plus a FIFO fault script and a request log. Thread-safe."""

    handler_class = ScriptedRequestHandler

    def __init__(self, *, log_requests: bool = False) -> None:
        super().__init__(log_requests=log_requests)
        self._lock = threading.Lock()
        self._script: list[tuple[str | None, Fault]] = []
        self._requests: list[dict[str, Any]] = []
        self._in_flight: Counter[str | None] = Counter()
        self._max_in_flight: Counter[str | None] = Counter()

    def enter(self, agent: str | None) -> None:
        with self._lock:
            self._in_flight[agent] += 1
            self._max_in_flight[agent] = max(self._max_in_flight[agent], self._in_flight[agent])

    def leave(self, agent: str | None) -> None:
        with self._lock:
            self._in_flight[agent] -= 1

    def reset_concurrency(self) -> None:
        with self._lock:
            self._max_in_flight.clear()

    def max_concurrency(self, agent: str | None) -> int:
        """The most requests for ``agent`` the server was answering at the same moment."""
        with self._lock:
            return self._max_in_flight[agent]

    def script(self, *faults: Fault, match: str | None = None) -> None:
        """Queue ``faults`` for requests whose raw body contains ``match`` (None: any request)."""
        with self._lock:
            self._script.extend((match, f) for f in faults)

    def take_fault(self, raw: bytes, path: str = "") -> Fault | None:
        """The first queued fault this request matches, removed from the script. ``match`` is
        looked for in the request path too (``match="/backup/"`` faults one endpoint)."""
        text = f"{path}\n{searchable_text(raw)}"
        with self._lock:
            for i, (match, fault) in enumerate(self._script):
                if match is None or match in text:
                    del self._script[i]
                    return fault
        return None

    def record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat completion request so far, oldest first, as dicts with ``agent`` (name or
        None), ``body`` (parsed JSON or None), ``fault`` (the Fault applied or None), ``raw``
        (the body as text) and ``at`` (time.monotonic() when it arrived). Health checks and
        model listings are not recorded."""
        with self._lock:
            return list(self._requests)

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults still queued (a test can assert the script was used up)."""
        with self._lock:
            return [f for _, f in self._script]

    def attempts(self, agent: str | None = None, match: str | None = None) -> int:
        """How many chat requests reached the server, for ``agent`` and/or containing ``match``."""
        return sum(
            1
            for r in self.requests
            if (agent is None or r["agent"] == agent)
            and (match is None or match in searchable_text(r["raw"].encode()))
        )

    def turns(self, agent: str) -> list[list[dict[str, Any]]]:
        """The messages of each turn ``agent`` (an agent that acts) was asked, oldest first."""
        return [
            r["body"]["messages"]
            for r in self.requests
            if r["agent"] == agent and isinstance(r["body"], dict) and r["body"].get("tools")
        ]

    def reset(self) -> None:
        """Forget the script and the request log (the server is shared across a session)."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._max_in_flight.clear()
