"""Customer onboarding: the CRM's event table and the systems of record the blueprint commits to.

Owns:
* ``crm_event``: CRM events ("new high-value customer"), one row per CRM event id; the trigger
  (baton/crm_trigger.py) starts one workflow per customer from them and marks each handled;
* ``crm_commit``: the actions committed for a customer (the intro email sent through the CRM,
  the discount recorded on the contract, the onboarding tasks scheduled), one row per
  idempotency key, reverted (never deleted) by the compensation;
* the activities ``check_customer_plan`` (the policy gate over every planned action before any
  is committed, for the runs started before their plan check became the generic preflight,
  ``evaluate_policies``), ``commit_customer_action`` (asks policy/customer/onboarding.rego again
  inside the write transaction and commits only on ``allow``; the outcome is stored per key so a
  retry never commits twice) and ``revert_customer_action`` (the compensation).

Must not: be imported by workflows except through ``imports_passed_through``; call models.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio import activity

from activities.audit import activity_event, compensation_event, decision_event
from activities.claims import claim_or_check
from activities.database import Database, utcnow
from activities.kill_switch import Subject
from activities.policy import decide
from activities.policy_gate import GovernedWrites
from activities.store_base import (
    GovernedEffect,
    StoredOutcome,
    by_idempotency_key,
    stored_outcome,
)
from workflows.contracts import PolicyDecision, PolicyQuery, digest
from workflows.contracts.customer import (
    COMMIT_ACTION,
    CUSTOMER_POLICY,
    CommitInput,
    CommitOutcome,
    CrmEvent,
    PlanCheckInput,
    PlanCheckResult,
    RevertInput,
    RevertOutcome,
    customer_policy_input,
)

PROCESS = "customer_onboarding"
#: The agent whose output each kind of action commits (the kill switch's "agent" scope).
PROPOSED_BY = {
    "discount": "discount_analyst",
    "intro_email": "intro_email_writer",
    "onboarding_task": "onboarding_sequencer",
}


class CrmEventRow(SQLModel, table=True):
    """An event of the CRM. ``handled_at`` is set by the trigger once a run exists for it."""

    __tablename__ = "crm_event"
    event_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    customer_id: str = Field(index=True)
    kind: str = Field(index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    deliveries: int = 1
    handled_at: datetime | None = Field(default=None, index=True)
    workflow_id: str | None = None
    run_id: str | None = None
    outcome: str | None = None


class CrmCommit(GovernedEffect, table=True):
    """One action committed to a system of record for a customer."""

    __tablename__ = "crm_commit"
    commit_id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    kind: str  # intro_email | discount | onboarding_task
    action_key: str
    summary: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    rationale: str = ""
    committed_at: datetime = Field(default_factory=utcnow)
    reverted_at: datetime | None = None
    revert_key: str | None = Field(default=None, unique=True)
    revert_reason: str | None = None


class CrmCommitAttempt(StoredOutcome, table=True):
    """The outcome of every commit call by idempotency key (denials and approval holds too)."""

    __tablename__ = "crm_commit_attempt"


def record_crm_event(db: Database, event: CrmEvent) -> bool:
    """Store a CRM event; True if new, False for a re-delivery of a stored one (counted)."""
    with db.session() as session:
        row = session.get(CrmEventRow, event.event_id)
        if row is not None:
            row.deliveries += 1
            session.add(row)
            return False
        session.add(
            CrmEventRow(
                event_id=event.event_id,
                tenant=event.tenant,
                customer_id=event.customer_id,
                kind=event.kind,
                payload=event.model_dump(mode="json"),
                occurred_at=event.occurred_at,
            )
        )
        return True


def unhandled_events(db: Database, kind: str) -> list[CrmEvent]:
    with db.read_session() as session:
        rows = session.exec(
            select(CrmEventRow)
            .where(CrmEventRow.kind == kind, col(CrmEventRow.handled_at).is_(None))
            .order_by(col(CrmEventRow.occurred_at), col(CrmEventRow.event_id))
        ).all()
        return [CrmEvent.model_validate(r.payload) for r in rows]


def mark_handled(
    db: Database, event_id: str, workflow_id: str, run_id: str | None, outcome: str
) -> None:
    with db.session() as session:
        row = session.get(CrmEventRow, event_id)
        if row is not None and row.handled_at is None:
            row.handled_at, row.workflow_id = utcnow(), workflow_id
            row.run_id, row.outcome = run_id, outcome
            session.add(row)


def commits(db: Database, customer_id: str) -> list[CrmCommit]:
    with db.read_session() as session:
        return list(
            session.exec(
                select(CrmCommit)
                .where(CrmCommit.customer_id == customer_id)
                .order_by(col(CrmCommit.committed_at))
            ).all()
        )


class CustomerActivities(GovernedWrites):
    @activity.defn(name="check_customer_plan")
    async def check_customer_plan(self, inp: PlanCheckInput) -> PlanCheckResult:
        """The policy gate over every planned action (data residency, legal, discounts), before
        anything is committed; each decision is an audit row. Asked by the runs started before
        ``customer-plan-check-by-preflight`` (later ones ask ``evaluate_policies``)."""
        info = activity.info()
        decisions: list[PolicyDecision] = []
        for action in inp.actions:
            query = PolicyQuery(
                policy=CUSTOMER_POLICY,
                input=customer_policy_input(inp, action),
                subject=action.key,
                workflow_id=info.workflow_id or "",
            )
            decision_id = f"{info.workflow_id}/act/{info.activity_id}/plan/{action.key}"
            decisions.append(await decide(self.policy, query, decision_id))
        events = [
            decision_event(
                f"plan-check/{d.subject}",
                d,
                {"subject": d.subject, "customer_id": inp.customer.customer_id},
                input_digest=digest(inp),
                after={"stage": "plan check"},
            )
            for d in decisions
        ]
        await asyncio.to_thread(self.ledger.append, events)
        return PlanCheckResult(decisions=decisions)

    @activity.defn(name="commit_customer_action")
    async def commit_customer_action(self, inp: CommitInput) -> CommitOutcome:
        """Commit one action if, and only if, policy allows it right now (one transaction)."""
        return await asyncio.to_thread(self._commit, inp, self.decider("commit"))

    def _commit(
        self, inp: CommitInput, decide_now: Callable[[PolicyQuery], PolicyDecision]
    ) -> CommitOutcome:
        wf = activity.info().workflow_id or ""
        with self.db.session() as session:
            return self.commit_in(session, inp, decide_now, wf)

    def commit_in(
        self,
        session: Session,
        inp: CommitInput,
        decide_now: Callable[[PolicyQuery], PolicyDecision],
        wf: str,
    ) -> CommitOutcome:
        """The commit inside the caller's transaction (the activity's, or a governed tool
        call's: activities/customer_tools.py)."""
        action = inp.action
        claim_or_check(session, inp.claim, wf, activity.info().workflow_run_id or "")
        stored = stored_outcome(session, CrmCommitAttempt, inp.idempotency_key, CommitOutcome)
        if stored is not None:
            return stored
        if self.switch is not None:  # inside the transaction: no commit while engaged
            subject = Subject(process=PROCESS, agent=PROPOSED_BY[action.kind], tenant=inp.tenant)
            self.switch.raise_if_blocking(subject, session)
        decision = decide_now(
            PolicyQuery(
                policy=CUSTOMER_POLICY,
                input=customer_policy_input(inp, action),
                subject=action.key,
                workflow_id=wf,
            )
        )
        outcome = CommitOutcome(decision=decision)
        events = [
            decision_event(
                "commit/policy",
                decision,
                {"subject": action.key, "customer_id": inp.customer.customer_id},
                input_digest=digest(inp),
                after={"approval": inp.approval.model_dump() if inp.approval else None},
            )
        ]
        if decision.verdict == "allow":
            commit_id = f"C-{uuid.uuid4().hex[:12]}"
            outcome = CommitOutcome(decision=decision, commit_id=commit_id)
            approved_by = ", ".join(inp.approval.approvers) if inp.approval else None
            session.add(
                CrmCommit(
                    commit_id=commit_id,
                    idempotency_key=inp.idempotency_key,
                    tenant=inp.tenant,
                    customer_id=inp.customer.customer_id,
                    kind=action.kind,
                    action_key=action.key,
                    summary=action.summary,
                    payload=action.payload,
                    approved_by=approved_by,
                    rationale=inp.rationale,
                    workflow_id=wf,
                )
            )
            events.append(
                activity_event(
                    "commit/committed",
                    actor="baton:customer_onboarding",
                    action=f"crm.committed.{action.kind}",
                    detail={
                        "commit_id": commit_id,
                        "customer_id": inp.customer.customer_id,
                        "key": action.key,
                        "summary": action.summary,
                        "approved_by": approved_by,
                    },
                    rationale=inp.rationale,
                    decision_id=decision.decision_id,
                    output_digest=digest(action.payload),
                )
            )
        session.add(CrmCommitAttempt.of(inp.idempotency_key, outcome))
        self.ledger.append_in(session, events)
        return outcome

    @activity.defn(name="revert_customer_action")
    async def revert_customer_action(self, inp: RevertInput) -> RevertOutcome:
        """Compensation: revert what was committed under ``original_key``, once (the email is
        followed by a correction, the discount withdrawn, the task cancelled); a no-op when
        nothing was committed."""
        return await asyncio.to_thread(self._revert, inp)

    def _revert(self, inp: RevertInput) -> RevertOutcome:
        with self.db.session() as session:
            return self.revert_in(session, inp)

    def revert_in(self, session: Session, inp: RevertInput) -> RevertOutcome:
        """The revert inside the caller's transaction (the compensation activity's or a tool's)."""
        row = by_idempotency_key(session, CrmCommit, inp.original_key)
        if row is None:
            return RevertOutcome(reverted=False, detail="nothing was committed")
        if row.reverted_at is not None:
            return RevertOutcome(reverted=True, detail=f"{row.commit_id} already reverted")
        row.reverted_at, row.revert_key, row.revert_reason = (
            utcnow(),
            inp.idempotency_key,
            inp.reason,
        )
        session.add(row)
        self.ledger.append_in(
            session,
            [
                compensation_event(
                    "revert",
                    f"crm.reverted.{row.kind}",
                    {
                        "commit_id": row.commit_id,
                        "customer_id": row.customer_id,
                        "key": row.action_key,
                    },
                    inp.reason,
                )
            ],
        )
        return RevertOutcome(reverted=True, detail=f"{row.commit_id} reverted")


__all__ = [
    "COMMIT_ACTION",
    "CUSTOMER_POLICY",
    "CrmCommit",
    "CrmCommitAttempt",
    "CrmEventRow",
    "CustomerActivities",
    "PROCESS",
    "PROPOSED_BY",
    "commits",
    "customer_policy_input",
    "mark_handled",
    "record_crm_event",
    "unhandled_events",
]
