"""The customer-onboarding connectors as governed tools: the plan carried out by an agent.

The onboarding executor (workflows/agent_steps.py ``ONBOARDING_EXECUTOR``) carries out the
planner's checked plan through these tools; each call is a governed tool call
(activities/tools.py ``call_tool``: tool policy policy/base/tool_call.rego, the call's key,
audit) and its effect is the very commit of activities/customer.py (``commit_in``: the kill
switch, policy/customer/onboarding.rego asked again inside the write transaction, the CRM row,
the audit rows), not a copy of it:

* ``grant_customer_entitlement``: the entitlement API (a discount recorded on the contract, an
  onboarding task scheduled), compensated by ``revoke_customer_entitlement``;
* ``send_welcome_email``: the email sender (the intro email through the CRM), compensated by
  ``send_email_correction``.

A tool only commits an action of the plan it is given (``plan_id``): the plan the workflow
checked against policy (and had approved where policy asked) is stored in the payload store by
``record_customer_plan``; an action that is not in it is refused with a reason the model reads.
``customer_plan_outcome`` reads back what the run committed, from the systems of record.

Must not: be imported by workflows except through ``imports_passed_through``; call models.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as Arg
from sqlmodel import Session, col, select
from temporalio import activity

from activities.customer import CrmCommit, CustomerActivities
from activities.database import Database
from activities.payload_store import PayloadMissing, PayloadStore
from activities.policy import SyncPolicyEngine, decide_sync
from activities.tools import ToolContext, ToolSpec
from workflows.contracts import PolicyDecision, PolicyQuery
from workflows.contracts.customer import (
    CommitInput,
    CommittedAction,
    PlanOutcome,
    PlanOutcomeInput,
    PlanRecord,
    PlanRecordInput,
    RevertInput,
)
from workflows.contracts.tools import ToolResult

GRANT_TOOL = "grant_customer_entitlement"
EMAIL_TOOL = "send_welcome_email"
REVOKE_TOOL = "revoke_customer_entitlement"
CORRECT_TOOL = "send_email_correction"
#: The tool that carries out each kind of planned action.
TOOL_OF_KIND = {"discount": GRANT_TOOL, "onboarding_task": GRANT_TOOL, "intro_email": EMAIL_TOOL}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanActionArgs(_Args):
    plan_id: str = Arg(min_length=1, max_length=128, description="The plan's id (the task's).")
    action_key: str = Arg(
        min_length=1, max_length=120, description="The key of one action of the plan."
    )


class CallKeyArgs(_Args):
    call_key: str = Arg(min_length=1, description="The idempotency key of the call to undo.")


def _planned(ctx: ToolContext, session: Session, args: PlanActionArgs) -> CommitInput | str:
    """The plan's action, or why there is none (told to the model)."""
    try:
        stored = ctx.tools.payloads.get(args.plan_id)
    except PayloadMissing:
        return f"no plan {args.plan_id!r}: use the plan_id of your task"
    plan = PlanRecordInput.model_validate(stored).plan
    for item in plan:
        if item.action.key == args.action_key:
            return item
    keys = ", ".join(i.action.key for i in plan)
    return f"'{args.action_key}' is not an action of the plan (its actions: {keys})"


def _decider(ctx: ToolContext) -> Any:
    """Policy for the commit inside the tool's transaction (this worker thread)."""
    if ctx.decide is not None:
        return ctx.decide
    engine = ctx.tools.policy
    assert isinstance(engine, SyncPolicyEngine)
    decision_id = f"{ctx.idempotency_key}/customer"

    def decide_now(query: PolicyQuery) -> PolicyDecision:
        return decide_sync(engine, query, decision_id)

    return decide_now


def _customer(ctx: ToolContext) -> CustomerActivities:
    tools = ctx.tools
    return CustomerActivities(ctx.db, tools.ledger, tools.policy, tools.switch)


def _commit(kinds: set[str]) -> Any:
    def write(ctx: ToolContext, session: Session, args: PlanActionArgs) -> ToolResult:
        planned = _planned(ctx, session, args)
        if isinstance(planned, str):
            return ToolResult(text=planned, is_error=True)
        if planned.action.kind not in kinds:
            tool = TOOL_OF_KIND[planned.action.kind]
            return ToolResult(
                text=f"'{args.action_key}' is a {planned.action.kind}: call {tool} for it",
                is_error=True,
            )
        inp = planned.model_copy(update={"idempotency_key": ctx.idempotency_key})
        outcome = _customer(ctx).commit_in(session, inp, _decider(ctx), ctx.workflow_id)
        if outcome.commit_id is None:
            reasons = "; ".join(outcome.decision.reasons) or outcome.decision.verdict
            return ToolResult(
                text=f"{args.action_key} not committed: {reasons}",
                is_error=True,
                data={"verdict": outcome.decision.verdict},
            )
        return ToolResult(
            text=f"{args.action_key} committed as {outcome.commit_id}: {planned.action.summary}",
            data={"commit_id": outcome.commit_id, "action_key": args.action_key},
        )

    return write


def _revert(ctx: ToolContext, session: Session, args: CallKeyArgs) -> ToolResult:
    out = _customer(ctx).revert_in(
        session,
        RevertInput(
            original_key=args.call_key,
            reason=f"{ctx.principal.agent}'s call undone (compensation)",
            idempotency_key=f"{args.call_key}/revert",
        ),
    )
    return ToolResult(text=out.detail, is_error=False)


def customer_tools() -> list[ToolSpec]:
    """The customer-onboarding tools (their policy data: policy/data/tools.json)."""
    return [
        ToolSpec(
            GRANT_TOOL,
            "Grant the customer an entitlement of the plan (a discount on the contract or an "
            "onboarding task), by the plan's id and the action's key.",
            PlanActionArgs,
            side_effects=True,
            compensation=REVOKE_TOOL,
            write=_commit({"discount", "onboarding_task"}),
        ),
        ToolSpec(
            REVOKE_TOOL,
            "Revoke what a grant_customer_entitlement call granted (the compensation).",
            CallKeyArgs,
            side_effects=True,
            write=_revert,
        ),
        ToolSpec(
            EMAIL_TOOL,
            "Send the plan's welcome (intro) email to the customer through the CRM, by the "
            "plan's id and the action's key.",
            PlanActionArgs,
            side_effects=True,
            compensation=CORRECT_TOOL,
            write=_commit({"intro_email"}),
        ),
        ToolSpec(
            CORRECT_TOOL,
            "Follow a welcome email with a correction (the compensation of send_welcome_email).",
            CallKeyArgs,
            side_effects=True,
            write=_revert,
        ),
    ]


@dataclass(eq=False)  # one instance per worker: identity, not field equality
class CustomerToolActivities:
    """Store the plan for the tools; read back what they committed. Built once in worker.py."""

    db: Database
    payloads: PayloadStore

    @activity.defn(name="record_customer_plan")
    async def record_customer_plan(self, inp: PlanRecordInput) -> PlanRecord:
        ref = await asyncio.to_thread(self.payloads.put, inp.model_dump(mode="json"))
        return PlanRecord(plan_id=ref.digest)

    @activity.defn(name="customer_plan_outcome")
    async def customer_plan_outcome(self, inp: PlanOutcomeInput) -> PlanOutcome:
        return await asyncio.to_thread(self._outcome, inp)

    def _outcome(self, inp: PlanOutcomeInput) -> PlanOutcome:
        plan = PlanRecordInput.model_validate(self.payloads.get(inp.plan_id)).plan
        with self.db.read_session() as session:
            rows = session.exec(
                select(CrmCommit)
                .where(
                    CrmCommit.workflow_id == inp.workflow_id,
                    col(CrmCommit.reverted_at).is_(None),
                )
                .order_by(col(CrmCommit.committed_at))
            ).all()
        by_key = {r.action_key: r for r in rows}
        committed = [
            CommittedAction(
                kind=r.kind,  # type: ignore[arg-type]
                key=r.action_key,
                commit_id=r.commit_id,
                summary=r.summary,
                approved_by=[p for p in (r.approved_by or "").split(", ") if p],
            )
            for r in rows
        ]
        missing = [i.action.key for i in plan if i.action.key not in by_key]
        return PlanOutcome(committed=committed, missing=missing)


__all__ = [
    "CORRECT_TOOL",
    "CallKeyArgs",
    "CustomerToolActivities",
    "EMAIL_TOOL",
    "GRANT_TOOL",
    "PlanActionArgs",
    "REVOKE_TOOL",
    "TOOL_OF_KIND",
    "customer_tools",
]
