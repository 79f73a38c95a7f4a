"""``baton validate``: every error of a process definition, each at file:line:column.

Three passes, all collecting rather than stopping at the first problem:

1. YAML, loaded with PyYAML's composer so every value keeps its position (syntax errors,
   duplicate keys, anchors that expand too far);
2. the language's shape (pydantic models in workflows/dsl/model.py);
3. meaning: unknown catalog names and step references, reference cycles, steps that read a step
   which has not run yet (or runs in another branch), sensitive actions without compensation,
   undefined variables, expression syntax, and type mismatches between a reference's type (from
   the output contracts) and the input field it feeds.

Not used inside workflows (it reads files). The interpreter receives the validated model; what
still cannot run on the data (say ``number('abc')``) fails the run with ProcessDefinitionError.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from workflows.contracts import ApprovalOutcome, PolicyDecision
from workflows.dsl import catalog, validate_agent, validate_governed
from workflows.dsl import expressions as ex
from workflows.dsl.model import (
    AgentStep,
    AgentThatActs,
    ApprovalStep,
    ConditionStep,
    ConnectorStep,
    FailStep,
    GovernedActionStep,
    InputField,
    LoopStep,
    ParallelStep,
    PolicyStep,
    ProcessDefinition,
    SetStep,
    Step,
    SubprocessDefinition,
    SubprocessStep,
    SwitchStep,
    WaitEventStep,
)
from workflows.dsl.names import nearest
from workflows.errors import BatonError

Path_ = tuple[Any, ...]
MAX_NODES = 50_000
ROOTS = ("input", "steps", "vars", "workflow")
WORKFLOW_FIELDS = {"id": {"type": "string"}, "run_id": {"type": "string"}}


@dataclass(frozen=True, order=True)
class Issue:
    line: int
    column: int
    message: str
    file: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class DefinitionInvalid(BatonError, ValueError):
    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass
class Pos:
    line: int
    column: int
    style: str | None = None
    single_line: bool = True


# -- pass 1: YAML with positions ------------------------------------------------------------


def _pos(mark: Any, node: Any = None) -> Pos:
    style = getattr(node, "style", None)
    single = node is None or node.start_mark.line == node.end_mark.line
    return Pos(mark.line + 1, mark.column + 1, style, single)


class _Loader(yaml.SafeLoader):
    pass


#: Limits checked before the YAML is composed (PyYAML's composer recurses: a 5,000-deep document
#: would end in a RecursionError instead of an answer)
MAX_DEPTH = 100
MAX_CHARS = 1_000_000

_OPENERS = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSERS = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _limits_issue(text: str) -> Issue | None:
    """The first size or depth limit ``text`` passes, found by the (iterative) scanner."""
    if len(text) > MAX_CHARS:
        return Issue(
            1, 1, f"the document has {len(text):,} characters; at most {MAX_CHARS:,} are read"
        )
    depth = 0
    for token in yaml.scan(text, Loader=_Loader):
        if isinstance(token, _OPENERS):
            depth += 1
            if depth > MAX_DEPTH:
                mark = token.start_mark
                return Issue(
                    mark.line + 1,
                    mark.column + 1,
                    f"the document nests deeper than {MAX_DEPTH} levels: not a process definition",
                )
        elif isinstance(token, _CLOSERS):
            depth -= 1
    return None


def load_yaml(text: str) -> tuple[Any, dict[Path_, Pos], list[Issue]]:
    """The data, the position of every value (by path) and the YAML-level issues."""
    positions: dict[Path_, Pos] = {}
    issues: list[Issue] = []
    try:
        too_big = _limits_issue(text)
        if too_big is not None:
            return None, positions, [too_big]
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, positions, [Issue(line, col, f"YAML: {err.problem or err.context}")]
    except yaml.YAMLError as err:
        return None, positions, [Issue(1, 1, f"YAML: {err}")]
    if root is None:
        return None, positions, [Issue(1, 1, "the file is empty: expected a process definition")]
    count = [0]
    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, path: Path_, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_NODES or depth > 100:
            raise _TooBig(node)
        positions.setdefault(path, _pos(node.start_mark, node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            constructor.flatten_mapping(node)
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    issues.append(
                        Issue(
                            *_lc(key_node), "a mapping key must be a plain name, not a collection"
                        )
                    )
                    continue
                key = constructor.construct_object(key_node)
                if not isinstance(key, str):
                    key = str(key)
                    issues.append(
                        Issue(
                            *_lc(key_node),
                            f"key {key_node.value!r} is read as {key} by YAML: quote it",
                        )
                    )
                if key in out:
                    issues.append(Issue(*_lc(key_node), f"duplicate key {key!r}"))
                positions[(*path, "@key", key)] = _pos(key_node.start_mark)
                out[key] = build(value_node, (*path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(n, (*path, i), depth + 1) for i, n in enumerate(node.value)]
        try:
            return constructor.construct_object(node)
        except yaml.YAMLError as err:
            issues.append(Issue(*_lc(node), f"YAML: {err}"))
            return None

    try:
        data = build(root, (), 0)
    except _TooBig as big:
        return None, positions, [Issue(*_lc(big.node), "the document is too large or deep")]
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as err:
        return None, positions, [Issue(1, 1, f"YAML: {err}")]
    return data, positions, issues


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _lc(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


# -- the whole check ----------------------------------------------------------------------------


def validate_text(
    text: str, file: str = "<definition>"
) -> tuple[ProcessDefinition | None, list[Issue]]:
    data, positions, issues = load_yaml(text)
    if data is None:
        issues = issues or [Issue(1, 1, "the document is null: expected a process definition")]
        return None, [_named(i, file) for i in issues]
    locate = _Locator(data, positions)
    if not isinstance(data, dict):
        issues.append(Issue(1, 1, "expected a mapping with name, version and steps"))
        return None, sorted(_named(i, file) for i in issues)
    try:
        definition = ProcessDefinition.model_validate(data)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            pos = locate.loc(e["loc"])
            where = ".".join(str(p) for p in e["loc"])
            issues.append(Issue(pos.line, pos.column, f"{where}: {_plain(e)}"))
        # every error, not only the first kind: check the meaning of the parts that could be read
        readable = _readable_parts(data)
        if readable is not None:
            checker = _Checker(readable[0], locate, readable[1])
            checker.run()
            issues.extend(checker.issues)
        return None, sorted(set(_named(i, file) for i in issues))
    checker = _Checker(definition, locate)
    checker.run()
    issues.extend(checker.issues)
    out = sorted(set(_named(i, file) for i in issues))
    return (definition if not out else None), out


def validate_file(path: str | Path) -> tuple[ProcessDefinition | None, list[Issue]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, [Issue(1, 1, f"cannot read the file: {err}", str(p))]
    return validate_text(text, str(p))


def load_definition(path: str | Path) -> ProcessDefinition:
    """The validated definition, or DefinitionInvalid carrying every issue."""
    definition, issues = validate_file(path)
    if definition is None:
        raise DefinitionInvalid(issues)
    return definition


def _named(issue: Issue, file: str) -> Issue:
    return Issue(issue.line, issue.column, issue.message, file)


def _plain(error: Any) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        return f"required field {error['loc'][-1]!r} is missing"
    if kind == "extra_forbidden":
        return f"unknown field {error['loc'][-1]!r}"
    return str(msg)


@dataclass
class _Partial:
    """What was left out of a definition with shape errors, so the meaning checks of the rest
    neither fail on it nor report it again."""

    indices: list[int] | None = None  # positions of the readable top-level steps
    dropped_steps: set[str] = field(default_factory=set)
    dropped_subprocesses: set[str] = field(default_factory=set)
    inputs_ok: bool = True


_STEP = TypeAdapter(Step)
_INPUTS = TypeAdapter(dict[str, InputField])


def _raw_ids(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("id"), str):
            yield value["id"]
        for v in value.values():
            yield from _raw_ids(v)
    elif isinstance(value, list):
        for v in value:
            yield from _raw_ids(v)


def _readable_parts(data: dict[str, Any]) -> tuple[ProcessDefinition, _Partial] | None:
    """The definition made of the top-level steps, inputs and subprocesses that are valid."""
    partial = _Partial(indices=[])
    steps: list[Any] = []
    raw_steps = data.get("steps")
    for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else []):
        try:
            steps.append(_STEP.validate_python(raw))
            assert partial.indices is not None
            partial.indices.append(i)
        except ValidationError:
            partial.dropped_steps.update(_raw_ids(raw))
    inputs: dict[str, InputField] = {}
    try:
        inputs = _INPUTS.validate_python(data.get("input") or {})
    except ValidationError:
        partial.inputs_ok = False
    subs: dict[str, SubprocessDefinition] = {}
    raw_subs = data.get("subprocesses")
    for name, raw in raw_subs.items() if isinstance(raw_subs, dict) else []:
        try:
            subs[str(name)] = SubprocessDefinition.model_validate(raw)
        except ValidationError:
            partial.dropped_subprocesses.add(str(name))
            partial.dropped_steps.update(_raw_ids(raw))
    if not steps and not subs:
        return None
    definition = ProcessDefinition.model_construct(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        input=inputs,
        steps=steps,
        output=data.get("output"),
        subprocesses=subs,
    )
    return definition, partial


class _Locator:
    def __init__(self, data: Any, positions: dict[Path_, Pos]) -> None:
        self.data = data
        self.positions = positions

    def loc(self, loc: Path_) -> Pos:
        """Position of a pydantic error location (union tags and aliases are skipped)."""
        node: Any = self.data
        path: Path_ = ()
        key_pos: Pos | None = None
        for part in loc:
            if isinstance(node, dict) and part in node:
                path, node = (*path, part), node[part]
            elif isinstance(node, dict) and isinstance(part, str) and part.rstrip("_") in node:
                path, node = (*path, part.rstrip("_")), node[part.rstrip("_")]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                path, node = (*path, part), node[part]
            else:
                continue
            key_pos = self.positions.get((*path[:-1], "@key", path[-1]))
        return key_pos or self.positions.get(path) or Pos(1, 1)

    def at(self, path: Path_, key: str | None = None) -> Pos:
        if key is not None:
            found = self.positions.get((*path, "@key", key))
            if found is not None:
                return found
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, Pos(1, 1))


# -- pass 3: meaning ----------------------------------------------------------------------------

Schema = tuple[dict[str, Any], dict[str, Any]]  # (fragment, $defs)


@functools.cache
def _schema_of(tp: Any) -> Schema:
    s = TypeAdapter(tp).json_schema()
    return s, s.get("$defs", {})


@dataclass
class _StepInfo:
    step: Any
    path: Path_
    frames: tuple[tuple[str, str], ...]  # blocks from the root to the step's block


class _Checker:
    def __init__(
        self, definition: ProcessDefinition, locate: _Locator, partial: _Partial | None = None
    ) -> None:
        self.d = definition
        self.locate = locate
        self.issues: list[Issue] = []
        # after shape errors: what could not be read is known to exist but not checked against
        self.partial = partial or _Partial()

    def error(self, path: Path_, message: str, key: str | None = None, offset: int = 0) -> None:
        pos = self.locate.at(path, key)
        column = pos.column
        if offset and pos.single_line and key is None:
            column += offset + (1 if pos.style in ("'", '"') else 0)
        self.issues.append(Issue(pos.line, column, message))

    def refuse_presets(self, step: Any, p: Path_, why: Callable[[str], str]) -> None:
        """An error at each of ``retry`` and ``timeout_seconds`` that ``step`` sets although it
        does not run with them, saying ``why(field)``."""
        for name in ("retry", "timeout_seconds"):
            if getattr(step, name) is not None:
                self.error((*p, name), why(name))

    def run(self) -> None:
        self.check_process(
            self.d.input, self.d.steps, self.d.output, ("steps",), "process", self.partial.indices
        )
        calls: dict[str, list[tuple[str, Path_]]] = {}
        for name, sub in self.d.subprocesses.items():
            self.check_process(
                sub.input, sub.steps, sub.output, ("subprocesses", name, "steps"), name
            )
            calls[name] = [
                (info.step.process, info.path)
                for info in self.infos.values()
                if isinstance(info.step, SubprocessStep)
            ]
        self.check_recursion(calls)

    def check_recursion(self, calls: dict[str, list[tuple[str, Path_]]]) -> None:
        """A subprocess that (through others) starts itself would start children forever."""
        for start in calls:
            seen: set[str] = set()
            todo = [start]
            while todo:
                current = todo.pop()
                for callee, path in calls.get(current, []):
                    if callee == start:
                        self.error(
                            (*path, "process"),
                            f"subprocess {start!r} starts itself (through {current!r}): "
                            "children would be started forever",
                        )
                    elif callee not in seen:
                        seen.add(callee)
                        todo.append(callee)

    # -- one process (the main one or a subprocess): its own step namespace --

    def check_process(
        self,
        inputs: dict[str, Any],
        steps: list[Step],
        output: Any,
        base: Path_,
        label: str,
        indices: list[int] | None = None,
    ) -> None:
        self.inputs = inputs
        self.infos: dict[str, _StepInfo] = {}
        self.collect(steps, base, (("", "steps"),), indices)
        self.edges: dict[tuple[tuple[str, str], ...], dict[str, set[str]]] = {}
        for info in self.infos.values():
            self.check_step(info)
        # block-level dependencies: cycles
        for frames, graph in self.edges.items():
            self.find_cycles(frames, graph)
        out_path = (*base[:-1], "output")
        self.check_value(output, out_path, (("", "steps"),), {}, None, label="output")

    def collect(
        self,
        steps: list[Step],
        path: Path_,
        frames: tuple[tuple[str, str], ...],
        indices: list[int] | None = None,
    ) -> None:
        for i, step in enumerate(steps):
            p = (*path, indices[i] if indices is not None else i)
            if step.id in self.infos:
                self.error((*p, "id"), f"duplicate step id {step.id!r}")
                continue
            self.infos[step.id] = _StepInfo(step, p, frames)
            for key, sub_path, block in self.children(step, p):
                self.collect(block, sub_path, (*frames, (step.id, key)))

    @staticmethod
    def children(step: Any, p: Path_) -> Iterator[tuple[str, Path_, list[Step]]]:
        if isinstance(step, ConditionStep):
            yield "then", (*p, "then"), step.then
            yield "else", (*p, "else"), step.else_
        elif isinstance(step, ParallelStep):
            for b, branch in enumerate(step.branches):
                yield f"branch:{branch.name}", (*p, "branches", b, "steps"), branch.steps
        elif isinstance(step, SwitchStep):
            for c, case in enumerate(step.cases):
                yield f"case:{c}", (*p, "cases", c, "steps"), case.steps
            yield "default", (*p, "default"), step.default
        elif isinstance(step, LoopStep):
            yield "body", (*p, "steps"), step.steps
        elif isinstance(step, ApprovalStep) and step.revise:
            yield "revise", (*p, "revise"), step.revise

    def loop_vars(self, frames: tuple[tuple[str, str], ...]) -> dict[str, Schema | None]:
        """Loop variables visible in a block (from enclosing loops)."""
        found: dict[str, Schema | None] = {}
        for container, key in frames:
            step = self.infos[container].step if container in self.infos else None
            if isinstance(step, LoopStep) and key == "body":
                found[step.as_] = self.item_type(step.for_each, self.infos[container])
            if isinstance(step, ApprovalStep) and key == "revise":
                found.update(
                    validate_governed.guard_vars(self, step.guards, _schema_of(ApprovalOutcome))
                )
        return found

    def item_type(self, expr: str | None, info: _StepInfo) -> Schema | None:
        if expr is None:
            return None
        whole = ex.whole_expression(expr)
        if whole is None:
            return None
        try:
            t = self.infer(ex.parse(whole), info.frames, self.loop_vars(info.frames), None)
        except ex.ExpressionError:
            return None
        if t is None:
            return None
        frag = _resolve(t)
        if frag is None or "array" not in (_types(frag[0], frag[1]) or set()):
            return None
        items = frag[0].get("items")
        return (items, frag[1]) if isinstance(items, dict) else None

    # -- one step --

    def check_step(self, info: _StepInfo) -> None:
        step, p, frames = info.step, info.path, info.frames
        scope = self.loop_vars(frames)
        if isinstance(step, GovernedActionStep):  # its fields see the item (for_each)
            scope = validate_governed.item_scope(self, step, info, scope)
            validate_governed.check(self, info, scope)
        if isinstance(step, AgentStep) and isinstance(step.agent, AgentThatActs):
            validate_agent.check(self, info)
        elif isinstance(step, AgentStep | ConnectorStep):
            table = catalog.AGENTS if isinstance(step, AgentStep) else catalog.CONNECTORS
            name = str(step.agent) if isinstance(step, AgentStep) else step.action
            key = "agent" if isinstance(step, AgentStep) else "action"
            action = table.get(name)
            if action is None:
                what = "agent task" if isinstance(step, AgentStep) else "connector action"
                self.error(
                    (*p, key),
                    f"unknown {what} {name!r}{nearest(name, table)} "
                    f"(known: {', '.join(sorted(table))})",
                )
            else:
                self.check_call(action.arguments, step.with_, (*p, "with"), info, scope)
                if action.sensitive and step.compensation is None and action.undo is None:
                    self.error(
                        p,
                        f"step {step.id!r} runs the sensitive action {name!r} and has no "
                        "compensation: add `compensation:` with the action that undoes it",
                        key="id",
                    )
        if step.compensation is not None:
            comp = catalog.CONNECTORS.get(step.compensation.action)
            cp = (*p, "compensation")
            if comp is None:
                self.error(
                    (*cp, "action"),
                    f"unknown connector action {step.compensation.action!r} in compensation"
                    f"{nearest(step.compensation.action, catalog.CONNECTORS)} "
                    f"(known: {', '.join(sorted(catalog.CONNECTORS))})",
                )
            else:
                self.check_call(comp.input, step.compensation.with_, (*cp, "with"), info, scope)
            self.check_value(step.compensation.summary, (*cp, "summary"), frames, scope, info)
        for i, need in enumerate(step.needs):
            other = self.infos.get(need)
            if other is None and need in self.partial.dropped_steps:
                continue
            if other is None:
                self.error(
                    (*p, "needs", i),
                    f"unknown step reference {need!r} in needs{nearest(need, self.infos)}",
                )
            elif other.frames != frames:
                self.error(
                    (*p, "needs", i), f"needs {need!r}: it is not in the same block as {step.id!r}"
                )
            else:
                self.edge(frames, need, step.id)
        self.check_value(step.summary, (*p, "summary"), frames, scope, info)
        if isinstance(step, PolicyStep):
            inner = dict(scope)
            if step.for_each is not None:
                self.check_value(step.for_each, (*p, "for_each"), frames, scope, info, "array")
                inner[step.as_] = self.item_type(step.for_each, info)
            self.check_value(step.input, (*p, "input"), frames, inner, info, "object")
            self.check_value(step.subject, (*p, "subject"), frames, inner, info, "string")
        elif isinstance(step, ApprovalStep):
            if step.guards is not None:
                self.check_guards(step, p)
                validate_governed.check_rounds(self, step, p)
                scope = {**scope, **validate_governed.guard_vars(self, step.guards)}
            revise = (*frames, (step.id, "revise"))
            self.check_value(step.revised, (*p, "revised"), revise, self.loop_vars(revise), info)
            self.check_value(step.request_summary, (*p, "request_summary"), frames, scope, info)
            self.check_value(step.payload, (*p, "payload"), frames, scope, info)
            self.check_value(step.obligations, (*p, "obligations"), frames, scope, info, "array")
            self.check_value(step.entries, (*p, "entries"), frames, scope, info, "array")
            self.check_value(step.findings, (*p, "findings"), frames, scope, info, "array")
            self.check_value(step.requested_by, (*p, "requested_by"), frames, scope, info)
            self.check_value(step.exclude, (*p, "exclude"), frames, scope, info)
            self.check_value(step.sla_seconds, (*p, "sla_seconds"), frames, scope, info, "number")
            self.check_value(step.round, (*p, "round"), frames, scope, info, "integer")
        elif isinstance(step, FailStep):
            self.check_value(step.message, (*p, "message"), frames, scope, info)
        elif isinstance(step, SetStep):
            for name, value in step.values.items():
                if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                    self.error(
                        (*p, "values"),
                        f"variable name {name!r} must be a lower-case name",
                        key=None,
                    )
                self.check_value(value, (*p, "values", name), frames, scope, info)
        elif isinstance(step, WaitEventStep):
            self.check_value(step.timeout, (*p, "timeout"), frames, scope, info, "number")
        elif isinstance(step, SubprocessStep):
            sub = self.d.subprocesses.get(step.process)
            if sub is None and step.process in self.partial.dropped_subprocesses:
                pass
            elif sub is None:
                known = ", ".join(sorted(self.d.subprocesses)) or "none defined"
                self.error(
                    (*p, "process"), f"unknown subprocess {step.process!r} (subprocesses: {known})"
                )
            else:
                self.check_inputs(sub, step, p)
            self.check_value(step.input, (*p, "input"), frames, scope, info)
        elif isinstance(step, ParallelStep):
            if step.mode == "n_of" and (step.n is None or step.n > len(step.branches)):
                self.error(
                    (*p, "n"),
                    f"mode n_of needs n between 1 and the number of branches "
                    f"({len(step.branches)})",
                    key="mode" if step.n is None else None,
                )
            if step.mode != "n_of" and step.n is not None:
                self.error((*p, "n"), "n is only meaningful with mode: n_of")
            names = [b.name for b in step.branches]
            for b, name in enumerate(names):
                if names.index(name) != b:
                    self.error((*p, "branches", b, "name"), f"duplicate branch name {name!r}")
        elif isinstance(step, ConditionStep):
            self.check_value(step.if_, (*p, "if"), frames, scope, info)
            if not step.then and not step.else_:
                self.error(p, f"condition {step.id!r} has neither then nor else steps", key="id")
        elif isinstance(step, SwitchStep):
            self.check_value(step.expression, (*p, "expression"), frames, scope, info)
            seen: list[Any] = []
            for c, case in enumerate(step.cases):
                if case.value in seen:
                    self.error((*p, "cases", c, "value"), f"duplicate case {case.value!r}")
                seen.append(case.value)
        elif isinstance(step, LoopStep):
            if (step.for_each is None) == (step.while_ is None):
                self.error(p, "a loop needs exactly one of for_each or while", key="id")
            body = (*frames, (step.id, "body"))
            inner = self.loop_vars(body)
            self.check_value(step.for_each, (*p, "for_each"), frames, scope, info, "array")
            self.check_value(step.while_, (*p, "while"), body, inner, info)
            self.check_value(step.collect, (*p, "collect"), body, inner, info)
            self.check_value(step.collect_if, (*p, "collect_if"), body, inner, info)

    def check_guards(self, step: ApprovalStep, p: Path_) -> None:
        """``guards`` names a governed step (type: governed, or an extension's governed action)
        of the same block."""
        target = self.infos.get(step.guards or "")
        if target is None:
            self.error(
                (*p, "guards"),
                f"unknown step {step.guards!r} in guards{nearest(step.guards or '', self.infos)}",
            )
            return
        action = (
            catalog.CONNECTORS.get(target.step.action)
            if isinstance(target.step, ConnectorStep)
            else None
        )
        if not isinstance(target.step, GovernedActionStep) and (
            action is None or not action.governed
        ):
            governed = sorted(n for n, a in catalog.CONNECTORS.items() if a.governed)
            self.error(
                (*p, "guards"),
                f"guards {step.guards!r}: that step runs no governed action: make it "
                "`type: governed`, or run an extension's governed action (governed actions: "
                f"{', '.join(governed) or 'none; extensions add them'})",
            )
        elif target.frames != self.infos[step.id].frames:
            self.error((*p, "guards"), f"guards {step.guards!r}: it is not in the same block")
        else:
            self.edge(target.frames, step.guards or "", step.id)

    def check_inputs(self, sub: SubprocessDefinition, step: SubprocessStep, p: Path_) -> None:
        for name in step.input:
            if name not in sub.input:
                self.error(
                    (*p, "input"),
                    f"subprocess {step.process!r} has no input {name!r} "
                    f"(inputs: {', '.join(sub.input) or 'none'})",
                    key=None,
                )
        for name, spec in sub.input.items():
            if spec.required and spec.default is None and name not in step.input:
                self.error((*p, "input"), f"subprocess {step.process!r} needs input {name!r}")

    def check_call(
        self,
        model: type[BaseModel],
        values: dict[str, Any],
        path: Path_,
        info: _StepInfo,
        scope: dict[str, Schema | None],
    ) -> None:
        schema, defs = _schema_of(model)
        self.check_object(schema, defs, values, path, info, scope, model.__name__)

    def check_object(
        self,
        schema: dict[str, Any],
        defs: dict[str, Any],
        values: dict[str, Any],
        path: Path_,
        info: _StepInfo,
        scope: dict[str, Schema | None],
        label: str,
    ) -> None:
        props = schema.get("properties", {})
        for name, value in values.items():
            if name not in props:
                self.error(
                    path,
                    f"{label} has no field {name!r}{nearest(name, props)} "
                    f"(fields: {', '.join(props)})",
                    key=name,
                )
                continue
            target = _resolve((props[name], defs))
            sub = (*path, name)
            if isinstance(value, dict) and not ex.is_template(value) and target is not None:
                frag, d = target
                if "properties" in frag:
                    self.check_object(frag, d, value, sub, info, scope, f"{label}.{name}")
                    continue
            if isinstance(value, list) and target is not None:
                items = _resolve((target[0].get("items", {}), target[1]))
                if items is not None and target[0].get("type") == "array":
                    for i, item in enumerate(value):  # each literal item against its model
                        where, what = (*sub, i), f"{label}.{name}[{i}]"
                        if isinstance(item, dict) and "properties" in items[0]:
                            self.check_object(items[0], items[1], item, where, info, scope, what)
                        else:
                            self.check_value(
                                item, where, info.frames, scope, info, None, items, what
                            )
                    continue
            self.check_value(value, sub, info.frames, scope, info, None, target, f"{label}.{name}")
        for name in schema.get("required", []):
            if name not in values and name != "version":
                self.error(path[:-1], f"{label} needs field {name!r}", key=path[-1])

    # -- values and expressions --

    def check_value(
        self,
        value: Any,
        path: Path_,
        frames: tuple[tuple[str, str], ...],
        scope: dict[str, Schema | None],
        info: _StepInfo | None,
        want: str | None = None,
        target: Schema | None = None,
        label: str = "",
    ) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                self.check_value(v, (*path, k), frames, scope, info)
            return
        if isinstance(value, list):
            for i, v in enumerate(value):
                self.check_value(v, (*path, i), frames, scope, info)
            return
        got: Schema | None
        if not ex.is_template(value):
            got = ({"type": _literal_type(value)}, {}) if _literal_type(value) else None
        else:
            try:
                ex.check_template(value)
            except ex.ExpressionError as err:
                self.error(path, f"expression: {err.message}", offset=err.offset)
                return
            got = ({"type": "string"}, {})
            whole = ex.whole_expression(value)
            for text, start in ex.pieces(value):
                node = ex.parse(text)
                t = self.infer(node, frames, scope, info, path, start)
                if whole is not None:
                    got = t
        if got is None:
            return
        expected = target or (({"type": want}, {}) if want else None)
        if expected is None:
            return
        have, need = _types(*got), _types(*expected)
        if have is None or need is None:
            return
        if "number" in need:
            need = need | {"integer"}
        if not have & need:
            what = label or path[-1]
            self.error(
                path,
                f"type mismatch: {what} expects {' or '.join(sorted(need - {'integer'} or need))}"
                f", but {value!r} is {' or '.join(sorted(have))}",
            )

    def infer(
        self,
        node: ex.Node,
        frames: tuple[tuple[str, str], ...],
        scope: dict[str, Schema | None],
        info: _StepInfo | None,
        path: Path_ | None = None,
        start: int = 0,
    ) -> Schema | None:
        """The schema of ``node``'s value (None when unknown); reports reference errors."""
        kind = node[0]
        if kind == "lit":
            t = _literal_type(node[1])
            return ({"type": t}, {}) if t else None
        if kind in ("var", "get"):
            static = ex.static_path(node)
            if static is None:
                self.infer(node[1], frames, scope, info, path, start)
                self.infer(node[2], frames, scope, info, path, start)
                return None
            if node[0] == "get" and node[2][0] not in ("lit",):
                self.infer(node[2], frames, scope, info, path, start)
            return self.resolve_path(static[0], static[1] + start, frames, scope, info, path)
        if kind in ("not", "and", "or", "cmp"):
            kids = [
                self.infer(child, frames, scope, info, path, start)
                for child in node[1:]
                if isinstance(child, tuple)
            ]
            if kind == "cmp" and node[1] not in ("==", "!=") and path is not None:
                self.check_ordering(node, kids, path, start)
            return ({"type": "boolean"}, {})
        if kind in ("arith", "neg"):
            types = [
                self.infer(c, frames, scope, info, path, start)
                for c in node[1:]
                if isinstance(c, tuple)
            ]
            if path is not None:
                self.check_arithmetic(node, types, path, start)
            if node[0] == "arith" and node[1] == "+":
                found = [_types(*t) for t in types if t is not None]
                if found and all(f is not None and f <= {"string"} for f in found):
                    return ({"type": "string"}, {})
                return None
            return ({"type": "number"}, {})
        if kind == "list":
            for c in node[1:]:
                self.infer(c, frames, scope, info, path, start)
            return ({"type": "array"}, {})
        if kind == "call":
            for c in node[2:]:
                self.infer(c, frames, scope, info, path, start)
            returns = ex.FUNCTIONS[node[1]].returns
            fn = ex.FUNCTIONS[node[1]]
            if not fn.min_args <= len(node) - 2 <= fn.max_args and path is not None:
                self.error(path, f"expression: {node[1]}() takes {fn.arity_text()}")
            return None if returns == "any" else ({"type": returns}, {})
        return None

    def check_ordering(
        self, node: ex.Node, kids: list[Schema | None], path: Path_, start: int
    ) -> None:
        """``<``, ``>``... compare two numbers or two strings: a list, an object, or a decimal
        (carried as a string) against a number fails at run time."""
        kinds = [_kind(t) for t in kids]
        if len(kinds) != 2 or kinds == ["decimal", "decimal"]:
            return  # two decimal strings compare as text: left to the author
        if "decimal" not in kinds and (None in kinds or kinds[0] == kinds[1]):
            return
        left, right = (_operand(n) for n in node[2:4])
        if "decimal" in kinds:
            which = left if kinds[0] == "decimal" else right
            self.error(
                path,
                f"expression: {which} is a decimal carried as a string: compare "
                f"number({which}) {node[1]} ...",
                offset=start,
            )
            return
        if kinds[0] in ("array", "object") or kinds[1] in ("array", "object"):
            self.error(
                path,
                f"expression: cannot compare {left} ({kinds[0]}) {node[1]} {right} ({kinds[1]})"
                + (": compare len(...) instead" if "array" in kinds else ""),
                offset=start,
            )
        elif {kinds[0], kinds[1]} == {"number", "string"}:
            self.error(
                path,
                f"expression: cannot compare {left} ({kinds[0]}) {node[1]} {right} ({kinds[1]})",
                offset=start,
            )

    def check_arithmetic(
        self, node: ex.Node, types: list[Schema | None], path: Path_, start: int
    ) -> None:
        """Arithmetic needs numbers: a decimal (a money amount, carried as a string), a list
        or an object is an error the run would hit (``+`` also joins two strings or lists)."""
        kinds = [_kind(t) for t in types]
        operands = [_operand(n) for n in node[1:] if isinstance(n, tuple)]
        op = node[1] if node[0] == "arith" else "-"
        joins = op == "+"  # + also joins two strings or two lists
        numeric = {"number", "decimal"}
        for i, (kind, text) in enumerate(zip(kinds, operands, strict=False)):
            others = [k for j, k in enumerate(kinds) if j != i and k is not None]
            if kind == "decimal" and (not joins or any(k in numeric for k in others)):
                self.error(
                    path,
                    f"expression: {text} is a decimal carried as a string: write "
                    f"number({text}) to compute with it",
                    offset=start,
                )
                return
            wrong = kind in ("array", "object", "boolean", "string")
            if joins:  # wrong only next to a known operand it cannot join with
                same = {"string", "decimal"} if kind == "string" else {kind}
                wrong = kind in ("object", "boolean") or (
                    kind in ("array", "string") and any(k not in same for k in others)
                )
            if wrong:
                self.error(
                    path,
                    f"expression: {op} needs numbers, but {text} is "
                    f"{'a list' if kind == 'array' else kind}",
                    offset=start,
                )
                return

    def resolve_path(
        self,
        parts: tuple[str, ...],
        offset: int,
        frames: tuple[tuple[str, str], ...],
        scope: dict[str, Schema | None],
        info: _StepInfo | None,
        path: Path_ | None,
    ) -> Schema | None:
        def err(message: str) -> None:
            if path is not None:
                self.error(path, message, offset=offset)

        root = parts[0]
        if root in scope:
            return _walk(scope[root], parts[1:], root, err)
        if root == "input":
            if len(parts) == 1:
                return ({"type": "object"}, {})
            name = parts[1]
            spec = self.inputs.get(name)
            if spec is None and not self.partial.inputs_ok:
                return None
            if spec is None:
                err(
                    f"undefined variable input.{name}: the process declares no input {name!r} "
                    f"(inputs: {', '.join(self.inputs) or 'none'})"
                )
                return None
            return _walk(({"type": spec.type}, {}), parts[2:], f"input.{name}", err)
        if root == "vars":
            assigned = {
                k for i in self.infos.values() if isinstance(i.step, SetStep) for k in i.step.values
            }
            if len(parts) >= 2 and parts[1] not in assigned:
                err(
                    f"undefined variable vars.{parts[1]}: no set step assigns {parts[1]!r} "
                    f"(assigned: {', '.join(sorted(assigned)) or 'none'})"
                )
            return None
        if root == "workflow":
            if len(parts) < 2 or parts[1] not in WORKFLOW_FIELDS:
                err(f"undefined variable {'.'.join(parts)} (workflow.id, workflow.run_id)")
                return None
            return (WORKFLOW_FIELDS[parts[1]], {})
        if root == "steps":
            if len(parts) < 2:
                err("steps must be followed by a step id: steps.<id>.output")
                return None
            target = self.infos.get(parts[1])
            if target is None and parts[1] in self.partial.dropped_steps:
                return None  # that step has shape errors (reported): nothing more to say
            if target is None:
                err(
                    f"unknown step reference {parts[1]!r}{nearest(parts[1], self.infos)} "
                    f"(steps: {', '.join(sorted(self.infos))})"
                )
                return None
            if len(parts) < 3 or parts[2] != "output":
                err(f"steps.{parts[1]} must be followed by .output")
                return None
            if info is not None:
                self.depend(info, target, frames, err)
            return _walk(self.output_type(target.step), parts[3:], f"steps.{parts[1]}.output", err)
        known = ", ".join([*ROOTS, *sorted(scope)])
        err(f"undefined variable {root!r} (known: {known})")
        return None

    def depend(
        self,
        user: _StepInfo,
        used: _StepInfo,
        frames: tuple[tuple[str, str], ...],
        err: Any,
    ) -> None:
        """Record that ``user`` (reading from within block ``frames``) needs ``used``."""
        if used.step.id == user.step.id and frames == user.frames:
            err(f"step {user.step.id!r} refers to its own output")
            return
        a, b = frames, used.frames
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        # the ancestor-or-self of each in the common block (frames[:k])
        user_anchor = a[k][0] if k < len(a) else user.step.id
        used_anchor = b[k][0] if k < len(b) else used.step.id
        if k < len(a) and k < len(b) and a[k][0] == b[k][0]:
            err(
                f"step {used.step.id!r} runs in another branch of {a[k][0]!r} than "
                f"{user.step.id!r}: it cannot be referred to from here"
            )
            return
        if user_anchor == used_anchor:
            if k == len(b):  # the step read is the one ``user`` runs inside
                err(
                    f"step {user.step.id!r} refers to {used.step.id!r}, which it runs inside: "
                    f"that output does not exist yet"
                )
            elif frames == user.frames:  # a step's own field reads a step nested in it
                err(f"step {user.step.id!r} refers to {used.step.id!r}, which runs inside it")
            return
        if frames != user.frames and user_anchor == user.step.id:
            return  # a loop's collect reading its body: runs after the body, no ordering edge
        self.edge(a[:k], used_anchor, user_anchor)

    def edge(self, frames: tuple[tuple[str, str], ...], before: str, after: str) -> None:
        self.edges.setdefault(frames, {}).setdefault(after, set()).add(before)

    def find_cycles(self, frames: tuple[tuple[str, str], ...], graph: dict[str, set[str]]) -> None:
        state: dict[str, int] = {}
        reported: set[frozenset[str]] = set()

        def visit(node: str, stack: list[str]) -> None:
            state[node] = 1
            stack.append(node)
            for dep in sorted(graph.get(node, ())):
                if state.get(dep) == 1:
                    cycle = stack[stack.index(dep) :]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        first = min(cycle, key=lambda s: self.infos[s].path)
                        loop = " -> ".join([*cycle, dep])
                        self.error(
                            self.infos[first].path,
                            f"cycle: {loop} (each step needs the output of the next)",
                            key="id",
                        )
                elif dep not in state:
                    visit(dep, stack)
            stack.pop()
            state[node] = 2

        for node in sorted(graph):
            if node not in state:
                visit(node, [])

    def output_type(self, step: Any) -> Schema | None:
        if isinstance(step, AgentStep) and isinstance(step.agent, AgentThatActs):
            return validate_agent.output_type(step.agent)
        if isinstance(step, AgentStep):
            action = catalog.AGENTS.get(str(step.agent))
            return _schema_of(action.output) if action else None
        if isinstance(step, ConnectorStep):
            action = catalog.CONNECTORS.get(step.action)
            return _schema_of(action.output) if action else None
        if isinstance(step, GovernedActionStep):  # each attempt's outcome
            action = catalog.CONNECTORS.get(step.action)
            if action is None:
                return None
            s, d = _schema_of(action.output)
            return ({"type": "array", "items": s}, d) if step.for_each else (s, d)
        if isinstance(step, PolicyStep):
            s, d = _schema_of(PolicyDecision)
            return ({"type": "array", "items": s}, d) if step.for_each else (s, d)
        if isinstance(step, ApprovalStep):
            return _schema_of(ApprovalOutcome)
        if isinstance(step, LoopStep):
            return ({"type": "array"}, {})
        if isinstance(step, FailStep):
            return ({"type": "null"}, {})
        return None


def _kind(t: Schema | None) -> str | None:
    """One word for a value's type, "decimal" for a money amount carried as a string (a
    pydantic Decimal: a number or a numeric string); None when unknown or mixed."""
    if t is None:
        return None
    frag = _resolve(t)
    if frag is not None:
        options = frag[0].get("anyOf")
        if isinstance(options, list):
            kinds = {o.get("type") for o in options if isinstance(o, dict)}
            if kinds == {"number", "string"}:
                return "decimal"
    found = _types(*t)
    if found is None or len(found - {"null"}) != 1:
        return None
    kind = next(iter(found - {"null"}))
    return "number" if kind == "integer" else kind


def _operand(node: Any) -> str:
    """An operand as the author wrote it (a path, a literal), for messages."""
    if isinstance(node, tuple):
        static = ex.static_path(node) if node[0] in ("var", "get") else None
        if static is not None:
            return ".".join(static[0]).replace(".[]", "[]")
        if node[0] == "lit":
            return json.dumps(node[1])
        if node[0] == "call":
            return f"{node[1]}(...)"
    return "the value"


def _literal_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _resolve(t: Schema | None) -> Schema | None:
    """Follow $ref; drop a null member of anyOf when exactly one other is left."""
    if t is None:
        return None
    frag, defs = t
    for _ in range(20):
        ref = frag.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            frag = defs.get(ref.rsplit("/", 1)[-1], {})
            continue
        options = frag.get("anyOf")
        if isinstance(options, list):
            real = [o for o in options if o.get("type") != "null"]
            if len(real) == 1:
                frag = real[0]
                continue
        break
    return frag, defs


def _types(frag: dict[str, Any], defs: dict[str, Any]) -> set[str] | None:
    resolved = _resolve((frag, defs))
    if resolved is None:
        return None
    frag = resolved[0]
    if "anyOf" in frag:
        out: set[str] = set()
        for option in frag["anyOf"]:
            t = _types(option, defs)
            if t is None:
                return None
            out |= t
        return out
    t = frag.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return set(t)
    if "properties" in frag:
        return {"object"}
    if "enum" in frag or "const" in frag:
        values = frag.get("enum", [frag.get("const")])
        return {_literal_type(v) or "object" for v in values}
    return None


def _walk(t: Schema | None, rest: tuple[str, ...], label: str, err: Any) -> Schema | None:
    for part in rest:
        resolved = _resolve(t)
        if resolved is None:
            return None
        frag, defs = resolved
        types = _types(frag, defs)
        if part == "[]":
            if types is not None and "array" not in types:
                err(f"type mismatch: {label} is {' or '.join(sorted(types))}, not a list")
                return None
            items = frag.get("items")
            t = (items, defs) if isinstance(items, dict) else None
            label = f"{label}[]"
            continue
        props = frag.get("properties")
        if isinstance(props, dict) and frag.get("additionalProperties") is not True:
            if part not in props:
                err(
                    f"undefined variable {label}.{part}: {label} has no field {part!r}"
                    f"{nearest(part, props)} (fields: {', '.join(props)})"
                )
                return None
            t = (props[part], defs)
        elif types is not None and "object" not in types:
            err(f"type mismatch: {label} is {' or '.join(sorted(types))}, it has no field {part!r}")
            return None
        else:
            t = None
        label = f"{label}.{part}"
    return t


def json_schema(catalogue: bool = True, extensions: bool = False) -> dict[str, Any]:
    """The JSON Schema of a process definition (for editors), generated from the models.

    ``catalogue``: the agent and action names are listed (editors complete them) and each
    one's ``with:`` fields are named (completed, unknown ones flagged; their types are not,
    since a value may be a ``${...}`` expression). ``extensions``: the names extensions
    registered too (baton/extensions.py), not only Baton's own."""
    schema = ProcessDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Baton process definition"
    if catalogue:
        defs = schema["$defs"]

        def chosen(table: dict[str, catalog.Action]) -> dict[str, catalog.Action]:
            return {n: a for n, a in sorted(table.items()) if extensions or a.extension is None}

        agents, connectors = chosen(catalog.AGENTS), chosen(catalog.CONNECTORS)
        decided = {n: a for n, a in validate_governed.decided_actions().items() if n in connectors}
        for step, key, table in (
            ("AgentStep", "agent", agents),
            ("ConnectorStep", "action", connectors),
            ("GovernedActionStep", "action", decided),
        ):
            defs[step]["properties"][key]["enum"] = list(table)
            defs[step]["allOf"] = [
                {
                    "if": {"properties": {key: {"const": name}}, "required": [key]},
                    "then": {"properties": {"with": _with_schema(action)}},
                }
                for name, action in table.items()
            ]
        defs["Compensation"]["properties"]["action"]["enum"] = list(connectors)
    return schema


def _with_schema(action: catalog.Action) -> dict[str, Any]:
    """The fields ``with:`` takes for ``action``: names and descriptions, no types."""
    model = action.arguments.model_json_schema()
    props = {
        name: {k: v for k, v in field.items() if k in ("description", "title")}
        for name, field in model.get("properties", {}).items()
    }
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if model.get("required"):
        out["required"] = model["required"]
    if action.description:
        out["description"] = action.description
    return out


def schema_text(catalogue: bool = True, extensions: bool = False) -> str:
    schema = json_schema(catalogue, extensions)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


__all__ = [
    "DefinitionInvalid",
    "Issue",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "Path_",
    "Pos",
    "ROOTS",
    "Schema",
    "WORKFLOW_FIELDS",
    "json_schema",
    "load_definition",
    "load_yaml",
    "schema_text",
    "validate_file",
    "validate_text",
]
