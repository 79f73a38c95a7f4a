"""Extending Baton without editing Baton: governed actions, agents, processes and policies
declared by a user's own package (docs/extending.md).

A package declares what it adds in one function and registers it one of two ways:

* an entry point in its pyproject.toml (found by every worker, the CLI and ``load()``)::

      [project.entry-points."baton.extensions"]
      vendor_invoice = "vendor_invoice:register"

* or explicitly, in the program that runs the worker or the client::

      import baton.extensions
      baton.extensions.register(vendor_invoice.register)

``register(registry)`` calls :meth:`Registry.action`, :meth:`Registry.agent`,
:meth:`Registry.process`, :meth:`Registry.yaml_process` and :meth:`Registry.policies`. Once
loaded, the worker (worker.py) runs the actions and agents as activities and registers the
processes' workflows, the YAML catalogue (workflows/dsl/catalog.py) lists the actions and agents
by name (``baton validate``, ``baton schema`` and ``baton catalog`` see them), and the client
and the CLI start the processes by name.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, create_model

from activities.extensions import ActionContext, ActionSpec, AgentSpec, prompt_file
from workflows.contracts.extensions import (
    CompensateActionInput,
    CompensateActionOutcome,
    GovernedActionInput,
    GovernedActionOutcome,
)
from workflows.dsl import catalog
from workflows.errors import BatonError
from workflows.registry import ProcessSpec, register_process

__all__ = [
    "ENTRY_POINT_GROUP",
    "ActionContext",
    "ActionSpec",
    "AgentSpec",
    "ExtensionError",
    "Registry",
    "YamlProcess",
    "load",
    "loaded",
    "prompt_file",
    "register",
    "yaml_process_path",
]

#: The entry-point group Baton loads extensions from.
ENTRY_POINT_GROUP = "baton.extensions"
log = logging.getLogger("baton.extensions")


class ExtensionError(BatonError, ValueError):
    """An extension declares something Baton cannot take (a clash of names, a bad spec)."""


@dataclass(frozen=True)
class YamlProcess:
    """A process definition (YAML) an extension ships: ``baton run NAME`` runs it."""

    name: str
    path: Path
    extension: str


@dataclass
class Registry:
    """What every loaded extension added. Names are global: an extension may not take a name
    Baton or another extension already uses."""

    actions: dict[str, ActionSpec] = field(default_factory=dict)
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    processes: dict[str, ProcessSpec] = field(default_factory=dict)
    yaml_processes: dict[str, YamlProcess] = field(default_factory=dict)
    policy_dirs: list[Path] = field(default_factory=list)
    #: which extension added each name (for messages and `baton catalog`)
    origin: dict[str, str] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)
    _current: str = "explicit"

    # -- what an extension's register(registry) calls ----------------------------------------

    def action(
        self,
        name: str,
        *,
        args: type[BaseModel],
        result: type[BaseModel],
        policy: str,
        run: Callable[[Any, ActionContext], Any],
        compensate: Callable[[Any, Any, ActionContext], Any] | None = None,
        facts: Callable[[Any, ActionContext], dict[str, Any]] | None = None,
        description: str = "",
    ) -> ActionSpec:
        """A governed action: ``run(args, ctx)`` does the side effect in the transaction in
        which policy (``policy``, a Rego package path) decided on it; ``compensate(args,
        result, ctx)`` undoes it (the saga registers it before the action runs)."""
        if not name or "." not in name:
            raise ExtensionError(f"action {name!r}: name it <area>.<verb>, e.g. ap.pay_invoice")
        self._claim(name, "action")
        spec = ActionSpec(
            name=name,
            args=args,
            result=result,
            policy=policy,
            run=run,
            compensate=compensate,
            facts=facts,
            description=description,
        )
        self.actions[name] = spec
        self._catalogue(
            "connector",
            name,
            GovernedActionInput,
            _typed_outcome(name, result),
            sensitive=True,
            description=description,
            args=args,
            result=result,
            policy=policy,
            undo=spec.undo_name if compensate is not None else None,
        )
        if compensate is not None:
            self._catalogue(
                "connector",
                spec.undo_name,
                CompensateActionInput,
                CompensateActionOutcome,
                description=f"undo {name} (a no-op when it never ran or was undone)",
            )
        return spec

    def agent(
        self,
        name: str,
        *,
        role: str,
        prompt: str,
        input: type[BaseModel],
        answer: type[BaseModel],
        check: Callable[..., list[str]] | None = None,
        task_class: str | None = None,
        description: str = "",
        stand_in: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> AgentSpec:
        """An agent: its system prompt (first line ``agent: <role>``), input and answer models,
        meaning validator (``check(answer[, inp]) -> problems``), and the model catalogue's task
        class it is routed by. ``stand_in`` answers for it on the local model server."""
        self._claim(name, "agent")
        first = prompt.strip().splitlines()[:1]
        if first != [f"agent: {role}"]:
            raise ExtensionError(
                f"agent {name!r}: its prompt's first line must be 'agent: {role}' (the model "
                f"server and the audit trail name the agent by it), not {first[:1]!r}"
            )
        spec = AgentSpec(
            name=name,
            role=role,
            prompt=prompt,
            input=input,
            answer=answer,
            check=check,
            task_class=task_class,
            description=description,
            stand_in=stand_in,
        )
        self.agents[name] = spec
        self._catalogue("agent", name, input, spec.outcome, description=description, result=answer)
        return spec

    def process(self, spec: ProcessSpec) -> None:
        """A process written in Python: a GovernedProcess workflow and its ProcessSpec."""
        self._claim(spec.name, "process")
        self.processes[spec.name] = spec
        register_process(spec)

    def yaml_process(self, path: str | Path, name: str | None = None) -> YamlProcess:
        """A process written in YAML, shipped with the extension (``baton run NAME``)."""
        file = Path(path)
        if not file.is_file():
            raise ExtensionError(f"yaml process {str(file)!r}: no such file")
        proc = YamlProcess(name or file.stem, file.resolve(), self._current)
        self._claim(proc.name, "yaml process")
        self.yaml_processes[proc.name] = proc
        return proc

    def policies(self, directory: str | Path) -> None:
        """A directory of Rego policies (and ``data/*.json``) the embedded engine loads with
        Baton's own (policy/)."""
        path = Path(directory).resolve()
        if not path.is_dir():
            raise ExtensionError(f"policies {str(path)!r}: not a directory")
        if path not in self.policy_dirs:
            self.policy_dirs.append(path)

    # -- helpers -----------------------------------------------------------------------------

    def _catalogue(
        self, kind: str, name: str, input: type[BaseModel], output: Any, **fields: Any
    ) -> None:
        """Put ``name`` in the YAML catalogue (``kind``: "agent" or "connector") as this
        extension's: ``fields`` are the rest of its ``catalog.Action``."""
        action = catalog.Action(name, input, output, extension=self._current, **fields)
        catalog.register(kind, name, action)

    def _claim(self, name: str, what: str) -> None:
        taken = self.origin.get(name)
        builtin = name in catalog.BUILTIN_AGENTS or name in catalog.BUILTIN_CONNECTORS
        if builtin or (taken is not None and taken != self._current):
            by = "Baton" if builtin else f"extension {taken!r}"
            raise ExtensionError(f"{what} {name!r} of {self._current!r}: {by} already uses it")
        self.origin[name] = self._current

    def _run(self, name: str, register_fn: Callable[[Registry], Any]) -> None:
        self._current = name
        try:
            register_fn(self)
        finally:
            self._current = "explicit"
        self.extensions.append(name)


def _typed_outcome(name: str, result: type[BaseModel]) -> type[BaseModel]:
    """The outcome with ``result`` typed as the action's result model (for the YAML checker
    and the JSON Schema: ``steps.pay.output.result.payment_id`` is known to exist)."""
    title = "".join(part.title() for part in re.split(r"[._]", name)) + "Outcome"
    typed: Any = result | None
    return create_model(title, __base__=GovernedActionOutcome, result=(typed, None))


#: Every extension loaded into this process.
REGISTRY = Registry()
_entry_points_loaded = False


def register(register_fn: Callable[[Registry], Any], name: str | None = None) -> Registry:
    """Register an extension explicitly: ``register_fn(registry)`` declares what it adds. A
    function registered twice is registered once."""
    label = name or ".".join(
        str(getattr(register_fn, attr, "")) for attr in ("__module__", "__qualname__")
    )
    if label not in REGISTRY.extensions:
        REGISTRY._run(label, register_fn)
    return REGISTRY


def load(entry_points: Iterable[Any] | None = None) -> Registry:
    """Load every installed extension (entry-point group ``baton.extensions``) once; the
    registry of everything loaded. A broken extension is an ExtensionError naming it."""
    global _entry_points_loaded
    if entry_points is None:
        if _entry_points_loaded:
            return REGISTRY
        _entry_points_loaded = True
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in entry_points:
        if ep.name in REGISTRY.extensions:
            continue
        try:
            register_fn = ep.load()
        except Exception as err:
            raise ExtensionError(
                f"extension {ep.name!r} ({ep.value}) does not load: {type(err).__name__}: {err}"
            ) from err
        REGISTRY._run(ep.name, register_fn)
        log.info("loaded Baton extension %s (%s)", ep.name, ep.value)
    return REGISTRY


def loaded() -> Registry:
    """The registry as it stands (without loading anything)."""
    return REGISTRY


def yaml_process_path(name: str) -> Path | None:
    """The file of the YAML process an extension registered as ``name``."""
    proc = load().yaml_processes.get(name)
    return proc.path if proc is not None else None
