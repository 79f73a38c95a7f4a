"""The Baton Temporal plugin: one object that configures clients, workers and replayers alike.

- data converter: pydantic, so every contract round-trips with its types (Decimal, datetime);
- workflow failure types: a pydantic ``ValidationError`` raised in workflow code fails the
  workflow with a readable message instead of retrying the workflow task forever;
- sandbox pass-through: modules that are safe and deterministic to share with the sandbox;
- a compiled-code cache for the sandbox's re-imports (see :class:`SandboxCodeCache`), and for
  the small snippets the sandbox runs on every activation and payload (see :class:`_Instance`).
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType
from typing import Any

import pydantic
from temporalio import workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox import _runner as sandbox_runner

from workflows.errors import BatonError

# Why each module may pass through the sandbox (loaded once, shared with workflow code):
PASSTHROUGH = [
    "pydantic",  # the contracts' base; pure, and re-importing it per workflow is slow
    "pydantic_core",  # pydantic's compiled core
    "annotated_types",  # pydantic dependency
    # pure models (pydantic + stdlib only), the package and every module in it (the sandbox
    # passes a passed-through package's submodules through too). Activities, imported through
    # the sandbox, use the same classes; re-importing them inside would make PeriodData !=
    # PeriodData. The DSL catalogue (passed through) holds models built on the extension
    # actions' envelopes (workflows/contracts/extensions.py): the same classes inside and out.
    "workflows.contracts",
    # the Ed25519 signature check of signed approvals (a compiled extension: load it once)
    "cryptography",
    "workflows.agent_steps",  # agent step declarations (dataclasses + output models)
    # constants only (timeouts and retry policies, search attribute keys, failure type names and
    # the BatonError root, so a workflow failure type is the same class inside and outside):
    # no workflow logic, nothing done at import but defining them. Re-creating the Preset
    # dataclass in every run's sandbox cost ~0.4 ms (the bare bench workflow imports it too).
    "workflows.presets",
    "workflows.visibility",
    "workflows.errors",
    # process-definition language (pydantic + stdlib only): building its recursive models costs
    # ~0.3 s, far too much per run, and the definition in the input must be the same class
    "workflows.dsl.model",
    "workflows.dsl.expressions",
    "workflows.dsl.catalog",
    # the tracing API (workflows/telemetry.py makes approval spans through Temporal's contrib);
    # its context and tracer provider are process-wide state that must not be re-created per run
    "opentelemetry",
]


class _CachingSourceLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles each distinct source text of a file once per process."""

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:  # type: ignore[override]
        return SandboxCodeCache.compiled(self, bytes(data), str(path), _optimize)


class SandboxCodeCache(importlib.abc.MetaPathFinder):
    """Compile a module's source once per process, not once per workflow run.

    The sandbox imports the workflow's modules afresh for every new workflow run (its own
    ``sys.modules``). Python normally loads them from ``__pycache__``; where bytecode is not
    written (``PYTHONDONTWRITEBYTECODE=1``, common in container images, and set on this
    project's machines, or a read-only install) every run compiled ``workflows/finance_close.py``
    and the modules it imports from source again: ~6 ms of CPU per run on the worker.

    Only imports made inside a sandbox go through this finder. The code object is keyed by the
    file's path and its exact source text, so an edited file is compiled again; the module is
    still executed afresh in each sandbox, exactly as before (a code object is immutable).
    """

    _codes: dict[tuple[str, bytes, int], CodeType] = {}
    _lock = threading.Lock()
    _installed = False

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.meta_path.insert(0, cls())
                cls._installed = True

    @classmethod
    def compiled(
        cls, loader: importlib.machinery.SourceFileLoader, data: bytes, path: str, optimize: int
    ) -> CodeType:
        key = (path, data, optimize)
        code = cls._codes.get(key)
        if code is None:
            code = importlib.machinery.SourceFileLoader.source_to_code(
                loader, data, path, _optimize=optimize
            )
            cls._codes[key] = code
        return code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not workflow.unsafe.in_sandbox():
            return None
        # Ask the finders after this one; only a plain source file gets the caching loader.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if type(loader) is importlib.machinery.SourceFileLoader:
                spec.loader = _CachingSourceLoader(loader.name, loader.path)
            return spec
        return None


_SNIPPETS: dict[str, CodeType] = {}


class _Instance(sandbox_runner._Instance):
    """The SDK's sandboxed instance, running its fixed code snippets precompiled.

    temporalio 1.35 enters the sandbox by ``exec`` of a source string: on every activation, and
    twice for every payload it converts (to ask for the serialization context). ``exec`` of a
    string compiles it each time; the strings are a handful of constants, so they are compiled
    once here and the same code is executed, with the same globals. py-spy: ~4 ms of GIL time
    per finance close went to those compiles. It leans on SDK internals (``_runner._Instance``,
    ``_run_code``), which is why pyproject.toml pins temporalio to 1.35.*: check it on upgrade.
    """

    def _run_code(self, code: Any, **extra_globals: Any) -> None:
        if isinstance(code, str):
            compiled = _SNIPPETS.get(code)
            if compiled is None:
                compiled = _SNIPPETS.setdefault(code, compile(code, "<string>", "exec"))
            code = compiled
        super()._run_code(code, **extra_globals)


@dataclasses.dataclass(frozen=True)
class _SandboxRunner(SandboxedWorkflowRunner):
    def create_instance(self, det: sandbox_runner.WorkflowInstanceDetails) -> Any:
        return _Instance(det, self.runner_class, self.restrictions)


def _runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    SandboxCodeCache.install()
    if isinstance(existing, SandboxedWorkflowRunner):
        restrictions = existing.restrictions
    else:
        restrictions = SandboxRestrictions.default
    return _SandboxRunner(
        restrictions=dataclasses.replace(restrictions).with_passthrough_modules(*PASSTHROUGH)
    )


def baton_data_converter(payload_codec: PayloadCodec | None = None) -> DataConverter:
    """The one data converter of Baton: pydantic, plus ``payload_codec`` (e.g. the AES-GCM
    :class:`baton.encryption.EncryptionCodec`) on every payload when given. With a codec, failure
    messages and stack traces are encoded too: they can quote business data."""
    if payload_codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=payload_codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class BatonPlugin(SimplePlugin):
    """Configures a client (and the workers built from it), a test environment or a replayer.

    ``payload_codec``: encrypt payloads (configured by BATON_ENCRYPTION_KEYS; see docs/security.md,
    "Payload encryption"). Workers inherit the converter of the client they are built from.
    """

    def __init__(self, payload_codec: PayloadCodec | None = None) -> None:
        super().__init__(
            "baton.BatonPlugin",
            data_converter=baton_data_converter(payload_codec),
            workflow_runner=_runner,
            # Baton's own errors fail the run instead of retrying its workflow task forever
            workflow_failure_exception_types=[pydantic.ValidationError, BatonError],
        )


__all__ = [
    "BatonPlugin",
    "PASSTHROUGH",
    "SandboxCodeCache",
    "baton_data_converter",
]
