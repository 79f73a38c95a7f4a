"""HR onboarding activities and their systems of record: the HRIS (new hires) and the identity
provider's directory (accounts and entitlements), plus the persisted blackboard history.

Side effects are idempotent and commit in the same transaction as their audit rows:
* ``grant_entitlement`` (sensitive) asks the onboarding policy (policy/hr/entitlements.rego)
  right before it writes, inside the write transaction, and grants only on ``allow``; the
  decision is returned as data (a ``require_approval`` becomes a manager approval in the
  workflow, which calls again with the approval attached). Keyed by an idempotency key: a retry
  returns the stored outcome and never grants twice.
* ``revoke_entitlement`` (the compensation, registered before the grant) revokes what was
  granted under a key, once; a no-op when nothing was granted.
* Shadow runs (``GrantInput.shadow``): the same policy decision, but the grant is recorded in
  the shadow outbox (table ``shadow_action``, audit ``shadow.granted``), never in the identity
  provider; a shadow revocation likewise (``shadow.revoked``). The kill switch does not hold
  them: they change nothing.
* ``persist_blackboard`` writes blackboard entries, idempotent per workflow/run/board/seq.

Must not: be imported by workflows except through ``imports_passed_through``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, UniqueConstraint, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import activity_event, compensation_event, decision_event
from activities.claims import claimed_session
from activities.database import Database, utcnow
from activities.kill_switch import Subject
from activities.policy import (
    unavailable_error,
)
from activities.policy_gate import GovernedWrites, allowed_shadow, shadow_undo
from activities.store_base import (
    GovernedEffect,
    StoredOutcome,
    by_idempotency_key,
    stored_outcome,
)
from workflows.contracts import (
    PROCESS_BY_WORKFLOW_TYPE,
    AuditEvent,
    GrantInput,
    GrantOutcome,
    LoadHireInput,
    NewHire,
    PersistBoardInput,
    PolicyDecision,
    PolicyQuery,
    RevokeInput,
    RevokeOutcome,
    digest,
)

ENTITLEMENT_POLICY = "baton/hr/entitlements"


class EmployeeKeyed(SQLModel):
    """The primary key of a person's row in the HRIS and in the identity provider alike: the
    tenant and the employee id the HRIS gave them."""

    tenant: str = Field(primary_key=True)
    employee_id: str = Field(primary_key=True)


class HrisNewHire(EmployeeKeyed, table=True):
    """A new hire in the HRIS (the system of record for people)."""

    __tablename__ = "hris_new_hire"
    full_name: str
    role: str
    department: str
    country: str
    manager: str
    start_date: str
    id_document_verified: bool = False


class IdpAccount(EmployeeKeyed, table=True):
    """An account in the identity provider's directory, created with the first grant."""

    __tablename__ = "idp_account"
    created_at: datetime = Field(default_factory=utcnow)


class IdpEntitlement(GovernedEffect, table=True):
    """One entitlement granted (and perhaps later revoked) in the identity provider."""

    __tablename__ = "idp_entitlement"
    grant_id: str = Field(primary_key=True)
    employee_id: str = Field(index=True)
    system: str
    name: str
    granted_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoke_key: str | None = Field(default=None, unique=True)
    revoke_reason: str | None = None


class GrantAttempt(StoredOutcome, table=True):
    """The outcome of every grant call by idempotency key (also denials and approval holds), so
    a retried attempt returns the same decision."""

    __tablename__ = "idp_grant_attempt"


class BlackboardEntryRow(SQLModel, table=True):
    """One accepted blackboard write (workflows/blackboard.py), persisted for audit and reports."""

    __tablename__ = "blackboard_entry"
    __table_args__ = (UniqueConstraint("workflow_id", "run_id", "board", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(index=True)
    run_id: str
    board: str
    seq: int
    key: str
    version: int
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    author: str
    reason: str
    written_at: datetime


def seed_new_hire(db: Database, hire: NewHire) -> None:
    """Put (or replace) a new hire in the HRIS; for the demo and tests."""
    with db.session() as session:
        session.merge(HrisNewHire(**hire.model_dump()))


def grant_policy_input(inp: GrantInput) -> dict[str, object]:
    """The exact input document the entitlement policy sees (policy/hr/entitlements.rego)."""
    return {
        "action": "grant_entitlement",
        "tenant": inp.tenant,
        "hire": inp.hire.model_dump(
            include={"employee_id", "role", "department", "country", "id_document_verified"}
        ),
        "entitlement": {"system": inp.entitlement.system, "name": inp.entitlement.name},
        "requested_by": inp.requested_by,
        "approval": inp.approval.model_dump(mode="json") if inp.approval else None,
    }


class HrActivities(GovernedWrites):
    """Activities over the HRIS and the identity provider. Built once in worker.py."""

    @activity.defn(name="load_new_hire")
    async def load_new_hire(self, inp: LoadHireInput) -> NewHire:
        return await asyncio.to_thread(self._load, inp)

    def _load(self, inp: LoadHireInput) -> NewHire:
        with self.db.session() as session:
            row = session.get(HrisNewHire, (inp.tenant, inp.employee_id))
            if row is None:
                raise ApplicationError(
                    f"no new hire {inp.employee_id} of tenant {inp.tenant!r} in the HRIS",
                    type="NewHireNotFound",
                    non_retryable=True,
                )
            hire = NewHire.model_validate(row.model_dump())
            self.ledger.append_in(
                session,
                [
                    activity_event(
                        "load",
                        actor="connector:hris",
                        action="hris.hire_loaded",
                        detail={"employee_id": hire.employee_id, "role": hire.role},
                        output_digest=digest(hire),
                    )
                ],
            )
        return hire

    @activity.defn(name="persist_blackboard")
    async def persist_blackboard(self, inp: PersistBoardInput) -> int:
        """Store blackboard entries; those already stored (a retry) are skipped."""
        return await asyncio.to_thread(self._persist, inp)

    def _persist(self, inp: PersistBoardInput) -> int:
        info = activity.info()
        wf, run = info.workflow_id or "", info.workflow_run_id or ""
        written = 0
        with self.db.session() as session:
            have = set(
                session.exec(
                    select(BlackboardEntryRow.seq).where(
                        BlackboardEntryRow.workflow_id == wf,
                        BlackboardEntryRow.run_id == run,
                        BlackboardEntryRow.board == inp.board,
                    )
                ).all()
            )
            for e in inp.entries:
                if e.seq in have:
                    continue
                # the entry's key, value, version, seq, author and reason, where and when
                entry = e.model_dump(exclude={"at"})
                session.add(
                    BlackboardEntryRow(
                        **entry, workflow_id=wf, run_id=run, board=inp.board, written_at=e.at
                    )
                )
                written += 1
        return written

    # -- the sensitive action and its compensation -----------------------------------------

    @activity.defn(name="grant_entitlement")
    async def grant_entitlement(self, inp: GrantInput) -> GrantOutcome:
        """Grant one entitlement if, and only if, policy allows it right now (one transaction)."""
        return await self.write_governed(
            "grant", inp.entitlement.label, lambda decide_now: self._grant(inp, decide_now)
        )

    def _grant(
        self, inp: GrantInput, decide_now: Callable[[PolicyQuery], PolicyDecision]
    ) -> GrantOutcome:
        wf = activity.info().workflow_id or ""
        label = inp.entitlement.label
        with claimed_session(self.db, inp.claim) as session:
            stored = stored_outcome(session, GrantAttempt, inp.idempotency_key, GrantOutcome)
            if stored is not None:
                return stored
            if self.switch is not None and not inp.shadow:  # no grant while engaged
                workflow_type = activity.info().workflow_type or ""
                subject = Subject(
                    process=PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type),
                    agent="entitlement_prompter",  # the agent that proposed the entitlement
                    tenant=inp.tenant,
                )
                self.switch.raise_if_blocking(subject, session)
            query = PolicyQuery(
                policy=ENTITLEMENT_POLICY,
                input=grant_policy_input(inp),
                subject=label,
                workflow_id=wf,
            )
            decision = decide_now(query)
            if (unavailable := unavailable_error(self.policy, [decision])) is not None:
                raise unavailable  # roll back; wait mode: the workflow holds and retries
            outcome = GrantOutcome(decision=decision)
            events = [
                decision_event(
                    "grant/policy",
                    decision,
                    {"subject": label, "employee_id": inp.employee_id},
                    input_digest=digest(inp),
                    after={"approval": inp.approval.model_dump() if inp.approval else None},
                )
            ]
            if decision.verdict == "allow" and inp.shadow:
                outcome = GrantOutcome(decision=decision, grant_id=f"S-{uuid.uuid4().hex[:12]}")
                events.append(_record_shadow_grant(session, inp, outcome, label))
            elif decision.verdict == "allow":
                grant_id = f"G-{uuid.uuid4().hex[:12]}"
                outcome = GrantOutcome(decision=decision, grant_id=grant_id)
                approved_by = ", ".join(inp.approval.approvers) if inp.approval else None
                if session.get(IdpAccount, (inp.tenant, inp.employee_id)) is None:
                    session.add(IdpAccount(tenant=inp.tenant, employee_id=inp.employee_id))
                session.add(
                    IdpEntitlement(
                        **inp.entitlement.model_dump(),  # its system and name
                        grant_id=grant_id,
                        idempotency_key=inp.idempotency_key,
                        tenant=inp.tenant,
                        employee_id=inp.employee_id,
                        approved_by=approved_by,
                        workflow_id=wf,
                    )
                )
                events.append(
                    activity_event(
                        "grant/granted",
                        actor="agent:entitlement_prompter",
                        action="idp.granted",
                        detail={
                            "grant_id": grant_id,
                            "employee_id": inp.employee_id,
                            "entitlement": label,
                            "approved_by": approved_by,
                        },
                        rationale=inp.reason,
                        decision_id=decision.decision_id,
                    )
                )
            session.add(GrantAttempt.of(inp.idempotency_key, outcome))
            self.ledger.append_in(session, events)
        return outcome

    @activity.defn(name="revoke_entitlement")
    async def revoke_entitlement(self, inp: RevokeInput) -> RevokeOutcome:
        """Compensation: revoke what was granted under ``original_key``, once; a no-op when
        nothing was granted (denied, waiting for approval, or never ran)."""
        return await asyncio.to_thread(self._revoke, inp)

    def _revoke(self, inp: RevokeInput) -> RevokeOutcome:
        if inp.shadow:
            return self._revoke_shadow(inp)
        with self.db.session() as session:
            row = by_idempotency_key(session, IdpEntitlement, inp.original_key)
            if row is None:
                return RevokeOutcome(revoked=False, detail="nothing was granted")
            if row.revoked_at is not None:
                return RevokeOutcome(revoked=True, detail=f"{row.grant_id} already revoked")
            row.revoked_at = utcnow()
            row.revoke_key = inp.idempotency_key
            row.revoke_reason = inp.reason
            session.add(row)
            self.ledger.append_in(
                session,
                [
                    compensation_event(
                        "revoke",
                        "idp.revoked",
                        {
                            "grant_id": row.grant_id,
                            "employee_id": row.employee_id,
                            "entitlement": f"{row.system}:{row.name}",
                        },
                        inp.reason,
                    )
                ],
            )
            return RevokeOutcome(revoked=True, detail=f"{row.grant_id} revoked")

    def _revoke_shadow(self, inp: RevokeInput) -> RevokeOutcome:
        """A shadow run's revocation: recorded in the shadow outbox, once, like its grant."""
        original = self.shadow_original(inp.original_key)
        if original is None:
            return RevokeOutcome(revoked=False, detail="nothing was granted (shadow)")
        employee_id = original.detail["employee_id"]
        recorded = self.record_shadow(
            shadow_undo(original, inp, "revoke", original.workflow_id, employee_id=employee_id),
            compensation_event(
                "revoke",
                "shadow.revoked",
                {"entitlement": original.entry_id, "key": inp.original_key},
                inp.reason,
            ),
        )
        if not recorded:
            return RevokeOutcome(revoked=True, detail=f"{original.entry_id} already revoked")
        return RevokeOutcome(revoked=True, detail=f"shadow revocation of {original.entry_id}")


def _record_shadow_grant(
    session: Session, inp: GrantInput, outcome: GrantOutcome, label: str
) -> AuditEvent:
    """Record what a shadow run would have granted (shadow outbox) and return its audit event."""
    approvers = inp.approval.approvers if inp.approval else []
    about = {"employee_id": inp.employee_id}
    session.add(allowed_shadow(inp, "grant", outcome, approvers, about, period="", entry_id=label))
    return activity_event(
        "grant/shadow",
        actor="agent:entitlement_prompter",
        action="shadow.granted",
        detail={
            "shadow_id": outcome.grant_id,
            "employee_id": inp.employee_id,
            "entitlement": label,
            "approved_by": approvers,
        },
        rationale=inp.reason,
        decision_id=outcome.decision.decision_id,
    )


__all__ = [
    "BlackboardEntryRow",
    "ENTITLEMENT_POLICY",
    "EmployeeKeyed",
    "GrantAttempt",
    "HrActivities",
    "HrisNewHire",
    "IdpAccount",
    "IdpEntitlement",
    "grant_policy_input",
    "seed_new_hire",
]
