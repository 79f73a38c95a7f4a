"""The policy preflight as an activity of its own: ask policy about several actions at once,
before any of them is done, and audit every decision. Any process uses it (``evaluate_policies``
is a public activity name); its sensitive actions still ask policy again inside their own write
transaction. Must not write to any system of record: it only decides and audits.

Also here: :class:`GovernedWrites`, the base of the activities that do write, and the rows of
the shadow outbox a shadow run records instead of writing (:func:`allowed_shadow`,
:func:`shadow_undo`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditLedger, decision_event, unavailable_event
from activities.database import Database, ShadowAction
from activities.kill_switch import KillSwitch
from activities.policy import (
    POLICY_UNAVAILABLE_ERROR,
    PolicyEngine,
    SyncPolicyEngine,
    decide,
    decide_sync,
    in_transaction_decider,
    unavailable_error,
)
from activities.store_base import by_idempotency_key
from workflows.contracts import (
    AuditEvent,
    CompensationInput,
    PolicyBatch,
    PolicyDecision,
    PolicyQuery,
    digest,
)

__all__ = ["GovernedWrites", "PolicyGateActivities", "allowed_shadow", "shadow_undo"]

T = TypeVar("T")


def _preflight_events(batch: PolicyBatch, decisions: list[PolicyDecision]) -> list[AuditEvent]:
    """The audit rows of a policy preflight: one per decision."""
    return [
        decision_event(
            f"policy/{i}",
            d,
            {"subject": d.subject},
            input_digest=digest(q.input),
            after={"preflight": True},
        )
        for i, (q, d) in enumerate(zip(batch.queries, decisions, strict=True))
    ]


class PolicyGateActivities:
    """The preflight activity. Built once in worker.py with the worker's ledger and engine."""

    def __init__(self, ledger: AuditLedger, policy: PolicyEngine) -> None:
        self.ledger = ledger
        self.policy = policy

    @activity.defn(name="evaluate_policies")
    async def evaluate_policies(self, batch: PolicyBatch) -> list[PolicyDecision]:
        """Ask policy about several actions at once (a preflight); every decision is audited."""
        info = activity.info()
        prefix = f"{info.workflow_id}/act/{info.activity_id}/policy"
        ids = [f"{prefix}/{i}" for i in range(len(batch.queries))]
        policy = self.policy
        if isinstance(policy, SyncPolicyEngine):
            # Embedded engine: every decision and the audit rows in ONE trip to a worker thread
            # (one hop per decision cost more than the decisions).
            def decide_and_audit(engine: SyncPolicyEngine) -> list[PolicyDecision]:
                found = [decide_sync(engine, q, i) for q, i in zip(batch.queries, ids, strict=True)]
                self.ledger.append(_preflight_events(batch, found))
                return found

            decisions = await asyncio.to_thread(decide_and_audit, policy)
        else:
            decisions = [
                await decide(policy, q, i) for q, i in zip(batch.queries, ids, strict=True)
            ]
            await asyncio.to_thread(self.ledger.append, _preflight_events(batch, decisions))
        if (unavailable := unavailable_error(policy, decisions)) is not None:
            raise unavailable  # wait mode: the workflow holds and runs the preflight again
        return decisions


class GovernedWrites:
    """Base of the activities that write to a system of record: each write asks policy
    (``policy``) and the kill switch (``switch``) inside its transaction on ``db`` and appends
    its audit rows (``ledger``) there. Built once in worker.py."""

    def __init__(
        self,
        db: Database,
        ledger: AuditLedger,
        policy: PolicyEngine,
        switch: KillSwitch | None = None,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.policy = policy
        #: Checked inside the write's transaction: no write while engaged.
        self.switch = switch

    def decider(self, step: str) -> Callable[[PolicyQuery], PolicyDecision]:
        """The running activity's in-transaction ``decide`` for ``step``: its decisions are
        keyed ``<workflow id>/act/<activity id>/<step>``. Call it on the event loop."""
        info = activity.info()
        return in_transaction_decider(
            self.policy, f"{info.workflow_id}/act/{info.activity_id}/{step}"
        )

    async def write_governed(
        self, step: str, subject: str, write: Callable[[Callable[[PolicyQuery], PolicyDecision]], T]
    ) -> T:
        """Run ``write`` (one transaction that asks policy through the ``decide`` it is given,
        see :meth:`decider`) in a worker thread. When the engine could not be asked (wait
        mode), nothing was written: the trail says so (``<step>/policy``, about ``subject``)
        before the error goes to the workflow, which holds and retries."""
        decide_now = self.decider(step)
        try:
            return await asyncio.to_thread(write, decide_now)
        except ApplicationError as err:
            if err.type == POLICY_UNAVAILABLE_ERROR:  # nothing was written: say why in the trail
                event = unavailable_event(f"{step}/policy", err, subject)
                await asyncio.to_thread(self.ledger.append, [event])
            raise

    def shadow_original(self, idempotency_key: str) -> ShadowAction | None:
        """The shadow outbox's row recorded under ``idempotency_key`` (detached from its
        session), or None: what a shadow run's compensation undoes."""
        with self.db.read_session() as session:
            original = by_idempotency_key(session, ShadowAction, idempotency_key)
            if original is not None:
                session.expunge(original)
            return original

    def record_shadow(self, action: ShadowAction, event: AuditEvent) -> bool:
        """Record what a shadow run would have done (the shadow outbox) with its audit row,
        once per idempotency key: False when that key was recorded before."""
        with self.db.session() as session:
            if by_idempotency_key(session, ShadowAction, action.idempotency_key) is not None:
                return False
            session.add(action)
            self.ledger.append_in(session, [event])
        return True


class _GovernedInput(Protocol):
    """What every governed write's input carries (a posting's, a grant's)."""

    @property
    def idempotency_key(self) -> str: ...

    @property
    def tenant(self) -> str: ...


def allowed_shadow(
    inp: _GovernedInput,
    action: str,
    outcome: BaseModel,
    approvers: list[str],
    about: dict[str, Any] | None = None,
    **columns: Any,
) -> ShadowAction:
    """The shadow outbox's row of a write that policy allowed in a shadow run, under the
    write's idempotency key: ``about`` it, who approved it and its outcome (a retry returns it).
    ``columns``: the row's period, entry, account and amount, where the write has them."""
    return ShadowAction(
        idempotency_key=inp.idempotency_key,
        workflow_id=activity.info().workflow_id or "",
        action=action,
        tenant=inp.tenant,
        detail={
            **(about or {}),
            "approvers": approvers,
            "outcome": outcome.model_dump(mode="json"),
        },
        **columns,
    )


def shadow_undo(
    original: ShadowAction, inp: CompensationInput, action: str, workflow_id: str, **detail: Any
) -> ShadowAction:
    """The shadow outbox's row of a compensation that undoes ``original``: the same tenant,
    period, entry and account, the amount negated; its detail is the reason, then ``detail``."""
    return ShadowAction(
        idempotency_key=inp.idempotency_key,
        workflow_id=workflow_id,
        action=action,
        tenant=original.tenant,
        period=original.period,
        entry_id=original.entry_id,
        account=original.account,
        amount_cents=-original.amount_cents,
        detail={"reason": inp.reason, **detail},
    )
