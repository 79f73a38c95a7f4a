"""A recording HTTP proxy in front of an OpenAI-compatible server: what each request cost.

bench/real_model_bench.py puts it between Baton and llama.cpp's server to measure, per request:
the agent (the prompt's first line, ``agent: <name>``), the model asked, whether it is a repair
turn (the conversation already holds an answer of the model), the seconds it took, the HTTP
status and the tokens the server counted. It forwards bytes unchanged; it is not a fake.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGENT_LINE = re.compile(r"^agent: ([A-Za-z0-9_.-]+)", re.M)


@dataclass
class Exchange:
    agent: str
    model: str
    repair: bool
    #: digest of the first user message: a repair or an escalation asks the same question
    question: str
    seconds: float
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished_at: float = 0.0


def describe(body: dict[str, Any]) -> tuple[str, str, bool, str]:
    messages = body.get("messages") or []
    texts = [str(m.get("content") or "") for m in messages if isinstance(m, dict)]
    agent = next((m.group(1) for t in texts if (m := AGENT_LINE.search(t))), "?")
    repair = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
    first_user = next(
        (str(m.get("content")) for m in messages if isinstance(m, dict) and m["role"] == "user"),
        "",
    )
    question = hashlib.sha256(first_user.encode()).hexdigest()[:16]
    return agent, str(body.get("model") or ""), repair, question


class RecordingProxy:
    """``url`` forwards to ``upstream`` (a ``http://host:port/v1`` base URL)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else None
                target = proxy.upstream + self.path.removeprefix("/v1")
                request = urllib.request.Request(target, data=raw, method=method)
                for name in ("Content-Type", "Authorization"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(request, timeout=3600) as response:
                        status, payload = response.status, response.read()
                        kind = response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as err:
                    status, payload = err.code, err.read()
                    kind = "application/json"
                except OSError:
                    return  # the client went away (timeout): nothing to answer
                took = time.monotonic() - started
                if raw and self.path.endswith("/chat/completions"):
                    proxy._record(raw, payload, status, took)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting; the exchange is recorded anyway

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self._forward("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _record(self, raw: bytes, payload: bytes, status: int, took: float) -> None:
        try:
            body = json.loads(raw)
            agent, model, repair, question = describe(body)
        except (ValueError, KeyError, TypeError):
            agent, model, repair, question = "?", "?", False, ""
        usage: dict[str, Any] = {}
        try:
            usage = json.loads(payload).get("usage") or {}
        except (ValueError, AttributeError):
            pass
        with self.lock:
            self.exchanges.append(
                Exchange(
                    agent=agent,
                    model=model,
                    repair=repair,
                    question=question,
                    seconds=took,
                    status=status,
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    finished_at=time.time(),
                )
            )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
