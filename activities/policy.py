"""Policy engines and the fail-closed policy decision (docs/architecture.md, "Policy gate").

This module owns:

* ``PolicyBundle`` - the policy directory as loaded: every ``*.rego`` module (``*_test.rego``
  kept apart) and every JSON document under ``<dir>/data/`` deep-merged, with a content
  ``revision``, reloaded when a file changes so that data edits apply without restarting workers.
* Three engines behind one ``PolicyEngine`` protocol: ``EmbeddedOpaEngine`` (OPA's own evaluator
  in-process, the default), ``RegorusEngine`` (a second, independent evaluator for cross-checks)
  and ``OpaRestEngine`` (a real OPA server, through ``opa-python-client``).
* ``decide()`` - turns whatever an engine answers into a ``PolicyDecision``, failing closed.
* ``run_rego_tests()`` - runs the Rego unit tests (``test_`` rules) for ``baton policy test`` and
  pytest, on either local evaluator.

No Temporal activity is defined here: the activity module builds one engine per worker with
``build_engine()`` and calls ``decide()`` per query.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ValidationError
from temporalio.exceptions import ApplicationError

from activities import tracing
from workflows import errors
from workflows.contracts import (
    REDACTION_KINDS,
    ApprovalRequirement,
    EscalationTier,
    Obligations,
    PolicyDecision,
    PolicyQuery,
)

DEFAULT_TIMEOUT_SECONDS = 5.0
#: Every decide() answer that did not come from the policy itself starts with one of these.
ENGINE_UNAVAILABLE = "policy engine unavailable"
#: ApplicationError.type of a step that could not get a policy decision (see unavailable_error).
POLICY_UNAVAILABLE_ERROR = errors.POLICY_UNAVAILABLE
UNDEFINED_DECISION = "policy returned no decision (undefined)"
#: Every deny caused by a failed evaluation (PolicyEvalError) starts with this.
EVALUATION_FAILED = "policy evaluation failed"
#: Revision reported when an engine failed before it could say which policies it ran.
UNKNOWN_REVISION = "unknown"

log = logging.getLogger(__name__)
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PACKAGE = re.compile(r"^package\s+([A-Za-z_][A-Za-z0-9_.]*)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)
_MAX_REASON_CHARS = 500
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class PolicyError(Exception):
    """Base of the errors raised by this module's engines."""


class PolicyUndefined(PolicyError):
    """The queried document is undefined: no rule produced a value for this input."""

    def __init__(self, path: str, revision: str) -> None:
        super().__init__(f"data.{path.strip('/').replace('/', '.')} is undefined")
        self.path = path
        self.revision = revision


class PolicyEvalError(PolicyError):
    """The engine evaluated the policy and the evaluation failed: a builtin error (every Baton
    path evaluates with strict builtin errors, see docs/policy-engine.md), conflicting values
    for a complete rule, a type error found at run time. Deterministic: asking again gives the
    same answer, so it is a deny naming the error, never "engine unavailable"."""

    def __init__(self, message: str, revision: str = "unknown") -> None:
        super().__init__(message)
        self.revision = revision


class PolicyLoadError(PolicyError):
    """The policy directory cannot be loaded or compiled (missing, bad JSON, bad Rego)."""


# ---------------------------------------------------------------------------------------------
# Bundle: the policy directory as loaded
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleSnapshot:
    """One consistent load of a policy directory."""

    revision: str
    #: Relative path -> Rego source of every policy module (tests excluded).
    modules: Mapping[str, str]
    #: Relative path -> Rego source of every ``*_test.rego`` module.
    tests: Mapping[str, str]
    #: All data documents deep-merged from the root (``{"baton": {...}}``).
    data: Mapping[str, Any]


class PolicyBundle:
    """A policy directory (``**/*.rego`` plus the JSON data documents under ``data/``), or an OPA
    bundle file (``.tar.gz``/``.tgz``: see ``_load_archive``), as loaded.

    Each data file holds its document from the root of ``data`` (for example
    ``{"baton": {"finance": {"limits": {...}}}}``); all of them are deep-merged, and two files
    setting the same leaf is a load error rather than a silent override.

    ``revision`` is the first 12 hex digits of a sha256 over the sorted (relative path, content)
    of the policy modules and data files: everything a decision depends on. Test modules do not
    change it, so the revision in the audit trail moves only when decisions can.

    ``current()`` re-checks the files' mtime and size at most once per ``reload_interval``
    seconds and reloads when anything changed, was added or was removed. A directory that no
    longer loads raises ``PolicyLoadError`` until it is fixed: fail closed, because serving the
    last good load could keep honouring, say, an approver who was just removed.
    """

    def __init__(
        self,
        policy_dir: str | os.PathLike[str],
        *,
        reload_interval: float = 1.0,
        extra_dirs: Sequence[str | os.PathLike[str]] = (),
    ):
        self.policy_dir = Path(policy_dir)
        #: policy directories of extensions (baton/extensions.py), loaded with this one
        self.extra_dirs = tuple(Path(d).resolve() for d in extra_dirs)
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._snapshot: BundleSnapshot | None = None
        self._error: PolicyLoadError | None = None

    @property
    def revision(self) -> str:
        return self.current().revision

    def current(self) -> BundleSnapshot:
        """The loaded bundle, reloaded first if files changed since the last check."""
        with self._lock:
            now = time.monotonic()
            if self._check_due(now):
                self._checked_at = now
                self._reload_if_changed()
            if self._error is not None:
                raise self._error
            assert self._snapshot is not None  # set whenever _error is None after a check
            return self._snapshot

    def settled_revision(self) -> str | None:
        """The loaded revision when no check of the files is due, without touching the files
        (safe on an event loop); None when a check is due, the bundle is broken or another
        thread is checking it right now (``current()`` then says what is loaded)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if (
                self._check_due(time.monotonic())
                or self._snapshot is None
                or self._error is not None
            ):
                return None
            return self._snapshot.revision
        finally:
            self._lock.release()

    def _check_due(self, now: float) -> bool:
        return self._checked_at is None or now - self._checked_at >= self.reload_interval

    @property
    def is_archive(self) -> bool:
        return self.policy_dir.name.endswith((".tar.gz", ".tgz"))

    def _reload_if_changed(self) -> None:
        if self.is_archive:
            self._reload_archive_if_changed()
            return
        try:
            files = self._files()
            # Stat before reading: a file edited while we read it changes its stat again, so
            # the next check reloads it instead of keeping a half-written version forever.
            signature = tuple(
                (rel, st.st_mtime_ns, st.st_size)
                for rel, st in ((rel, (self.policy_dir / rel).stat()) for rel in files)
            )
        except OSError as exc:  # a file vanished mid-scan, or the directory is gone
            self._signature, self._snapshot = None, None
            self._error = PolicyLoadError(f"cannot read policy directory {self.policy_dir}: {exc}")
            return
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._snapshot, self._error = self._load(files), None
        except PolicyLoadError as exc:
            self._snapshot, self._error = None, exc

    def _reload_archive_if_changed(self) -> None:
        try:
            st = self.policy_dir.stat()
        except OSError as exc:
            self._signature, self._snapshot = None, None
            self._error = PolicyLoadError(f"cannot read policy bundle {self.policy_dir}: {exc}")
            return
        signature = ((self.policy_dir.name, st.st_mtime_ns, st.st_size),)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._snapshot, self._error = _load_archive(self.policy_dir), None
        except PolicyLoadError as exc:
            self._snapshot, self._error = None, exc

    def _files(self) -> list[str]:
        found = self._files_of(self.policy_dir, "")
        for extra in self.extra_dirs:  # absolute paths: ``policy_dir / path`` is the path
            found += self._files_of(extra, extra.as_posix() + "/")
        return found

    @staticmethod
    def _files_of(top: Path, prefix: str) -> list[str]:
        if not top.is_dir():
            raise FileNotFoundError(f"{top} is not a directory")
        found: list[str] = []
        for root, dirs, names in os.walk(top):
            # Hidden files and directories are editor droppings (.#posting.rego, .git): skip.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = Path(root).relative_to(top)
            in_data = rel_root.parts[:1] == ("data",)
            for name in names:
                if name.startswith("."):
                    continue
                if name.endswith(".rego") or (in_data and name.endswith(".json")):
                    found.append(prefix + (rel_root / name).as_posix())
        return sorted(found)

    def _load(self, files: list[str]) -> BundleSnapshot:
        modules: dict[str, str] = {}
        tests: dict[str, str] = {}
        data: dict[str, Any] = {}
        data_origin: dict[tuple[str, ...], str] = {}
        digest = hashlib.sha256()
        for rel in files:
            raw = (self.policy_dir / rel).read_bytes()
            is_test = rel.endswith("_test.rego")
            if not is_test:
                # Length-prefixed so that no two different bundles hash the same bytes.
                digest.update(f"{rel}\0{len(raw)}\0".encode())
                digest.update(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyLoadError(f"{rel} is not UTF-8: {exc}") from None
            if rel.endswith(".json"):
                try:
                    document = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise PolicyLoadError(f"{rel} is not valid JSON: {exc}") from None
                if not isinstance(document, dict):
                    raise PolicyLoadError(
                        f"{rel} must hold a JSON object rooted at data, e.g. "
                        '{"baton": {...}}, not a ' + type(document).__name__
                    )
                _merge_data(data, document, (), rel, data_origin)
            elif is_test:
                tests[rel] = text
            else:
                modules[rel] = text
        if not modules:
            raise PolicyLoadError(f"no Rego policies found in {self.policy_dir}")
        _refuse_reserved(data, str(self.policy_dir))
        return BundleSnapshot(digest.hexdigest()[:12], modules, tests, data)


def _load_archive(path: Path) -> BundleSnapshot:
    """An OPA bundle: a gzipped tarball of ``*.rego`` modules, ``data.json`` documents (each
    merged at its directory's path: ``baton/finance/data.json`` is ``data.baton.finance``) and a
    ``.manifest`` (JSON) whose ``revision`` becomes the revision of every decision. Without one,
    the revision is the content digest, as for a directory. ``*_test.rego`` are kept apart as
    tests; other files are ignored, as OPA ignores them. A malformed bundle is a load error
    naming the entry: fail closed."""
    modules: dict[str, str] = {}
    tests: dict[str, str] = {}
    data: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    manifest: dict[str, Any] = {}
    digest = hashlib.sha256()
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
            for member in members:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                name = name.lstrip("/")
                if ".." in Path(name).parts:
                    raise PolicyLoadError(f"bundle {path.name}: entry {member.name!r} escapes it")
                handle = archive.extractfile(member)
                raw = handle.read() if handle is not None else b""
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PolicyLoadError(
                        f"bundle {path.name}: {name} is not UTF-8: {exc}"
                    ) from None
                if name == ".manifest":
                    manifest = _manifest(path, text)
                elif name.endswith(".rego"):
                    (tests if name.endswith("_test.rego") else modules)[name] = text
                elif Path(name).name == "data.json":
                    try:
                        document = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise PolicyLoadError(
                            f"bundle {path.name}: {name} is not valid JSON: {exc}"
                        ) from None
                    prefix = tuple(Path(name).parent.parts)
                    for key in reversed(prefix):
                        document = {key: document}
                    if not isinstance(document, dict):
                        raise PolicyLoadError(
                            f"bundle {path.name}: the root data.json must hold an object"
                        )
                    _merge_data(data, document, (), f"{path.name}:{name}", origin)
                else:
                    continue
                if not name.endswith("_test.rego"):
                    digest.update(f"{name}\0{len(raw)}\0".encode())
                    digest.update(raw)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise PolicyLoadError(f"policy bundle {path} is not a readable .tar.gz: {exc}") from None
    if not modules:
        raise PolicyLoadError(f"no Rego policies found in the bundle {path}")
    _refuse_reserved(data, str(path))
    revision = manifest.get("revision") or digest.hexdigest()[:12]
    return BundleSnapshot(str(revision), modules, tests, data)


def _refuse_reserved(data: Mapping[str, Any], where: str) -> None:
    if VERIFIED_DATA in data:
        raise PolicyLoadError(
            f"{where}: data.{VERIFIED_DATA} is reserved for the engine's verified copies of "
            "policy data; rename that document"
        )


def _manifest(path: Path, text: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(f"bundle {path.name}: .manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise PolicyLoadError(f"bundle {path.name}: .manifest must be a JSON object")
    revision = manifest.get("revision", "")
    if not isinstance(revision, str):
        raise PolicyLoadError(
            f"bundle {path.name}: .manifest revision must be a string, got {revision!r}"
        )
    return manifest


def build_bundle(
    policy_dir: str | os.PathLike[str], out: str | os.PathLike[str], revision: str | None = None
) -> str:
    """Write the policy directory as an OPA bundle (``.tar.gz``): its modules (tests included,
    as OPA bundles carry them), one root ``data.json`` with every data file merged, and a
    ``.manifest`` with ``revision`` (default: the directory's content revision) and
    ``roots`` (the top-level documents it defines). Returns the revision."""
    snapshot = PolicyBundle(policy_dir, reload_interval=0).current()
    revision = revision or snapshot.revision
    roots = sorted({p.split(".")[0] for p in policy_packages(snapshot)} | set(snapshot.data))
    entries: list[tuple[str, bytes]] = [
        (".manifest", json.dumps({"revision": revision, "roots": roots}, indent=2).encode()),
        ("data.json", json.dumps(snapshot.data, indent=2, sort_keys=True).encode()),
    ]
    for rel, source in sorted({**snapshot.modules, **snapshot.tests}.items()):
        entries.append((rel, source.encode()))
    target = Path(out)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, mode="w:gz") as archive:
        for name, raw in entries:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(raw))
    # Atomic: a worker reloading the bundle never reads a half-written archive.
    os.replace(partial, target)
    return revision


def _merge_data(
    into: dict[str, Any],
    document: Mapping[str, Any],
    prefix: tuple[str, ...],
    source: str,
    origin: dict[tuple[str, ...], str],
) -> None:
    """Deep-merge one data file into the data tree, refusing to overwrite another file's leaf."""
    for key, value in document.items():
        path = (*prefix, key)
        if key not in into:
            into[key] = _copy_json(value)
            origin[path] = source
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge_data(into[key], value, path, source, origin)
        else:
            raise PolicyLoadError(
                f"data conflict: data.{'.'.join(path)} is set by both "
                f"{origin.get(path, 'another file')} and {source}"
            )


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def rule_path(path: str) -> list[str]:
    """``"baton/finance/posting/decision"`` or ``"baton.finance.posting.decision"`` -> segments.

    Only plain identifiers are accepted: the path is spliced into a query string for regorus,
    so anything else could change what is evaluated.
    """
    segments = [s for s in re.split(r"[/.]", path.strip()) if s]
    if segments[:1] == ["data"]:
        segments = segments[1:]
    if not segments or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError(f"not a policy document path: {path!r} (expected e.g. 'baton/x/decision')")
    return segments


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


class PolicyEngine(Protocol):
    """Evaluates documents under ``data``. Implementations raise on failure, never guess."""

    name: str
    #: What a governed step does when this engine does not answer (BATON_POLICY_UNAVAILABLE):
    #: "deny" it, or "wait" for the engine, up to ``max_wait_seconds``. See unavailable_error().
    when_unavailable: str
    max_wait_seconds: float

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        """The value of ``data.<path>`` (``/`` or ``.`` separators) for ``input``, and the
        revision of the policies that produced it. Raises ``PolicyUndefined`` when undefined,
        any other exception when the engine failed."""
        ...


@runtime_checkable
class SyncPolicyEngine(PolicyEngine, Protocol):
    """An engine that can also evaluate on the caller's thread (the embedded ones)."""

    def evaluate_sync(self, path: str, input: dict[str, Any] | None) -> tuple[Any, str]: ...


#: Top-level data document where engines keep the data values that passed their policy's
#: shape checks at load (see _verified_data); reserved: no data file may define it.
VERIFIED_DATA = "baton_verified"


def _verified_data(engine: Any, snapshot: BundleSnapshot) -> dict[str, Any]:
    """Data checked once per bundle revision instead of on every decision.

    A policy may define ``data_checks[key] := value if <value is well-formed>`` for data whose
    shape it must check (finance/posting.rego's escalation chain, agent_call.rego's roles map
    and PII kinds). At load the engine evaluates every package's ``data_checks`` and keeps
    what passed under ``data.baton_verified.<key>``; the policy's check then starts with
    ``value == data.baton_verified.<key>`` (one comparison) and falls back to the full check
    for any other value (a test's ``with``, a server without the copy). Two packages naming the
    same key with different values verify neither.
    """
    verified: dict[str, Any] = {}
    conflicting: set[str] = set()
    for package in policy_packages(snapshot):
        if not any(
            "data_checks" in source and f"package {package}\n" in source
            for source in snapshot.modules.values()
        ):
            continue
        try:
            checks = engine.eval_document(package.replace("/", "."), None).get("data_checks")
        except Exception:  # a package that does not evaluate without input: nothing verified
            continue
        if not isinstance(checks, dict):
            continue
        for key, value in checks.items():
            if key in verified and verified[key] != value:
                conflicting.add(key)
            verified.setdefault(key, value)
    return {k: v for k, v in verified.items() if k not in conflicting}


def _build_opa(snapshot: BundleSnapshot, *, with_tests: bool = False) -> Any:
    from opa_bindings import OpaEngine, OpaError

    engine = OpaEngine()
    try:
        for rel, source in _sources(snapshot, with_tests):
            engine.add_policy(rel, source)
        engine.add_data(dict(snapshot.data))
        # Compile now, not on the first query: a policy error then surfaces as a load error.
        engine.eval_query("true")
        if verified := _verified_data(engine, snapshot):
            engine.add_data({VERIFIED_DATA: verified})
            engine.eval_query("true")
    except OpaError as exc:
        engine.close()
        raise PolicyLoadError(
            f"policy revision {snapshot.revision} does not compile: {exc}"
        ) from None
    return engine


def _eval_opa(engine: Any, segments: list[str], input: dict[str, Any] | None, revision: str) -> Any:
    from opa_bindings import OpaError, OpaUndefinedError

    try:
        return engine.eval_document(".".join(segments), input)
    except OpaUndefinedError:
        raise PolicyUndefined(".".join(segments), revision) from None
    except OpaError as exc:
        if exc.code == "eval_error":
            raise PolicyEvalError(" ".join(exc.message.split()), revision) from None
        raise


def _build_regorus(snapshot: BundleSnapshot, *, with_tests: bool = False) -> Any:
    import regorus

    engine = regorus.Engine()
    _align_regorus_builtins(engine)
    try:
        for rel, source in _sources(snapshot, with_tests):
            engine.add_policy(rel, source)
        engine.add_data_json(json.dumps(snapshot.data))
    except RuntimeError as exc:
        raise PolicyLoadError(
            f"policy revision {snapshot.revision} does not compile: {_regorus_message(exc)}"
        ) from None
    return engine


def _eval_regorus(
    engine: Any, segments: list[str], input: dict[str, Any] | None, revision: str
) -> Any:
    # A clone is sub-microsecond and keeps set_input from leaking into the next query.
    run = engine.clone()
    if input is not None:
        run.set_input_json(json.dumps(input))
    try:
        # The JSON form turns Rego sets into sorted arrays, as OPA does; eval_rule would return
        # Python sets, and None for both "undefined" and null.
        answer = json.loads(run.eval_query_as_json("data." + ".".join(segments)))
    except RuntimeError as exc:
        raise PolicyEvalError(f"regorus: {_regorus_message(exc)}", revision) from None
    rows = answer.get("result") or []
    if not rows or not rows[0].get("expressions"):
        raise PolicyUndefined(".".join(segments), revision)
    return rows[0]["expressions"][0]["value"]


def _align_regorus_builtins(engine: Any) -> None:
    """Give regorus OPA's answer where the two differ on a builtin Baton cares about.

    ``json.is_valid`` / ``yaml.is_valid`` of a non-string: OPA answers false, regorus raises a
    type error (a false disagreement in every cross-check). The replacements answer false for a
    non-string and ask regorus's own builtin, on a second engine, for a string, so strings keep
    regorus's parser. Registered per engine: regorus engines are per thread (see RegorusEngine).
    """
    import regorus

    checker = regorus.Engine()
    checker.add_policy(
        "baton_is_valid.rego",
        "package baton_is_valid\n\njson_ok := json.is_valid(input)\n\n"
        "yaml_ok := yaml.is_valid(input)\n",
    )

    def valid(rule: str) -> Callable[[Any], bool]:
        def check(value: Any) -> bool:
            if not isinstance(value, str):
                return False
            checker.set_input_json(json.dumps(value))
            return checker.eval_rule(f"data.baton_is_valid.{rule}") is True

        return check

    engine.add_extension("json.is_valid", 1, valid("json_ok"))
    engine.add_extension("yaml.is_valid", 1, valid("yaml_ok"))


def _regorus_message(exc: BaseException) -> str:
    """regorus errors carry a source excerpt and a Rust backtrace; keep location and message."""
    text = str(exc).split("Stack backtrace:", 1)[0]
    location = next((ln[3:].strip() for ln in text.splitlines() if ln.startswith("-->")), "")
    error = next((ln.strip() for ln in text.splitlines() if ln.startswith("error:")), "")
    if error:
        return f"{location}: {error}" if location else error
    return " ".join(text.split()) or type(exc).__name__


def _sources(snapshot: BundleSnapshot, with_tests: bool) -> list[tuple[str, str]]:
    sources = dict(snapshot.modules)
    if with_tests:
        sources.update(snapshot.tests)
    return sorted(sources.items())


class EmbeddedOpaEngine:
    """OPA's own evaluator (OPA v1.20 via ``opa-golib-python-bindings``) in this process.

    Evaluations run on one dedicated thread. Measured on the finance posting policy: ~0.8 ms per
    evaluation in the event loop, ~1.1 ms through the thread. A (re)load compiles the bundle
    (about a second on 2 cores): the worker does it at start (``warm``), ``decide()`` before its
    timeout starts (``prepare``). The thread costs ~0.3 ms but keeps the worker's
    event loop free (the native call releases the GIL) and lets ``decide()``'s timeout actually
    return. One thread is enough: the engine serializes evaluations under its own lock, and a
    stuck evaluation then cannot tie up the default executor.
    """

    name = "opa-embedded"
    when_unavailable = "deny"
    max_wait_seconds = 3600.0

    def __init__(
        self,
        policy_dir: str | os.PathLike[str],
        *,
        reload_interval: float = 1.0,
        extra_dirs: Sequence[str | os.PathLike[str]] = (),
    ):
        self.bundle = PolicyBundle(
            policy_dir, reload_interval=reload_interval, extra_dirs=extra_dirs
        )
        self._lock = threading.Lock()
        self._loaded: tuple[str, Any] | None = None
        self._failed: tuple[str, PolicyLoadError] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-opa")

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.evaluate_sync, path, input)

    def evaluate_sync(self, path: str, input: dict[str, Any] | None) -> tuple[Any, str]:
        """Same as ``evaluate`` for synchronous callers (CLI, benchmarks)."""
        segments = rule_path(path)
        engine, revision = self._engine()
        return _eval_opa(engine, segments, input, revision), revision

    def _engine(self) -> tuple[Any, str]:
        snapshot = self.bundle.current()
        with self._lock:
            if self._loaded is not None and self._loaded[0] == snapshot.revision:
                return self._loaded[1], snapshot.revision
            # Remember a revision that failed to compile so it is not recompiled on every query.
            if self._failed is not None and self._failed[0] == snapshot.revision:
                raise self._failed[1]
            try:
                engine = _build_opa(snapshot)
            except PolicyLoadError as exc:
                self._failed = (snapshot.revision, exc)
                raise
            # The previous engine is not closed here: an evaluation may still hold it, and it
            # closes itself when the last reference goes.
            self._loaded = (snapshot.revision, engine)
            return engine, snapshot.revision

    def warm(self) -> float:
        """Compile the current bundle now (a worker does at start), so the first decision does
        not wait for it; returns the seconds it took. A bundle that does not compile is logged,
        not raised: the worker starts, and each decision denies naming the error."""
        started = time.perf_counter()
        try:
            self._engine()
        except PolicyLoadError as exc:
            log.warning("policy bundle does not compile: %s", exc)
        return time.perf_counter() - started

    async def prepare(self) -> None:
        """Check the files and compile a changed bundle before ``decide()`` starts its timeout:
        compiling is this process's own work (1-2 s for Baton's bundle on 2 busy cores), not an
        engine that does not answer, and must not turn into a deny. Between the bundle's file
        checks (``reload_interval``), a compiled bundle costs no thread hop and no file I/O."""
        loaded = self._loaded
        if loaded is not None and loaded[0] == self.bundle.settled_revision():
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._compile_quietly)

    def _compile_quietly(self) -> None:
        with contextlib.suppress(PolicyLoadError):  # the evaluation reports it: a deny naming it
            self._engine()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class RegorusEngine:
    """regorus (``gordon-to-regorus`` 0.13), an independent Rego evaluator for cross-checks.

    regorus engines are bound to the thread that created them (using one from another thread
    panics), so each thread gets its own, rebuilt when the bundle revision changes. Evaluation
    runs inline: the binding holds the GIL, so a thread would buy nothing.
    """

    name = "regorus"
    when_unavailable = "deny"
    max_wait_seconds = 3600.0

    def __init__(self, policy_dir: str | os.PathLike[str], *, reload_interval: float = 1.0):
        self.bundle = PolicyBundle(policy_dir, reload_interval=reload_interval)
        self._local = threading.local()

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        return self.evaluate_sync(path, input)

    def evaluate_sync(self, path: str, input: dict[str, Any] | None) -> tuple[Any, str]:
        segments = rule_path(path)
        snapshot = self.bundle.current()
        # (revision, engine or the PolicyLoadError it failed with): a revision that does not
        # compile is not re-parsed on every query.
        loaded: tuple[str, Any] | None = getattr(self._local, "loaded", None)
        if loaded is None or loaded[0] != snapshot.revision:
            try:
                loaded = (snapshot.revision, _build_regorus(snapshot))
            except PolicyLoadError as exc:
                loaded = (snapshot.revision, exc)
            self._local.loaded = loaded
        if isinstance(loaded[1], PolicyLoadError):
            raise loaded[1]
        return _eval_regorus(loaded[1], segments, input, snapshot.revision), snapshot.revision


class OpaRestEngine:
    """A real OPA server (or anything speaking its REST Data API) via ``AsyncOpaClient``.

    ``url`` is the server's base URL, e.g. ``http://opa:8181`` (a path prefix such as
    ``https://gw/opa`` is kept). The client does not retry (``retries=0``): retries belong to
    Temporal, and ``decide()`` fails closed on the first error.

    Revision: the query asks for ``provenance``; when the server reports bundle revisions (a
    real OPA serving bundles does) they are returned as ``name@revision``, otherwise the honest
    answer is ``"remote"``: the decision came from a server that did not say which policies it
    ran.
    """

    name = "opa-rest"
    when_unavailable = "deny"
    max_wait_seconds = 3600.0

    def __init__(
        self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS, *, token: str | None = None
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must look like http://host:8181, got {url!r}")
        self.url = url
        self.timeout = timeout
        self._host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = parts.scheme == "https"
        # AsyncOpaClient builds <scheme><host>:<port>/<version>/data/...; a path prefix rides
        # in front of the API version.
        prefix = parts.path.strip("/")
        self._version = f"{prefix}/v1" if prefix else "v1"
        self._token = token
        # aiohttp sessions belong to one event loop; keep one client per loop.
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    async def _opa(self) -> Any:
        from opa_client.opa_async import AsyncOpaClient

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            client = AsyncOpaClient(
                host=self._host,
                port=self._port,
                version=self._version,
                ssl=self._ssl,
                token=self._token,
                retries=0,
                timeout=self.timeout,
            )
            await client.__aenter__()  # opens the aiohttp session; no I/O happens here
            self._client, self._client_loop = client, loop
        return self._client

    async def evaluate(self, path: str, input: dict[str, Any]) -> tuple[Any, str]:
        segments = rule_path(path)
        client = await self._opa()
        try:
            response = await client.query_rule(
                input_data=input,
                package_path="/".join(segments),
                # Builtin errors fail the query, as on the embedded engine (whose OPA binding
                # always evaluates this way): one meaning on every path.
                query_params={"provenance": "true", "strict-builtin-errors": "true"},
            )
        except aiohttp.ClientResponseError as exc:
            if exc.status == 500:
                # OPA's answer to an evaluation error (a builtin error under strict builtin
                # errors, conflicting rule values); opa-python-client drops the body.
                raise PolicyEvalError(
                    f"OPA answered 500 {exc.message} for data.{'.'.join(segments)}: the "
                    "evaluation failed (a builtin error or conflicting rule values)"
                ) from None
            raise
        if not isinstance(response, dict):
            raise PolicyError(f"OPA answered {type(response).__name__}, not a JSON object")
        revision = _provenance_revision(response.get("provenance"))
        # OPA answers {} (no "result") when the document is undefined.
        if "result" not in response:
            raise PolicyUndefined(".".join(segments), revision)
        return response["result"], revision

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close_connection()


def _provenance_revision(provenance: Any) -> str:
    bundles = provenance.get("bundles") if isinstance(provenance, dict) else None
    if isinstance(bundles, dict):
        revisions = [
            f"{name}@{info['revision']}"
            for name, info in sorted(bundles.items())
            if isinstance(info, dict) and info.get("revision")
        ]
        if revisions:
            return ",".join(revisions)
    return "remote"


def build_engine(
    opa_url: str | None,
    policy_dir: str | os.PathLike[str],
    *,
    when_unavailable: str = "deny",
    max_wait_seconds: float = 3600.0,
    extra_dirs: Sequence[str | os.PathLike[str]] = (),
) -> PolicyEngine:
    """The engine a worker uses: a real OPA server when ``OPA_URL`` is set, else embedded OPA;
    ``when_unavailable``/``max_wait_seconds`` from BATON_POLICY_UNAVAILABLE/_MAX_WAIT_SECONDS.
    ``extra_dirs``: extensions' policy directories, loaded with ``policy_dir`` by the embedded
    engine (an OPA server is given them by its operator, like Baton's own bundle)."""
    if when_unavailable not in ("deny", "wait"):
        raise ValueError(f"when_unavailable must be 'deny' or 'wait', got {when_unavailable!r}")
    engine: PolicyEngine = (
        OpaRestEngine(opa_url) if opa_url else EmbeddedOpaEngine(policy_dir, extra_dirs=extra_dirs)
    )
    engine.when_unavailable = when_unavailable
    engine.max_wait_seconds = max_wait_seconds
    return engine


def is_unavailable(decision: PolicyDecision) -> bool:
    """True when a deny only says the engine did not answer (no policy decided anything)."""
    return bool(decision.reasons) and all(
        reason.startswith(ENGINE_UNAVAILABLE) for reason in decision.reasons
    )


def unavailable_error(
    engine: PolicyEngine, decisions: list[PolicyDecision]
) -> ApplicationError | None:
    """With ``when_unavailable == "wait"``: the error that makes the workflow hold and ask
    again (``PolicyUnavailable``, non-retryable so it reaches the workflow at once instead of
    spending the step's retries; the workflow's step runner waits, see
    workflows/kill_switch_gate.py). None when every decision was made, or in "deny" mode,
    where the fail-closed deny stands."""
    if getattr(engine, "when_unavailable", "deny") != "wait":
        return None
    missing = [d for d in decisions if is_unavailable(d)]
    if not missing:
        return None
    return ApplicationError(
        f"policy engine {getattr(engine, 'name', '?')} did not answer: {missing[0].reasons[0]}",
        {"max_wait_seconds": getattr(engine, "max_wait_seconds", 3600.0)},
        type=POLICY_UNAVAILABLE_ERROR,
        non_retryable=True,
    )


# ---------------------------------------------------------------------------------------------
# decide(): the fail-closed mapping
# ---------------------------------------------------------------------------------------------


class _Malformed(Exception):
    """The policy answered, but not with a usable decision document."""


class _Decision:
    """Builds the PolicyDecision for one query: pre-checks, fail-closed denies, the mapping."""

    def __init__(self, engine: object, query: PolicyQuery, decision_id: str) -> None:
        self.engine_name = str(getattr(engine, "name", type(engine).__name__))
        self.query = query
        self.decision_id = decision_id
        self.path = f"{query.policy.strip('/')}/decision"

    def denied(self, reason: str, revision: str = UNKNOWN_REVISION) -> PolicyDecision:
        return PolicyDecision(
            decision_id=self.decision_id,
            policy=self.query.policy,
            verdict="deny",
            reasons=[reason],
            revision=revision,
            engine=self.engine_name,
            subject=self.query.subject,
        )

    def precheck(self) -> PolicyDecision | None:
        """A deny for a query that must not reach the engine at all, else None."""
        try:
            json.dumps(self.query.input, allow_nan=False)
        except (TypeError, ValueError) as exc:
            # Checked here so the reason names the real problem (e.g. a Decimal amount) instead
            # of an engine failure. Amounts must be JSON numbers for the policy to compare them.
            return self.denied(f"policy input is not JSON-serialisable: {_shorten(str(exc))}")
        try:
            rule_path(self.query.policy)
        except ValueError as exc:
            return self.denied(f"invalid policy name: {exc}")
        return None

    def failed(self, exc: BaseException) -> PolicyDecision:
        """The fail-closed deny for what the engine raised instead of answering (an undefined
        document, an evaluation error, any engine failure). A request to stop (cancellation)
        is raised again: it is not a failure of the engine."""
        if isinstance(exc, PolicyUndefined):
            return self.denied(UNDEFINED_DECISION, str(exc.revision))
        if isinstance(exc, PolicyEvalError):
            return self.denied(f"{EVALUATION_FAILED}: {_shorten(str(exc))}", exc.revision)
        if not _is_engine_failure(exc):
            raise exc
        return self.denied(f"{ENGINE_UNAVAILABLE}: {_describe(exc)}")

    def from_value(self, value: Any, revision: object) -> PolicyDecision:
        try:
            verdict, reasons, obligations = _verdict(value)
        except _Malformed as exc:
            return self.denied(str(exc), str(revision))
        return PolicyDecision(
            decision_id=self.decision_id,
            policy=self.query.policy,
            verdict=verdict,
            reasons=reasons,
            obligations=obligations,
            revision=str(revision),
            engine=self.engine_name,
            subject=self.query.subject,
        )


async def decide(
    engine: PolicyEngine,
    query: PolicyQuery,
    decision_id: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> PolicyDecision:
    """:func:`_decide`, traced: one ``policy <package>`` span per decision (activities/tracing)."""
    with tracing.policy_span(query, decision_id) as span:
        value, decision = await _decide(engine, query, decision_id, timeout=timeout)
        tracing.record_decision(span, decision)
        _log_decision(engine, query, decision, value)
        return decision


def _log_decision(engine: object, query: PolicyQuery, decision: PolicyDecision, value: Any) -> None:
    """Hand the decision to the engine's decision log (activities/decision_log.py), if any."""
    logger = getattr(engine, "decision_log", None)
    if logger is not None:
        logger.log(query, decision, value)


async def _decide(
    engine: PolicyEngine,
    query: PolicyQuery,
    decision_id: str,
    *,
    timeout: float,
) -> tuple[Any, PolicyDecision]:
    """Evaluate ``<query.policy>/decision`` and map it to a PolicyDecision. Never raises.
    Returns the policy's own document too (None when there was none), for the decision log.

    Fail closed: an engine error, a timeout, an undefined document, an answer that is not an
    object, an ``allow`` that is not literally ``true``, or malformed reason lists all give a
    ``deny`` whose reason says why. Only cancellation of the caller propagates (so a cancelled
    Temporal activity still stops).

    The policy document's shape (everything but ``allow`` optional)::

        {"allow": bool, "deny": [str], "require_approval": [str],
         "required_approvals": [{"role": str, "count": int >= 1}],   # N-of-M slots
         "approver_roles": [str],          # the required roles, sorted
         "eligible_approvers": [str],      # people holding a required role, sorted
         "escalation": [{"roles": [str], "sla_seconds": int >= 1}],  # tier 1 first
         "candidates": {role: [str]},      # who may fill each required / escalation role
         "redact": [kind],                 # personal data to mask first (REDACTION_KINDS)
         "reroute_regions": [str]}         # with a residency deny: the regions allowed

    ``redact`` and ``reroute_regions`` (the base policy's obligations) are parsed with every
    verdict; an unknown redaction kind or a non-list is a deny naming the field. A
    ``require_approval`` verdict needs non-empty ``required_approvals`` whose roles are the
    ``approver_roles`` (derived from them when absent) and a ``candidates`` list for every
    required and escalation role; anything else is malformed, and so a deny naming the field.
    """
    decision = _Decision(engine, query, decision_id)
    if (early := decision.precheck()) is not None:
        return None, early
    if isinstance(engine, EmbeddedOpaEngine):  # the timeout is for the evaluation, not a compile
        await engine.prepare()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            value, revision = await engine.evaluate(decision.path, query.input)
    except BaseException as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            return None, decision.denied(f"{ENGINE_UNAVAILABLE}: no answer within {timeout:g} s")
        return None, decision.failed(exc)
    return value, decision.from_value(value, revision)


def in_transaction_decider(
    engine: PolicyEngine, decision_id: str
) -> Callable[[PolicyQuery], PolicyDecision]:
    """A ``decide`` for code running in a worker thread inside a database transaction (the
    governed steps decide and write under one lock). Call it on the event loop; the function it
    returns is called from the thread: an embedded engine decides on that thread (~1 ms, no
    hop), a policy server is asked on the event loop, which owns its HTTP client."""
    loop = asyncio.get_running_loop()

    def decide_now(query: PolicyQuery) -> PolicyDecision:
        if isinstance(engine, SyncPolicyEngine):
            return decide_sync(engine, query, decision_id)
        return asyncio.run_coroutine_threadsafe(decide(engine, query, decision_id), loop).result()

    return decide_now


def decide_sync(engine: SyncPolicyEngine, query: PolicyQuery, decision_id: str) -> PolicyDecision:
    """:func:`decide` for an in-process engine, on the caller's thread. Never raises.

    For callers that must decide inside a database transaction (the governed step decides and
    writes under one lock, so the state policy saw cannot change before the write). There is no
    timeout: an embedded evaluation is CPU-bound and sub-millisecond.
    """
    with tracing.policy_span(query, decision_id) as span:
        value, decision = explain_sync(engine, query, decision_id)
        tracing.record_decision(span, decision)
        _log_decision(engine, query, decision, value)
        return decision


def explain_sync(
    engine: SyncPolicyEngine, query: PolicyQuery, decision_id: str
) -> tuple[Any, PolicyDecision]:
    """:func:`decide_sync`, plus the decision document exactly as the policy answered it
    (``None`` when there was none: undefined, an engine failure or a refused query). For
    ``baton policy eval``, which shows policy authors both."""
    decision = _Decision(engine, query, decision_id)
    if (early := decision.precheck()) is not None:
        return None, early
    try:
        value, revision = engine.evaluate_sync(decision.path, query.input)
    except BaseException as exc:
        return None, decision.failed(exc)
    return value, decision.from_value(value, revision)


def _verdict(
    value: Any,
) -> tuple[Literal["allow", "deny", "require_approval"], list[str], Obligations]:
    if not isinstance(value, dict):
        raise _Malformed(f"policy returned {_json_type(value)} instead of a decision object")
    if "allow" not in value:
        raise _Malformed("policy decision has no 'allow' field")
    allow = value["allow"]
    # `is True`-strict: "true", 1 and null are not permission.
    if not isinstance(allow, bool):
        raise _Malformed(f"policy 'allow' is not a boolean: {_shorten(repr(allow))}")
    deny = _strings(value, "deny")
    # The base policy's obligations come with any verdict (a residency deny names the regions
    # to reroute to); a malformed one is a deny naming the field, like any other.
    base = _base_obligations(value)
    if deny:
        # Even next to allow=true: an inconsistent answer is a deny.
        return "deny", deny, base
    if not allow:
        return "deny", ["policy did not allow the action and gave no reason"], base
    require = _strings(value, "require_approval")
    if not require:
        return "allow", [], base
    update = {"redact": base.redact, "reroute_regions": base.reroute_regions}
    return "require_approval", require, _obligations(value).model_copy(update=update)


def _base_obligations(value: dict[str, Any]) -> Obligations:
    """``redact`` and ``reroute_regions`` of a decision document (policy/base/agent_call.rego).

    An unknown redaction kind is malformed, not ignored: an obligation nobody can fulfil must
    not let the data through unmasked.
    """
    kinds = value.get("redact", [])
    if not isinstance(kinds, list) or not all(
        isinstance(kind, str) and kind in REDACTION_KINDS for kind in kinds
    ):
        raise _Malformed(
            f"policy 'redact' is not a list of redaction kinds ({', '.join(REDACTION_KINDS)}): "
            + _shorten(repr(kinds))
        )
    regions = _strings(value, "reroute_regions")
    if not all(regions):
        raise _Malformed(f"policy 'reroute_regions' names an empty region: {regions!r}")
    return Obligations(redact=sorted(set(kinds)), reroute_regions=regions)


def _obligations(value: dict[str, Any]) -> Obligations:
    """The approval obligations of a require_approval document (see decide())."""
    required = _requirements(value)
    if not required:
        raise _Malformed("policy requires approval but names no required_approvals")
    required_roles = sorted(r.role for r in required)
    roles = _strings(value, "approver_roles") if "approver_roles" in value else required_roles
    if sorted(set(roles)) != required_roles:
        raise _Malformed(
            f"policy 'approver_roles' {_shorten(repr(roles))} are not the roles of its "
            f"required_approvals {required_roles!r}"
        )
    escalation = _escalation(value)
    candidates = _candidates(value)
    wanted = set(required_roles) | {role for tier in escalation for role in tier.roles}
    if missing := sorted(wanted - candidates.keys()):
        raise _Malformed(f"policy 'candidates' has no list for the roles {missing!r}")
    return Obligations(
        approver_roles=sorted(set(roles)),
        eligible_approvers=_strings(value, "eligible_approvers"),
        required_approvals=required,
        escalation=escalation,
        candidates=candidates,
    )


def _requirements(document: dict[str, Any]) -> list[ApprovalRequirement]:
    required = _parsed_list(
        document,
        "required_approvals",
        "a list of {role: non-empty string, count: whole number >= 1}",
        ApprovalRequirement,
        lambda item: (
            set(item) == {"role", "count"}
            and _name(item["role"])
            and _whole(item["count"], minimum=1)
        ),
    )
    roles = [r.role for r in required]
    if duplicates := sorted({role for role in roles if roles.count(role) > 1}):
        raise _Malformed(f"policy 'required_approvals' names the roles {duplicates!r} twice")
    return required


def _escalation(document: dict[str, Any]) -> list[EscalationTier]:
    return _parsed_list(
        document,
        "escalation",
        "a list of {roles: non-empty list of names, sla_seconds: whole number >= 1}",
        EscalationTier,
        lambda item: (
            set(item) == {"roles", "sla_seconds"}
            and isinstance(item["roles"], list)
            and bool(item["roles"])
            and all(_name(role) for role in item["roles"])
            and _whole(item["sla_seconds"], minimum=1)
        ),
    )


def _parsed_list(
    document: dict[str, Any],
    field: str,
    shape: str,
    model: type[_M],
    well_formed: Callable[[dict[str, Any]], bool],
) -> list[_M]:
    """The list ``field`` of a decision document (empty when absent) as ``model`` items. Malformed,
    naming ``shape``, when it is not a list or one of its items is not an object that is
    ``well_formed``."""
    items = document.get(field, [])
    if not isinstance(items, list):
        raise _Malformed(f"policy '{field}' is not {shape}: {_shorten(repr(items))}")
    parsed: list[_M] = []
    for item in items:
        if not isinstance(item, dict) or not well_formed(item):
            raise _Malformed(f"policy '{field}' is not {shape}: {_shorten(repr(item))}")
        parsed.append(_model(model, field, item))
    return parsed


def _candidates(document: dict[str, Any]) -> dict[str, list[str]]:
    items = document.get("candidates", {})
    if not isinstance(items, dict) or not all(
        _name(role) and isinstance(people, list) and all(isinstance(p, str) for p in people)
        for role, people in items.items()
    ):
        raise _Malformed(
            "policy 'candidates' is not an object of role -> list of names: "
            + _shorten(repr(items))
        )
    return {role: list(people) for role, people in items.items()}


def _name(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _whole(value: Any, *, minimum: int) -> bool:
    """An integer (or integral float, as a JSON number may decode) >= minimum; never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return float(value).is_integer() and value >= minimum


def _model(model: type[_M], field: str, item: Any) -> _M:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise _Malformed(
            f"policy '{field}' entry {_shorten(repr(item))} is invalid: {problems}"
        ) from None


def _strings(document: dict[str, Any], key: str) -> list[str]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _Malformed(f"policy '{key}' is not a list of strings: {_shorten(repr(items))}")
    return list(items)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _is_engine_failure(exc: BaseException) -> bool:
    """Any exception, and pyo3's PanicException (regorus), which derives from BaseException;
    but never a request to stop (cancellation, Ctrl-C, exit), which must propagate."""
    stop = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)
    return not isinstance(exc, stop)


def _describe(exc: BaseException) -> str:
    message = str(exc)
    if "Stack backtrace:" in message:
        message = _regorus_message(exc)
    message = " ".join(message.split())
    return _shorten(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Rego unit tests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegoTestResult:
    """One ``test_`` rule: ``name`` is ``<package>.<rule>``; ``error`` says why it failed."""

    name: str
    passed: bool
    error: str | None = None


def policy_packages(snapshot: BundleSnapshot) -> list[str]:
    """The packages of a bundle's policy modules (tests excluded), e.g. ``baton.base.agent_call``,
    sorted: what ``baton policy eval --policy`` may name."""
    found = {m.group(1) for source in snapshot.modules.values() if (m := _PACKAGE.search(source))}
    return sorted(found)


def discover_rego_tests(policy_dir: str | os.PathLike[str]) -> list[str]:
    """Every ``test_`` rule in the ``*_test.rego`` files, as ``<package>.<rule>``, sorted."""
    names: set[str] = set()
    for package, rule, _ in _test_rules(Path(policy_dir)):
        names.add(f"{package}.{rule}")
    return sorted(names)


def _test_rules(policy_dir: Path) -> list[tuple[str, str, str]]:
    """(package, rule, file) for every test rule head, duplicates included."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(policy_dir.rglob("*_test.rego")):
        if any(part.startswith(".") for part in path.relative_to(policy_dir).parts):
            continue
        source = path.read_text(encoding="utf-8")
        package = _PACKAGE.search(source)
        if package is None:
            continue
        for rule in _TEST_RULE.findall(source):
            found.append((package.group(1), rule, path.relative_to(policy_dir).as_posix()))
    return found


def run_rego_tests(
    policy_dir: str | os.PathLike[str],
    engine: Literal["opa", "regorus"] = "opa",
    extra_dirs: Sequence[str | os.PathLike[str]] = (),
) -> list[RegoTestResult]:
    """Evaluate every ``test_`` rule on OPA's evaluator or on regorus; one result per test.

    A test passes when its rule is exactly ``true``; undefined (a body expression failed) or an
    evaluation error fails it. Never raises for policy problems: a directory that does not load
    fails every test with the load error, so ``baton policy test`` can print it.
    ``extra_dirs``: extensions' policy directories, loaded and tested with ``policy_dir``.
    """
    policy_dir = Path(policy_dir)
    rules = _test_rules(policy_dir)
    for extra in extra_dirs:
        rules += _test_rules(Path(extra))
    seen: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for package, rule, file in rules:
        name = f"{package}.{rule}"
        if name in seen:
            # Same-named rules are OR-ed by Rego: one passing body would hide a failing one.
            duplicates[name] = f"defined more than once ({seen[name]}, {file}); rename one"
        seen.setdefault(name, file)
    names = sorted(seen)

    try:
        snapshot = PolicyBundle(policy_dir, reload_interval=0, extra_dirs=extra_dirs).current()
        native = (
            _build_opa(snapshot, with_tests=True)
            if engine == "opa"
            else _build_regorus(snapshot, with_tests=True)
        )
    except PolicyError as exc:
        return [RegoTestResult(name, False, str(exc)) for name in names]
    evaluate = _eval_opa if engine == "opa" else _eval_regorus

    # Fast path: one evaluation per test package (compiling a query per test costs ~40 ms on
    # OPA). Only tests that are not plainly true there are evaluated one by one, for the reason.
    package_values: dict[str, Any] = {}
    for package in sorted({name.rsplit(".", 1)[0] for name in names}):
        try:
            package_values[package] = evaluate(native, package.split("."), None, snapshot.revision)
        except BaseException as exc:  # an erroring test: the one-by-one pass will name it
            if not _is_engine_failure(exc):
                raise

    results: list[RegoTestResult] = []
    for name in names:
        if name in duplicates:
            results.append(RegoTestResult(name, False, duplicates[name]))
            continue
        package, rule = name.rsplit(".", 1)
        document = package_values.get(package)
        if isinstance(document, dict) and document.get(rule) is True:
            results.append(RegoTestResult(name, True))
            continue
        try:
            value = evaluate(native, name.split("."), None, snapshot.revision)
        except PolicyUndefined:
            results.append(
                RegoTestResult(name, False, "failed: a body expression was false or undefined")
            )
        except BaseException as exc:  # an evaluation error fails this test, not the run
            if not _is_engine_failure(exc):
                raise
            results.append(RegoTestResult(name, False, f"error: {_describe(exc)}"))
        else:
            passed = value is True
            results.append(
                RegoTestResult(name, passed, None if passed else f"failed: value is {value!r}")
            )
    if engine == "opa":
        with contextlib.suppress(Exception):
            native.close()
    return results


__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "ENGINE_UNAVAILABLE",
    "EVALUATION_FAILED",
    "UNDEFINED_DECISION",
    "UNKNOWN_REVISION",
    "BundleSnapshot",
    "EmbeddedOpaEngine",
    "OpaRestEngine",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyError",
    "PolicyEvalError",
    "PolicyLoadError",
    "PolicyUndefined",
    "RegoTestResult",
    "RegorusEngine",
    "build_bundle",
    "build_engine",
    "decide",
    "decide_sync",
    "discover_rego_tests",
    "explain_sync",
    "policy_packages",
    "rule_path",
    "run_rego_tests",
]
