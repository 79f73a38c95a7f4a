"""Extension actions and agents: how what a user's package declares (baton/extensions.py) runs.

A governed action (:class:`ActionSpec`) is the extension's own side effect, ``run(args, ctx)``,
wrapped in the governance every Baton action has, in ONE database transaction: a retry returns
the outcome stored under the idempotency key instead of acting twice; the kill switch is checked
inside the transaction; policy (the action's own Rego path) is asked with the action, its
arguments, the principal, the approval it carries and the facts the action reads in that same
transaction; the action runs only on ``allow``; the decision, the action and its result digest
are audit rows committed with the side effect. Its undo, ``compensate(args, result, ctx)``, runs
once, and not at all for an action that never ran.

An agent (:class:`AgentSpec`) is one model call through the same path as Baton's own agents
(activities/agents.py): base policy, kill switch, throttles, routing by task class, structured
output of the answer model, one repair turn when the meaning validator refuses the answer, an
audit row with model, tokens and cost.

Each action is the activity named after it (``ap.pay_invoice``, its undo
``ap.pay_invoice.compensate``); each agent, the activity named after it. Those names are a
public contract. This module knows no extension: it builds activities from the specs it is given.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from sqlalchemy import Connection, bindparam, insert, update
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agents import AgentActivities, Route
from activities.audit import AuditLedger, activity_event, decision_event
from activities.database import Database, GovernedActionRow, utcnow
from activities.kill_switch import KillSwitch, Subject
from activities.policy import (
    PolicyEngine,
    unavailable_error,
)
from activities.policy_gate import GovernedWrites
from workflows import errors
from workflows.contracts import (
    PROCESS_BY_WORKFLOW_TYPE,
    ApprovalGrant,
    PolicyQuery,
    TokenUsage,
    digest,
)
from workflows.contracts.extensions import (
    COMPENSATE_SUFFIX,
    CompensateActionInput,
    CompensateActionOutcome,
    GovernedActionInput,
    GovernedActionOutcome,
)

__all__ = [
    "ActionContext",
    "ActionSpec",
    "AgentSpec",
    "ExtensionActivities",
    "action_digest",
    "agent_outcome_model",
    "policy_input",
]

ACTIONS = GovernedActionRow.__table__  # type: ignore[attr-defined]
_STORED = select(
    ACTIONS.c.outcome_json, ACTIONS.c.action_id, ACTIONS.c.compensated_at, ACTIONS.c.args_json
).where(ACTIONS.c.idempotency_key == bindparam("key"))


@dataclass(frozen=True)
class ActionContext:
    """What an extension's action sees: the open transaction (its writes commit with the audit
    rows, or not at all) and who asks for what."""

    session: Session
    action: str
    tenant: str
    requested_by: str
    idempotency_key: str
    workflow_id: str
    approval: ApprovalGrant | None
    shadow: bool

    @property
    def connection(self) -> Connection:
        return self.session.connection()


@dataclass(frozen=True)
class ActionSpec:
    """A governed action an extension declares.

    ``run(args, ctx) -> result`` does the side effect in the given transaction (synchronous: it
    runs on a worker thread, under the transaction's lock); ``compensate(args, result, ctx)``
    undoes it. ``facts(args, ctx)`` (optional) reads what policy should see, in the same
    transaction, under ``input.facts``."""

    name: str
    args: type[BaseModel]
    result: type[BaseModel]
    policy: str  # Rego package path under data, e.g. "vendor_invoice/payment"
    run: Callable[[Any, ActionContext], Any]
    compensate: Callable[[Any, Any, ActionContext], Any] | None = None
    facts: Callable[[Any, ActionContext], dict[str, Any]] | None = None
    description: str = ""
    #: the kill switch's "agent" scope for this action (default: the action's name)
    actor: str = ""

    @property
    def undo_name(self) -> str:
        """The name of the activity (and catalogue action) that undoes this one, e.g.
        ``ap.pay_invoice.compensate``; it exists only when the action has a ``compensate``."""
        return self.name + COMPENSATE_SUFFIX


@dataclass(frozen=True)
class AgentSpec:
    """An agent an extension declares: its system prompt (first line ``agent: <role>``), its
    input and answer models, the meaning validator (answer -> problems, empty when fine; it may
    take the input too: ``check(answer, inp)``), and the task class the model router routes it
    by (config/models.json ``task_classes``)."""

    name: str  # the catalogue name and activity name, e.g. "ap.check_invoice"
    role: str  # the agent role: the prompt's first line, the audit actor, the kill-switch scope
    prompt: str
    input: type[BaseModel]
    answer: type[BaseModel]
    check: Callable[..., list[str]] | None = None
    task_class: str | None = None
    description: str = ""
    #: what the local stand-in model server answers (devstack, tests): input JSON -> answer
    stand_in: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    outcome: type[BaseModel] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", agent_outcome_model(self.answer))


def agent_outcome_model(answer: type[BaseModel]) -> type[BaseModel]:
    """The agent activity's result: the answer's fields plus the call's ``usage``."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{answer.__name__}Outcome",
        __base__=answer,
        usage=(TokenUsage | None, None),
    )


def policy_input(
    spec: ActionSpec, inp: GovernedActionInput, facts: dict[str, Any]
) -> dict[str, Any]:
    """The exact document the action's policy sees."""
    return {
        "action": spec.name,
        "tenant": inp.tenant,
        "args": inp.args,
        "principal": {"requested_by": inp.requested_by, "tenant": inp.tenant},
        "requested_by": inp.requested_by,
        "facts": facts,
        "approval": None
        if inp.approval is None
        else {
            **inp.approval.model_dump(mode="json"),
            # bound to this very action: the digest the approvers saw is this call's
            "matches_action": inp.approval.action_digest == action_digest(inp.action, inp.args),
        },
    }


def action_digest(action: str, args: dict[str, Any]) -> str:
    """What an approval of a governed action is bound to: the action's name and arguments."""
    return digest({"action": action, "args": args})


class _Original(BaseModel):
    """What an action ran with (kept on its row for its undo)."""

    args: dict[str, Any] = {}
    tenant: str = ""
    requested_by: str = "baton"


def _invalid(what: str, err: ValidationError) -> ApplicationError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in err.errors(include_url=False)
    )
    return ApplicationError(f"{what}: {problems}", type=errors.INPUT_INVALID, non_retryable=True)


class ExtensionActivities(GovernedWrites):
    """The activities of every registered action and agent, built once in worker.py."""

    def __init__(
        self,
        db: Database,
        ledger: AuditLedger,
        policy: PolicyEngine,
        switch: KillSwitch | None,
        agents: AgentActivities,
    ) -> None:
        super().__init__(db, ledger, policy, switch)
        self.agents = agents

    def activities(
        self, actions: Sequence[ActionSpec], agents: Sequence[AgentSpec]
    ) -> list[Callable[..., Any]]:
        """One activity per action, one per undo, one per agent."""
        out: list[Callable[..., Any]] = []
        for spec in actions:
            out.append(self._action_activity(spec))
            out.append(self._compensation_activity(spec))
        for agent in agents:
            out.append(self._agent_activity(agent))
        return out

    # -- governed actions ------------------------------------------------------------------

    def _action_activity(self, spec: ActionSpec) -> Callable[..., Any]:
        async def governed_action(inp: GovernedActionInput) -> GovernedActionOutcome:
            try:
                args = spec.args.model_validate(inp.args)
            except ValidationError as err:
                raise _invalid(f"{spec.name}: arguments", err) from None
            return await self.write_governed(
                spec.name,
                inp.idempotency_key,
                lambda decide_now: self._act(spec, inp, args, decide_now),
            )

        return activity.defn(name=spec.name)(governed_action)

    def _context(self, session: Session, spec: ActionSpec, inp: Any, key: str) -> ActionContext:
        """The context of ``spec`` run for ``inp`` (a step's input, or what an action ran with,
        for its undo: no approval then, and never a shadow run) under idempotency ``key``."""
        return ActionContext(
            session=session,
            action=spec.name,
            tenant=getattr(inp, "tenant", ""),
            requested_by=getattr(inp, "requested_by", "baton"),
            idempotency_key=key,
            workflow_id=activity.info().workflow_id or "",
            approval=getattr(inp, "approval", None),
            shadow=getattr(inp, "shadow", False),
        )

    def _act(
        self,
        spec: ActionSpec,
        inp: GovernedActionInput,
        args: BaseModel,
        decide_now: Callable[[PolicyQuery], Any],
    ) -> GovernedActionOutcome:
        wf = activity.info().workflow_id or ""
        with self.db.session() as session:
            conn = session.connection()
            stored = conn.execute(_STORED, {"key": inp.idempotency_key}).first()
            if stored is not None:  # a retry of an attempt that acted: the same outcome
                return GovernedActionOutcome.model_validate_json(stored[0])
            if self.switch is not None:  # inside the transaction: no action while engaged
                subject = Subject(
                    process=_process(), agent=spec.actor or spec.name, tenant=inp.tenant
                )
                self.switch.raise_if_blocking(subject, session)
            ctx = self._context(session, spec, inp, inp.idempotency_key)
            facts = spec.facts(args, ctx) if spec.facts is not None else {}
            query = PolicyQuery(
                policy=spec.policy,
                input=policy_input(spec, inp, facts),
                subject=inp.idempotency_key,
                workflow_id=wf,
            )
            decision = decide_now(query)
            if (unavailable := unavailable_error(self.policy, [decision])) is not None:
                raise unavailable  # rolls back; the workflow holds and asks again
            events = [
                *inp.audit_events,  # the approval's, when the step carries them
                decision_event(
                    f"{spec.name}/policy",
                    decision,
                    {"action": spec.name},
                    input_digest=digest(inp.args),
                    after={
                        "approval": inp.approval.model_dump() if inp.approval else None,
                        **({"shadow": True} if inp.shadow else {}),
                    },
                ),
            ]
            outcome = GovernedActionOutcome(decision=decision)
            if decision.verdict == "allow" and not inp.shadow:
                result = spec.run(args, ctx)
                try:
                    typed = spec.result.model_validate(result)
                except ValidationError as err:
                    raise _invalid(f"{spec.name}: result", err) from None
                action_id = f"A-{uuid.uuid4().hex[:12]}"
                outcome = GovernedActionOutcome(
                    decision=decision, result=typed.model_dump(mode="json"), action_id=action_id
                )
                conn.execute(
                    insert(ACTIONS),
                    dict(
                        action_id=action_id,
                        idempotency_key=inp.idempotency_key,
                        action=spec.name,
                        tenant=inp.tenant,
                        workflow_id=wf,
                        args_json=inp.model_dump_json(include={"args", "tenant", "requested_by"}),
                        outcome_json=outcome.model_dump_json(),
                        done_at=utcnow(),
                        compensated_at=None,
                    ),
                )
                events.append(
                    activity_event(
                        f"{spec.name}/done",
                        actor=inp.requested_by,
                        action=f"{spec.name}.done",
                        detail={"action_id": action_id, "result": outcome.result},
                        decision_id=decision.decision_id,
                        input_digest=digest(inp.args),
                        output_digest=digest(outcome.result),
                    )
                )
            self.ledger.append_in(session, events)
        return outcome

    def _compensation_activity(self, spec: ActionSpec) -> Callable[..., Any]:
        async def compensate_action(inp: CompensateActionInput) -> CompensateActionOutcome:
            return await asyncio.to_thread(self._compensate, spec, inp)

        return activity.defn(name=spec.undo_name)(compensate_action)

    def _compensate(self, spec: ActionSpec, inp: CompensateActionInput) -> CompensateActionOutcome:
        with self.db.session() as session:
            conn = session.connection()
            stored = conn.execute(_STORED, {"key": inp.original_key}).first()
            if stored is None or stored[2] is not None:  # never ran, or undone already
                return CompensateActionOutcome(
                    undone=False, action_id=stored[1] if stored else None
                )
            outcome_json, action_id, _, args_json = stored
            done = GovernedActionOutcome.model_validate_json(outcome_json)
            original = _Original.model_validate_json(args_json)
            if spec.compensate is not None:
                ctx = self._context(session, spec, original, inp.original_key)
                args = spec.args.model_validate(original.args)
                result = spec.result.model_validate(done.result or {})
                spec.compensate(args, result, ctx)
            now: datetime = utcnow()
            conn.execute(
                update(ACTIONS).where(ACTIONS.c.action_id == action_id), {"compensated_at": now}
            )
            self.ledger.append_in(
                session,
                [
                    activity_event(
                        f"{spec.name}/compensated",
                        actor="baton:saga",
                        action=f"{spec.name}.compensated",
                        detail={"action_id": action_id, "original_key": inp.original_key},
                        rationale=inp.reason,
                    )
                ],
            )
        return CompensateActionOutcome(undone=True, action_id=action_id)

    # -- agents ----------------------------------------------------------------------------

    def _agent_activity(self, spec: AgentSpec) -> Callable[..., Any]:
        agents = self.agents

        takes_input = spec.check is not None and _arity(spec.check) >= 2

        async def extension_agent(inp: Any) -> Any:
            check = None
            if spec.check is not None:
                user_check = spec.check

                def check(answer: Any) -> list[str]:
                    return list(user_check(answer, inp) if takes_input else user_check(answer))

            route = Route("stable", "stable", spec.prompt, agents.model)
            wire, usage = await agents._ask(spec.role, inp, spec.answer, route, check=check)
            await agents._audit(
                spec.role, f"agent.{spec.name}", inp, wire, usage, {"agent": spec.name}
            )
            return spec.outcome.model_validate({**wire.model_dump(), "usage": usage})

        extension_agent.__annotations__ = {"inp": spec.input, "return": spec.outcome}
        return activity.defn(name=spec.name)(extension_agent)


def _arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` takes (a meaning check: answer, or answer + input)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _process() -> str:
    workflow_type = activity.info().workflow_type or ""
    return PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type)


def prompt_file(path: str | Path) -> str:
    """A prompt kept in a file of the extension (read once, at registration)."""
    return Path(path).read_text(encoding="utf-8")
