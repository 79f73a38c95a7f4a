"""The process interpreter: ONE workflow type (``BatonProcess``) that runs a validated process
definition (workflows/dsl/model.py) with the building blocks every hand-written process uses:
agent and connector activities with their presets (workflows/presets.py) through the kill-switch
gate, the policy gate, the approval gate, the saga, and the audit trail; and the agent loop
(workflows/agent_loop.py, through workflows/dsl/acting.py) for an agent step that acts, its
tool calls governed steps of this run.

The definition travels in the workflow input, so a running instance keeps the definition it
started with: editing the YAML file never changes the command sequence of an in-flight run.

Every YAML step that calls out is one activity whose summary starts with the step id. Steps of a
block run in declaration order, except that a step runs after every sibling it reads from or
``needs`` (the validator rejects cycles). Failure, deny, rejection or cancellation runs every
registered compensation, newest first (a parallel step's branches undo concurrently, each branch
newest first, before anything registered earlier), then the run fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from workflows import errors, visibility
from workflows.contracts import (
    AdjustingEntry,
    ApprovalGrant,
    ApprovalOutcome,
    ComplianceFinding,
    Obligations,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    digest,
)
from workflows.contracts.extensions import (
    CompensateActionInput,
    CompensateActionOutcome,
    GovernedActionInput,
    GovernedActionOutcome,
)
from workflows.contracts.tools import ToolPrincipal
from workflows.dsl import acting, catalog
from workflows.dsl import expressions as ex
from workflows.dsl.model import (
    AgentStep,
    AgentThatActs,
    ApprovalStep,
    ConditionStep,
    ConnectorStep,
    FailStep,
    GovernedActionStep,
    LoopStep,
    ParallelStep,
    PolicyStep,
    ProcessEvent,
    ProcessRunInput,
    ProcessRunResult,
    SetStep,
    Step,
    StepBase,
    SubprocessStep,
    SwitchStep,
    WaitEventStep,
    bind_inputs,
)
from workflows.governed import (
    AMEND_OR_REVISE,
    ApprovalRound,
    Compensation,
    GovernedStep,
    GuardedRounds,
    amend_entries,
    fail_if_denied,
    grant,
    risk_of,
)
from workflows.kill_switch_gate import NamedActivity
from workflows.presets import PRESETS, ActivityKind
from workflows.process_base import GovernedProcess, set_search_attributes
from workflows.saga import Saga

PROCESS_WORKFLOW = "BatonProcess"
EVENT_SIGNAL = "dsl_event"
#: failure types of the interpreter itself
DEFINITION_ERROR = errors.DEFINITION_ERROR
INPUT_INVALID = errors.INPUT_INVALID
LOOP_LIMIT = errors.LOOP_LIMIT
EVENT_TIMEOUT = errors.EVENT_TIMEOUT
BRANCHES_FAILED = errors.BRANCHES_FAILED


def definition_error(step: str, message: str) -> ApplicationError:
    return errors.failure(DEFINITION_ERROR, f"step {step!r}: {message}")


def typed(step: str, tp: Any, value: Any, what: str) -> Any:
    """``value`` read as ``tp``; a definition error naming the step and ``what`` otherwise."""
    try:
        return TypeAdapter(tp).validate_python(value)
    except ValidationError as err:
        raise definition_error(step, f"{what}: {err.errors()[0]['msg']}") from None


class _Block:
    """Run order of a block's steps: declaration order, after what each reads or needs."""

    @staticmethod
    def order(steps: list[Step]) -> list[Step]:
        owner: dict[str, str] = {}
        for s in steps:
            for sid in _subtree_ids(s):
                owner[sid] = s.id
        deps: dict[str, set[str]] = {s.id: set(s.needs) for s in steps}
        for s in steps:  # an approval runs after the governed step it guards
            guards = getattr(s, "guards", None)
            if guards is not None and guards in deps:
                deps[s.id].add(guards)
        for s in steps:
            for ref in _references(s):
                top = owner.get(ref)
                if top is not None and top != s.id:
                    deps[s.id].add(top)
        done: set[str] = set()
        out: list[Step] = []
        while len(out) < len(steps):
            ready = [s for s in steps if s.id not in done and deps[s.id] <= done]
            if not ready:
                stuck = [s.id for s in steps if s.id not in done]
                raise definition_error(stuck[0], f"cycle among steps {', '.join(stuck)}")
            out.append(ready[0])
            done.add(ready[0].id)
        return out


def _subtree_ids(step: Any) -> list[str]:
    ids = [step.id]
    for block in _blocks(step):
        for s in block:
            ids.extend(_subtree_ids(s))
    return ids


def _blocks(step: Any) -> list[list[Step]]:
    if isinstance(step, ConditionStep):
        return [step.then, step.else_]
    if isinstance(step, ParallelStep):
        return [b.steps for b in step.branches]
    if isinstance(step, SwitchStep):
        return [*(c.steps for c in step.cases), step.default]
    if isinstance(step, LoopStep):
        return [step.steps]
    if isinstance(step, ApprovalStep):
        return [step.revise]
    return []


def _references(step: Any) -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif ex.is_template(value):
            for text, _ in ex.pieces(value):
                try:
                    node = ex.parse(text)
                except ex.ExpressionError:
                    continue
                for path, _offset in ex.variables(node):
                    if len(path) > 1 and path[0] == "steps":
                        found.add(path[1])

    walk(step.model_dump(by_alias=True))
    return found


@workflow.defn(name=PROCESS_WORKFLOW)
class ProcessWorkflow(GovernedProcess):
    @workflow.init
    def __init__(self, inp: ProcessRunInput) -> None:
        self.govern(inp, inp.definition.name)
        self.name = inp.definition.name + (f".{inp.subprocess}" if inp.subprocess else "")
        self.registered: set[str] = set()  # digests of registered compensations
        self.events: dict[str, list[Any]] = {}
        self.children: dict[str, int] = {}  # subprocess step id -> children started
        #: governed steps by step id, for the approval step that guards them
        self.guarded: dict[str, tuple[GovernedStep[Any], GovernedActionInput]] = {}
        #: governed steps (type: governed) by step id: the step of an item, the items held
        self.held_items: dict[str, tuple[Any, Any, list[Any]]] = {}

    @workflow.run
    async def run(self, inp: ProcessRunInput) -> ProcessRunResult:
        d = inp.definition
        if inp.subprocess is not None:
            sub = d.subprocesses.get(inp.subprocess)
            if sub is None:
                raise errors.failure(DEFINITION_ERROR, f"no subprocess {inp.subprocess!r}")
            spec, steps, output = sub.input, sub.steps, sub.output
        else:
            spec, steps, output = d.input, d.steps, d.output
        try:
            values = bind_inputs(spec, inp.input)
        except ValueError as err:
            raise errors.failure(INPUT_INVALID, str(err)) from None
        info = workflow.info()
        attrs: list[Any] = [
            visibility.PROCESS.value_set(self.name),
            # the process version the agents run with (canaries), else the definition's revision
            visibility.VERSION.value_set(
                values["version"] if isinstance(values.get("version"), str) else d.version
            ),
            visibility.APPROVAL_STATE.value_set("none"),
            visibility.COST_USD.value_set(0.0),
        ]
        if isinstance(values.get("tenant"), str):
            attrs.append(visibility.TENANT.value_set(values["tenant"]))
        set_search_attributes(attrs)
        scope: dict[str, Any] = {
            "input": values,
            "steps": {},
            "vars": {},
            "workflow": {"id": info.workflow_id, "run_id": info.run_id},
        }
        prefix = d.audit_prefix
        self.audit.record(
            inp.requested_by,
            f"{prefix}.started",
            detail={"process": self.name, "version": d.version, "source": inp.source},
        )
        result = await self._undoing_on_failure(
            self._body(steps, output, scope), event=prefix, what="process"
        )
        self.stage = "done"
        self.audit.record(
            "baton:workflow",
            f"{prefix}.completed",
            detail={"tokens": self.cost.tokens, "cost_usd": self.cost.cost_usd},
        )
        await self.audit.flush()
        return ProcessRunResult(name=self.name, version=d.version, output=result)

    async def _body(self, steps: list[Step], output: Any, scope: dict[str, Any]) -> Any:
        await self.block(steps, scope, self.saga)
        return self.render(output, scope, "output")

    # -- blocks and steps ---------------------------------------------------------------------

    async def block(self, steps: list[Step], scope: dict[str, Any], saga: Saga) -> None:
        for step in _Block.order(steps):
            self.stage = step.id
            try:
                out = await self.step(step, scope, saga)
            except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as err:
                # a definition that passed validation but cannot run on this data (a pydantic
                # ValidationError is a ValueError): fail the run, never retry the task forever
                raise definition_error(step.id, f"{type(err).__name__}: {err}") from None
            scope["steps"][step.id] = {"output": out}

    async def step(self, step: Any, scope: dict[str, Any], saga: Saga) -> Any:
        if isinstance(step, GovernedActionStep):  # its undo is registered per item, per key
            return await self.governed_step(step, scope, saga)
        if step.compensation is not None:
            self.register(step, scope, saga)
        if isinstance(step, AgentStep):
            if isinstance(step.agent, AgentThatActs):
                return await self.agent_that_acts(step, step.agent, scope)
            return await self.call_action(step, "agent", catalog.AGENTS, step.agent, scope)
        if isinstance(step, ConnectorStep):
            action = catalog.CONNECTORS.get(step.action)
            if action is not None and action.governed:
                return await self.governed_action(step, action, scope, saga)
            return await self.call_action(step, "connector", catalog.CONNECTORS, step.action, scope)
        if isinstance(step, PolicyStep):
            return await self.policy(step, scope)
        if isinstance(step, ApprovalStep):
            return await self.approval(step, scope, saga)
        if isinstance(step, SetStep):
            values = {k: self.render(v, scope, step.id) for k, v in step.values.items()}
            scope["vars"].update(values)
            return values
        if isinstance(step, FailStep):
            raise errors.failure(step.error, str(self.render(step.message, scope, step.id)))
        if isinstance(step, WaitEventStep):
            return await self.wait_event(step, scope)
        if isinstance(step, SubprocessStep):
            return await self.subprocess(step, scope)
        if isinstance(step, ParallelStep):
            return await self.parallel(step, scope, saga)
        if isinstance(step, ConditionStep):
            chosen = step.then if ex.truthy(self.render(step.if_, scope, step.id)) else step.else_
            await self.block(chosen, scope, saga)
            return None
        if isinstance(step, SwitchStep):
            value = self.render(step.expression, scope, step.id)
            for case in step.cases:
                if case.value == value and type(case.value) is type(value):
                    await self.block(case.steps, scope, saga)
                    return value
            await self.block(step.default, scope, saga)
            return value
        if isinstance(step, LoopStep):
            return await self.loop(step, scope, saga)
        raise definition_error(getattr(step, "id", "?"), "unknown step type")

    def render(self, value: Any, scope: dict[str, Any], where: str) -> Any:
        try:
            return ex.render(value, scope)
        except ex.ExpressionError as err:
            raise definition_error(where, f"expression: {err.message}") from None

    def summary(self, step: StepBase, scope: dict[str, Any], default: str) -> str:
        text = self.render(step.summary, scope, step.id) if step.summary else default
        return f"{step.id}: {text}"[:200]

    def sla(self, step: ApprovalStep, scope: dict[str, Any]) -> float:
        """An approval step's ``sla_seconds``, rendered: a positive number of seconds."""
        sla = self.render(step.sla_seconds, scope, step.id)
        if isinstance(sla, bool) or not isinstance(sla, int | float) or sla <= 0:
            raise definition_error(step.id, f"sla_seconds must be a positive number, got {sla!r}")
        return float(sla)

    # -- an agent that acts ---------------------------------------------------------------------

    async def agent_that_acts(
        self, step: AgentStep, spec: AgentThatActs, scope: dict[str, Any]
    ) -> Any:
        """The agent loop every process uses (workflows/agent_loop.py), its tool calls governed
        steps of this run; the output: the answer and each call with its verdict."""
        try:
            declared = acting.declared_step(spec, step.id)
        except ValueError as err:
            raise definition_error(step.id, str(err)) from None
        task = self.render(spec.input, scope, step.id)
        if not isinstance(task, dict):
            raise definition_error(step.id, f"agent input must be an object, not {task!r}")
        tenant = scope["input"].get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise definition_error(step.id, "an agent that acts needs the input 'tenant'")
        self.tenant = tenant
        principal = ToolPrincipal(
            process=self.name,
            tenant=tenant,
            agent=declared.name,
            requested_by=self.inp.requested_by,
        )
        return await acting.run_agent(self, declared, step.id, task, principal)

    def _budget_facts(self) -> dict[str, Any]:
        return {"tenant": getattr(self, "tenant", ""), "subject": workflow.info().workflow_id}

    # -- activities ---------------------------------------------------------------------------

    async def call_action(
        self,
        step: AgentStep | ConnectorStep,
        kind: ActivityKind,
        table: dict[str, catalog.Action],
        name: str,
        scope: dict[str, Any],
    ) -> Any:
        action = table.get(name)
        if action is None:
            raise definition_error(step.id, f"unknown {kind} {name!r}")
        args = self.render(step.with_, scope, step.id)
        if kind == "agent" and "version" in action.input.model_fields:
            version = scope["input"].get("version")
            if isinstance(version, str) and "version" not in args:
                args["version"] = version
        arg = self.model(action.input, args, step.id)
        summary = self.summary(step, scope, f"{name}: {action.description}")
        result = await self.execute(kind, action, arg, summary, step)
        if kind == "agent" and hasattr(result, "usage"):
            self.cost.add(result.usage)
        return TypeAdapter(action.output).dump_python(result, mode="json")

    @staticmethod
    def model(model: type[BaseModel], args: Any, step_id: str) -> BaseModel:
        try:
            return model.model_validate(args)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in err.errors(include_url=False)
            )
            raise errors.failure(
                INPUT_INVALID,
                f"step {step_id!r}: input for {model.__name__} is invalid: {problems}",
            ) from None

    async def execute(
        self,
        kind: ActivityKind,
        action: catalog.Action,
        arg: BaseModel,
        summary: str,
        step: StepBase | None,
    ) -> Any:
        """One activity with its kind's preset and the step's overrides; agent and connector
        steps hold while the kill switch stops them (workflows/kill_switch_gate.py)."""
        preset = PRESETS[kind]
        retry: RetryPolicy = preset.retry
        timeout = preset.start_to_close
        if step is not None and step.retry is not None:
            o = step.retry
            changes: dict[str, Any] = {}
            if o.maximum_attempts is not None:
                changes["maximum_attempts"] = o.maximum_attempts
            if o.initial_interval_seconds is not None:
                changes["initial_interval"] = timedelta(seconds=o.initial_interval_seconds)
            if o.maximum_interval_seconds is not None:
                changes["maximum_interval"] = timedelta(seconds=o.maximum_interval_seconds)
            if o.backoff_coefficient is not None:
                changes["backoff_coefficient"] = o.backoff_coefficient
            retry = dataclasses.replace(retry, **changes)
        if step is not None and step.timeout_seconds is not None:
            timeout = timedelta(seconds=step.timeout_seconds)

        def call() -> Awaitable[Any]:
            return workflow.execute_activity(
                action.activity,
                arg,
                start_to_close_timeout=timeout,
                heartbeat_timeout=preset.heartbeat,
                retry_policy=retry,
                summary=summary,
                result_type=action.output,
            )

        if kind in ("agent", "connector"):
            return await self.kill_switch.run(summary, call)
        return await call()

    def register(self, step: Any, scope: dict[str, Any], saga: Saga) -> None:
        """Register the step's undo BEFORE it runs (its input is rendered now). The same undo
        (same action and input) is registered once: running it twice would undo twice."""
        comp = step.compensation
        action = catalog.CONNECTORS.get(comp.action)
        if action is None:
            raise definition_error(step.id, f"unknown compensation action {comp.action!r}")
        arg = self.model(action.input, self.render(comp.with_, scope, step.id), step.id)
        key = digest({"action": comp.action, "input": arg.model_dump(mode="json")})
        if key in self.registered:
            return
        self.registered.add(key)
        text = self.render(comp.summary, scope, step.id) if comp.summary else comp.action
        summary = f"{step.id}: compensation: {text}"[:200]
        self.undo(summary, lambda: self.execute("compensation", action, arg, summary, None), saga)

    # -- governed extension actions -----------------------------------------------------------

    async def governed_action(
        self, step: ConnectorStep, action: catalog.Action, scope: dict[str, Any], saga: Saga
    ) -> Any:
        """An extension's governed action as a GovernedStep: its undo registered first (once
        per idempotency key), policy deciding in the action's own transaction; a deny fails the
        run, a require_approval leaves the step held for the approval step that guards it."""
        assert action.args is not None
        args = self.model(action.args, self.render(step.with_, scope, step.id), step.id)
        dumped = args.model_dump(mode="json")
        wid = workflow.info().workflow_id
        key = f"{wid}/{step.id}/{digest({'action': step.action, 'args': dumped})[:16]}"
        values = scope["input"]
        inp = GovernedActionInput(
            action=step.action,
            args=dumped,
            tenant=str(values.get("tenant") or ""),
            requested_by=self.inp.requested_by,
            idempotency_key=key,
        )
        if action.undo is not None and step.compensation is None and key not in self.registered:
            self.registered.add(key)
            undo = CompensateActionInput(
                action=step.action, original_key=key, reason=f"{self.name} undone"
            )
            text = f"{step.id}: compensation: undo {step.action}"[:200]
            named = NamedActivity(action.undo, CompensateActionOutcome)
            self.undo(
                text,
                lambda: self.kill_switch.step("compensation", named, undo, text),
                saga,
            )
        governed = GovernedStep[GovernedActionOutcome](
            what=f"{step.action} (step {step.id})",
            activity=NamedActivity(action.activity, GovernedActionOutcome),
            arg=inp,
            summary=self.summary(step, scope, f"{step.action} (policy {action.policy})"),
            key=key,
            subject=step.id,
        )
        self.guarded[step.id] = (governed, inp)
        outcome = await self.act(governed)
        if outcome is None:  # policy wants a human: the guarding approval step asks
            return {"decision": self.held[step.id].model_dump(mode="json"), "result": None}
        return outcome.model_dump(mode="json")

    async def guarded_approval(self, step: ApprovalStep, scope: dict[str, Any]) -> Any:
        """The approval of a governed step: the request is built from the decision policy took
        on it (obligations, reasons), bound to the digest of the action and its arguments; on
        approval the action runs again carrying the grant (policy re-checks it) and the guarded
        step's output becomes what it did. Rejected: ApprovalRejected; expired:
        ApprovalExpired (the run fails and its compensations run)."""
        assert step.guards is not None
        found = self.guarded.get(step.guards)
        if found is None:
            raise definition_error(step.id, f"guards {step.guards!r}: that step has not run")
        governed, inp = found
        decision = self.held.pop(step.guards, None)
        if decision is None:  # policy allowed it: nobody needs to be asked
            return {"outcome": "not_needed"}
        summary = (
            str(self.render(step.request_summary, scope, step.id))
            if step.request_summary
            else f"{inp.action} {inp.args}"[:300]
        )
        sla = self.sla(step, scope)
        requested_by = (
            str(self.render(step.requested_by, scope, step.id))
            if step.requested_by
            else inp.requested_by
        )
        outcome = await self.approve(
            ApprovalRound(
                action=inp.action,
                payload={"action": inp.action, "args": inp.args},
                action_payload=inp.args,
                summary=summary,
                obligations=decision.obligations,
                policy_reasons=decision.reasons,
                requested_by=requested_by,
                excluded=sorted({requested_by, *self.render(step.exclude, scope, step.id)}),
                sla_seconds=sla,
                risk=risk_of,
                waiting=f"{step.id}: waiting for approval of {step.guards}",
                fail_safe="everything done is undone",
            )
        )
        approved = GovernedStep[GovernedActionOutcome](
            what=governed.what,
            activity=governed.activity,
            arg=inp.model_copy(update={"approval": grant(outcome)}),
            summary=f"{governed.summary} (approved)"[:200],
            key=governed.key,
            subject=governed.subject,
            grant=grant(outcome),
            carries_audit=True,
        )
        done = await self.act(approved)
        assert done is not None  # a grant that still needs approval failed in act()
        scope["steps"][step.guards] = {"output": done.model_dump(mode="json")}
        return outcome.model_dump(mode="json")

    # -- governed steps (type: governed) and the approval rounds that guard them ---------------

    async def governed_step(
        self, step: GovernedActionStep, scope: dict[str, Any], saga: Saga
    ) -> Any:
        """A connector action that asks policy in its own transaction, as the GovernedStep a
        hand-written process runs (workflows/governed.py: ``act``): once, or once per item of
        ``for_each``. Output: each attempt's outcome (its ``decision``); the items policy held
        back wait for the approval step that guards this step."""
        action = catalog.CONNECTORS.get(step.action)
        output = getattr(action.output, "model_fields", {}) if action is not None else {}
        if action is None or action.governed or "decision" not in output:
            raise definition_error(step.id, f"{step.action!r} is no action that asks policy")
        items: list[Any] = [None]
        if step.for_each is not None:
            items = self.render(step.for_each, scope, step.id)
            if not isinstance(items, list):
                raise definition_error(step.id, "for_each did not give a list")

        def step_of(item: Any, grant_: ApprovalGrant | None, by: str | None) -> GovernedStep[Any]:
            return self.governed_attempt(step, action, scope, saga, item, grant_, by)

        def subject_of(item: Any) -> str:
            inner = scope if step.for_each is None else {**scope, step.as_: item}
            return str(self.render(step.subject, inner, step.id)) if step.subject else step.id

        outputs, held = [], []
        for item in items:
            attempt = step_of(item, None, None)
            outcome = await self.act(attempt)
            if outcome is None:
                held.append(item)
                outputs.append({"decision": self.held[attempt.subject].model_dump(mode="json")})
            else:
                outputs.append(outcome.model_dump(mode="json"))
        self.held_items[step.id] = (step_of, subject_of, held)
        return outputs if step.for_each is not None else outputs[0]

    def governed_attempt(
        self,
        step: GovernedActionStep,
        action: catalog.Action,
        scope: dict[str, Any],
        saga: Saga,
        item: Any,
        grant_: ApprovalGrant | None,
        amended_by: str | None,
    ) -> GovernedStep[Any]:
        """One attempt of a governed step on ``item``: its input rendered (carrying the
        approval and who amended the item, when the action's input has those fields), its
        undo rendered the same way."""
        inner = scope if step.for_each is None else {**scope, step.as_: item}
        args = self.render(step.with_, inner, step.id)
        fields = action.input.model_fields
        if grant_ is not None and "approval" in fields:
            args["approval"] = grant_.model_dump(mode="json")
        if amended_by is not None and "amended_by" in fields:
            args["amended_by"] = amended_by
        arg = self.model(action.input, args, step.id)
        subject = str(self.render(step.subject, inner, step.id)) if step.subject else step.id
        key = str(getattr(arg, "idempotency_key", "") or "")
        if not key:
            dumped = arg.model_dump(mode="json", exclude={"approval", "amended_by"})
            key = f"{workflow.info().workflow_id}/{step.id}/{digest(dumped)[:16]}"
        undo = None
        if step.compensation is not None:
            comp = step.compensation
            comp_action = catalog.CONNECTORS.get(comp.action)
            if comp_action is None:
                raise definition_error(step.id, f"unknown compensation action {comp.action!r}")
            comp_arg = self.model(
                comp_action.input, self.render(comp.with_, inner, step.id), step.id
            )
            text = self.render(comp.summary, inner, step.id) if comp.summary else comp.action
            undo = Compensation(
                f"{step.id}: compensation: {text}"[:200],
                NamedActivity(comp_action.activity, comp_action.output),
                comp_arg,
                f"{step.id}: compensation: {text}"[:200],
            )
        summary = self.summary(step, inner, f"{step.action} {subject}")
        return GovernedStep[Any](
            what=f"{step.action} {subject} (step {step.id})",
            activity=NamedActivity(action.activity, action.output),
            arg=arg,
            summary=summary if grant_ is None else f"{summary} (approved)"[:200],
            key=key,
            subject=subject,
            undo=undo,
            grant=grant_,
            carries_audit=grant_ is not None and "audit_events" in fields,
            saga=saga,
        )

    async def guarded_rounds(self, step: ApprovalStep, scope: dict[str, Any], saga: Saga) -> Any:
        """The approval rounds guarding a governed step (workflows/governed.py: govern_each):
        its held items go to one request per round, built from policy's decisions on them
        and bound to the digest of the items; approved, each runs again with the approval;
        amended (``entries``) or revised (``revise``), through policy again."""
        assert step.guards is not None
        step_of, subject_of, held = self.held_items.pop(step.guards)
        if not held:  # policy allowed every item: nobody needs to be asked
            return {"outcome": "not_needed"}

        def render(value: Any, items: list[Any]) -> Any:
            return self.render(value, {**scope, "held": items}, step.id)

        def entries(items: list[Any]) -> list[AdjustingEntry]:
            return typed(step.id, list[AdjustingEntry], render(step.entries, items), "entries")  # type: ignore[no-any-return]

        def amend(items: list[Any], outcome: ApprovalOutcome, by: dict[str, str]) -> list[Any]:
            changed = amend_entries(
                typed(step.id, list[AdjustingEntry], items, "amended items"), outcome, by
            )
            return [e.model_dump(mode="json") for e in changed]

        async def revise(items: list[Any], outcome: ApprovalOutcome) -> list[Any]:
            inner = {**scope, "held": items, "approval": outcome.model_dump(mode="json")}
            await self.block(step.revise, inner, saga)
            revised = self.render(step.revised, inner, step.id)
            if not isinstance(revised, list):
                raise definition_error(step.id, f"revised must give a list, not {revised!r}")
            return revised

        sla = self.sla(step, scope)
        findings: list[ComplianceFinding] = []
        if step.findings is not None:
            raw = self.render(step.findings, scope, step.id)
            findings = typed(step.id, list[ComplianceFinding], raw, "findings")
        requested_by = self.inp.requested_by
        if step.requested_by:
            requested_by = str(self.render(step.requested_by, scope, step.id))
        settles = AMEND_OR_REVISE - ({"amended"} if step.entries is None else set())
        rounds = GuardedRounds(
            action=step.action or f"{step.guards}",
            summary=lambda items, _: (
                str(render(step.request_summary, items))
                if step.request_summary
                else f"{step.guards}: {len(items)} held back by policy"
            ),
            excluded=list(self.render(step.exclude, scope, step.id)),
            findings=findings,
            entries=entries if step.entries is not None else None,
            max_rounds=step.max_rounds or 5,
            fail_safe="everything done is undone",
            settles=settles - ({"changes_requested"} if not step.revise else set()),
            more={
                "requested_by": requested_by,
                "sla_seconds": sla,
                "waiting": f"{step.id}: waiting for approval of {step.guards}",
            },
        )
        outcome = await self.govern_each(
            held, step_of, rounds, revise, subject=subject_of, amend=amend, held=True
        )
        return outcome.model_dump(mode="json") if outcome else {"outcome": "not_needed"}

    # -- policy gate and approval ---------------------------------------------------------------

    async def policy(self, step: PolicyStep, scope: dict[str, Any]) -> Any:
        wid = workflow.info().workflow_id
        items: list[Any] = [None]
        if step.for_each is not None:
            items = self.render(step.for_each, scope, step.id)
            if not isinstance(items, list):
                raise definition_error(step.id, "for_each did not give a list")
        queries = []
        for item in items:
            inner = scope if step.for_each is None else {**scope, step.as_: item}
            doc = self.render(step.input, inner, step.id)
            if not isinstance(doc, dict):
                raise definition_error(step.id, "policy input must be an object")
            subject = self.render(step.subject, inner, step.id)
            queries.append(
                PolicyQuery(policy=step.policy, input=doc, subject=str(subject), workflow_id=wid)
            )
        summary = self.summary(step, scope, f"policy {step.policy}: {len(queries)} decision(s)")
        action = catalog.Action("evaluate_policies", PolicyBatch, list[PolicyDecision])
        decisions: list[PolicyDecision] = await self.execute(
            "policy", action, PolicyBatch(queries=queries), summary, step
        )
        if step.on_deny == "fail":
            fail_if_denied(decisions)
        dumped = [d.model_dump(mode="json") for d in decisions]
        return dumped if step.for_each is not None else dumped[0]

    async def approval(
        self, step: ApprovalStep, scope: dict[str, Any], saga: Saga | None = None
    ) -> Any:
        if step.guards is not None and step.guards in self.held_items:
            return await self.guarded_rounds(step, scope, saga or self.saga)
        if step.guards is not None:
            return await self.guarded_approval(step, scope)
        assert step.action is not None and step.requested_by is not None  # the model checks

        raw = self.render(step.obligations, scope, step.id)
        obligations = typed(step.id, list[Obligations], raw, "obligations")
        if not any(o.required_approvals for o in obligations):
            raise definition_error(step.id, "the obligations name no required approvals")
        entries: list[AdjustingEntry] = []
        if step.entries is not None:
            raw = self.render(step.entries, scope, step.id)
            entries = typed(step.id, list[AdjustingEntry], raw, "entries")
        findings: list[ComplianceFinding] = []
        if step.findings is not None:
            raw = self.render(step.findings, scope, step.id)
            findings = typed(step.id, list[ComplianceFinding], raw, "findings")
        payload = self.render(step.payload, scope, step.id)
        sla = self.sla(step, scope)
        outcome = await self.approve(
            ApprovalRound(
                action=step.action,
                payload=payload,
                action_payload=payload,
                summary=str(self.render(step.request_summary, scope, step.id)),
                obligations=obligations,
                requested_by=str(self.render(step.requested_by, scope, step.id)),
                excluded=sorted(set(self.render(step.exclude, scope, step.id))),
                sla_seconds=sla,
                risk=risk_of,
                waiting=f"{step.id}: waiting for approval",
                settles=frozenset({"approved", "amended", "changes_requested"}),
                fail_safe="everything done is undone",
                fields={
                    "entries": entries,
                    "total_amount": sum((abs(e.amount) for e in entries), Decimal("0")),
                    "compliance_findings": findings,
                    "round": self.render(step.round, scope, step.id),
                },
            )
        )
        return outcome.model_dump(mode="json")

    # -- events, subprocesses, parallel, loops -------------------------------------------------

    async def wait_event(self, step: WaitEventStep, scope: dict[str, Any]) -> Any:
        seconds = self.render(step.timeout, scope, step.id)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise definition_error(step.id, f"timeout must be a positive number, not {seconds!r}")
        self.stage = f"{step.id}: waiting for event {step.event}"
        workflow.set_current_details(
            f"**Waiting for event** `{step.event}` (step `{step.id}`, up to {seconds} s): "
            f"signal `{EVENT_SIGNAL}` with name `{step.event}`"
        )
        try:
            await workflow.wait_condition(
                lambda: bool(self.events.get(step.event)), timeout=float(seconds)
            )
        except TimeoutError:
            if step.on_timeout == "fail":
                raise errors.failure(
                    EVENT_TIMEOUT, f"step {step.id!r}: no {step.event!r} event in {seconds} s"
                ) from None
            return None
        finally:
            workflow.set_current_details("")
        return self.events[step.event].pop(0)

    async def subprocess(self, step: SubprocessStep, scope: dict[str, Any]) -> Any:
        # a subprocess step inside a loop starts one child per iteration, each with its own id
        runs = self.children[step.id] = self.children.get(step.id, 0) + 1
        child_input = ProcessRunInput(
            definition=self.inp.definition,
            input=self.render(step.input, scope, step.id),
            source=self.inp.source,
            requested_by=self.inp.requested_by,
            subprocess=step.process,
        )
        result: ProcessRunResult = await workflow.execute_child_workflow(
            PROCESS_WORKFLOW,
            child_input,
            id=f"{workflow.info().workflow_id}/{step.id}" + (f"-{runs}" if runs > 1 else ""),
            result_type=ProcessRunResult,
            static_summary=self.summary(step, scope, f"subprocess {step.process}"),
        )
        return result.output

    async def parallel(self, step: ParallelStep, scope: dict[str, Any], saga: Saga) -> Any:
        need = {"all": len(step.branches), "any": 1, "n_of": step.n or 1}[step.mode]
        sagas = {b.name: Saga() for b in step.branches}
        tasks = {
            b.name: asyncio.ensure_future(self.block(b.steps, scope, sagas[b.name]))
            for b in step.branches
        }
        # undo of the whole step: every branch at once, each newest first
        self.undo(
            f"{step.id}: compensate branches",
            lambda: _gather([s.compensate() for s in sagas.values()]),
            saga,
        )
        done: list[str] = []
        failed: dict[str, BaseException] = {}
        pending: set[asyncio.Task[None]] = set(tasks.values())
        try:
            while pending and len(done) < need:
                finished, still = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending = set(still)
                for name, task in tasks.items():
                    if task in finished:
                        err = task.exception()
                        if err is None:
                            done.append(name)
                        else:
                            failed[name] = err
                if len(tasks) - len(failed) < need:
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await workflow.wait(pending)
        if len(done) < need:
            first = next(iter(failed.values()))
            if len(failed) == 1 or step.mode == "all":
                raise first
            raise errors.failure(
                BRANCHES_FAILED,
                f"step {step.id!r}: {len(done)} of {need} branches succeeded; failed: "
                + "; ".join(f"{n}: {e}" for n, e in failed.items()),
            )
        # any / n_of: the branches not counted are undone now
        losers = [n for n in tasks if n not in done]
        if losers:
            await _gather([sagas[n].compensate() for n in losers])
        cancelled = [n for n in losers if n not in failed]
        return {"completed": done, "cancelled": cancelled, "failed": sorted(failed)}

    async def loop(self, step: LoopStep, scope: dict[str, Any], saga: Saga) -> list[Any]:
        collected: list[Any] = []
        items: list[Any] | None = None
        if step.for_each is not None:
            items = self.render(step.for_each, scope, step.id)
            if not isinstance(items, list):
                raise definition_error(step.id, "for_each did not give a list")
            if len(items) > step.max_iterations:
                raise errors.failure(
                    LOOP_LIMIT,
                    f"step {step.id!r}: {len(items)} items exceed max_iterations "
                    f"{step.max_iterations}",
                )
        index = 0
        while True:
            inner = dict(scope)
            if items is not None:
                if index >= len(items):
                    break
                inner[step.as_] = items[index]
            else:
                inner[step.as_] = index
                if not ex.truthy(self.render(step.while_, inner, step.id)):
                    break
                if index >= step.max_iterations:
                    raise errors.failure(
                        LOOP_LIMIT,
                        f"step {step.id!r}: still looping after max_iterations "
                        f"{step.max_iterations}",
                    )
            await self.block(step.steps, inner, saga)
            if step.collect_if is None or ex.truthy(self.render(step.collect_if, inner, step.id)):
                if step.collect is not None:
                    collected.append(self.render(step.collect, inner, step.id))
                else:
                    collected.append(inner["steps"][step.steps[-1].id]["output"])
            index += 1
        return collected

    # -- handlers -------------------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def receive_event(self, event: ProcessEvent) -> None:
        self.events.setdefault(event.name, []).append(event.data)


async def _gather(calls: list[Awaitable[Any]]) -> None:
    await asyncio.gather(*calls)


__all__ = ["EVENT_SIGNAL", "PROCESS_WORKFLOW", "ProcessWorkflow"]
