"""Plumbing shared by the local dev servers: a JSON HTTP handler and a server run in a thread.

Owns: reading request bodies, writing JSON responses with a Content-Length (HTTP/1.1 keep-alive
clients such as httpx and aiohttp need one), one log line per request, and a server that starts
on a thread, reports its bound port, and on stop also closes kept-alive connections, so a
"restarted" server never keeps answering on a connection opened before the restart.

Must not: know anything about models or policies (model_server.py and opa_server.py do).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class JsonRequestHandler(BaseHTTPRequestHandler):
    """Base handler: helpers to answer JSON; subclasses implement ``do_GET``/``do_POST``/..."""

    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; without TCP_NODELAY, Nagle's algorithm and the client's
    # delayed ACK add ~40 ms to every response on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _ThreadedServer

    #: Extra words for this request's log line (e.g. the agent name); reset per request.
    log_note: str = ""

    @property
    def owner(self) -> Any:
        """The BackgroundHTTPServer this handler serves, for its configuration and state."""
        return self.server.owner

    @property
    def route(self) -> str:
        """The request path without query string."""
        return urlsplit(self.path).path

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), headers=headers)

    def send_empty(self, status: int = 204) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- logging: one line per request, only when the owner asks for it --------------------

    def parse_request(self) -> bool:
        # Called once the request line has arrived: the clock starts here, not while a
        # kept-alive connection sits idle waiting for the next request.
        self.log_note = ""
        self._started = time.monotonic()
        return super().parse_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.owner.log_requests:
            return
        elapsed_ms = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        note = f" {self.log_note}" if self.log_note else ""
        sys.stderr.write(
            f"{time.strftime('%H:%M:%S')} {self.command} {self.route} -> {code}"
            f"{note} ({elapsed_ms:.1f} ms)\n"
        )

    def log_message(self, format: str, *args: Any) -> None:
        # BaseHTTPRequestHandler logs protocol errors here; keep them only when logging is on.
        if self.owner.log_requests:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")


class _ThreadedServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of parallel activities would see
    # connection resets before a single request is read.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[JsonRequestHandler], owner: Any):
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) before the answer was written is routine here.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer


class BackgroundHTTPServer:
    """An HTTP server on a daemon thread. Subclasses set ``handler_class``."""

    handler_class: type[JsonRequestHandler] = JsonRequestHandler

    def __init__(self, *, log_requests: bool = False) -> None:
        self.log_requests = log_requests
        self.stopping = threading.Event()
        self._server: _ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve in the background; returns the bound port (``port=0``: a free one)."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running on port {self.port}")
        self.stopping.clear()
        self._server = _ThreadedServer((host, port), self.handler_class, self)
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and drop open connections; a no-op when not running."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()  # wakes handlers that are sleeping on purpose (scripted delays)
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_until_signalled(self, host: str, port: int, banner: str = "") -> None:
        """Run in the foreground until SIGINT/SIGTERM (the ``main()`` of each server).

        ``banner`` is printed to stderr once the port is bound, with ``{url}`` filled in.
        """
        import signal

        done = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start(host, port)
        if banner:
            print(banner.format(url=self.base_url), file=sys.stderr, flush=True)
        try:
            done.wait()
        finally:
            self.stop()


def server_arguments(prog: str, description: str, default_port: int) -> argparse.ArgumentParser:
    """The command line a dev server's ``main()`` starts from: ``--host`` (default loopback)
    and ``--port``, what ``serve_until_signalled`` binds; a server adds its own options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    return parser
