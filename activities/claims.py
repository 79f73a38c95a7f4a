"""Business-key claims: one run of a business process per business key, enforced in the database.

A process's business key (a finance close: tenant + period; HR onboarding: the employee; customer
onboarding: the customer; support: the case) is its canonical workflow id. Temporal refuses a
second run under that id, but a service team that starts the same close under ANOTHER workflow id
with Temporal's own tools would get a second close of the same period. The ``process_claim``
table closes that gap where the data lives:

* :func:`claim_or_check` runs inside the transaction of every side effect of a run (a posting,
  a grant, a CRM commit, a ticket update, closing the period). The first one claims the key
  (inserts the row, or takes over a released one) in the same transaction as the side effect;
  every later one checks the run still owns it. Another owner fails the activity with the
  non-retryable ``BusinessKeyClaimed`` naming the owner, and the transaction (the side effect
  included) rolls back: nothing is posted, granted or sent.
* The owner is the workflow id: its retries and its continued-as-new runs are the same owner
  (the row's ``run_id`` follows the latest run that acted).
* :meth:`ClaimActivities.check_business_key` is the cheap read-only look a run takes at its
  start, so a refused run fails before its agents run; before a run asks humans to approve it
  takes the claim (asking people is acting on the key), so two racing runs never both ask.
* :meth:`ClaimActivities.settle_business_key` ends a claim when its run ends: a completed run
  keeps it (``kept``: a closed period stays closed) or releases it, per process; a failed run
  releases it, so the key can be run again. :meth:`ClaimActivities.release_business_keys`
  lets a repair of a terminated run release what the run could not (workflows/repair.py).

Races: on PostgreSQL the insert is ``ON CONFLICT DO NOTHING`` followed by ``SELECT ... FOR
UPDATE``, so of two runs claiming at once one waits for the other's transaction and then sees
its row; SQLite serialises writers (``BEGIN IMMEDIATE``).

Must not: talk to Temporal or decide which runs may start (the client does that); compensations
never check claims (undoing is always allowed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.database import Database, as_utc, utcnow
from workflows import errors
from workflows.contracts import BusinessClaim, ClaimCheckInput, SettleClaimInput
from workflows.contracts.integrity import FindEffectsInput

ClaimState = Literal["active", "released", "kept"]


class ProcessClaim(SQLModel, table=True):
    """Who owns a business key. One row per (process, business key), never deleted: a released
    row is taken over by the next run, a kept one refuses every other run."""

    __tablename__ = "process_claim"
    process: str = Field(primary_key=True)
    business_key: str = Field(primary_key=True)
    workflow_id: str = Field(index=True)  # the owner: its runs (retries, continue-as-new)
    run_id: str  # the owner's latest run that claimed or acted
    state: str = "active"  # active | released | kept
    claimed_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


CLAIMS = ProcessClaim.__table__  # type: ignore[attr-defined]
# bound as c_process / c_key: update() reserves the column names for its SET clause
_KEY = (CLAIMS.c.process == bindparam("c_process")) & (CLAIMS.c.business_key == bindparam("c_key"))
_SELECT_FOR_UPDATE = select(CLAIMS).where(_KEY).with_for_update()
_SELECT = select(CLAIMS).where(_KEY)
# built once (a statement built per call cost more than running it)
_INSERT_PG = postgresql.insert(CLAIMS).on_conflict_do_nothing(
    index_elements=["process", "business_key"]
)
_INSERT_SQLITE = sqlite.insert(CLAIMS).on_conflict_do_nothing(
    index_elements=["process", "business_key"]
)
_TAKE_OVER = update(CLAIMS).where(_KEY).values(state="active", updated_at=bindparam("now"))
_NEW_RUN = update(CLAIMS).where(_KEY).values(updated_at=bindparam("now"))


def claimed_error(
    claim: BusinessClaim, owner_workflow_id: str, owner_run_id: str, state: str
) -> ApplicationError:
    """The typed refusal: which run owns the key, and since when it counts as owned."""
    how = "completed and keeps it" if state == "kept" else "owns it"
    return errors.failure(
        errors.BUSINESS_KEY_CLAIMED,
        f"{claim.process} {claim.key} is claimed by workflow {owner_workflow_id} "
        f"(run {owner_run_id}), which {how}: this run did nothing",
        process=claim.process,
        business_key=claim.key,
        owner_workflow_id=owner_workflow_id,
        owner_run_id=owner_run_id,
        state=state,
    )


def _refusal(
    claim: BusinessClaim, row: Any, workflow_id: str, run_id: str
) -> ApplicationError | None:
    """Why ``workflow_id``/``run_id`` may not act on ``claim`` given its row (None: it may)."""
    if row is None or row.state == "released":
        return None
    if row.state == "active" and row.workflow_id == workflow_id:
        return None  # the owner: an activity retry, a later step, a continued run
    if row.state == "kept" and row.workflow_id == workflow_id and row.run_id == run_id:
        return None  # the run that completed (a late retry of its last step)
    return claimed_error(claim, row.workflow_id, row.run_id, row.state)


def claim_or_check(
    session: Session, claim: BusinessClaim | None, workflow_id: str, run_id: str
) -> None:
    """Claim ``claim`` for the run, or check the run still owns it, inside ``session``'s
    transaction (the caller's side effect commits or rolls back with it). Raises the
    non-retryable ``BusinessKeyClaimed`` when another run owns it. No-op without a claim
    (shadow runs, compensations, processes without a business key).

    The owner's later side effects cost one ``SELECT ... FOR UPDATE``; the first one inserts
    the row (``ON CONFLICT DO NOTHING``: a run that raced it waits for its transaction, then
    reads its row)."""
    if claim is None:
        return
    conn = session.connection()
    key = {"c_process": claim.process, "c_key": claim.key}
    row = conn.execute(_SELECT_FOR_UPDATE, key).one_or_none()
    now = utcnow()
    if row is None:
        insert = _INSERT_PG if conn.dialect.name == "postgresql" else _INSERT_SQLITE
        conn.execute(
            insert,
            {
                "process": claim.process,
                "business_key": claim.key,
                "workflow_id": workflow_id,
                "run_id": run_id,
                "state": "active",
                "claimed_at": now,
                "updated_at": now,
            },
        )
        row = conn.execute(_SELECT_FOR_UPDATE, key).one()
    refusal = _refusal(claim, row, workflow_id, run_id)
    if refusal is not None:
        raise refusal
    if row.state == "released":  # a failed run let it go: this run takes it over
        conn.execute(
            _TAKE_OVER,
            {**key, "workflow_id": workflow_id, "run_id": run_id, "claimed_at": now, "now": now},
        )
    elif row.run_id != run_id and row.state == "active":  # continued as new / a new run
        conn.execute(_NEW_RUN, {**key, "run_id": run_id, "now": now})


@contextmanager
def claimed_session(db: Database, claim: BusinessClaim | None) -> Iterator[Session]:
    """The running activity's write transaction on ``db``, ``claim`` taken (or checked) for its
    run first (:func:`claim_or_check`): what the activity writes in it commits only while the
    run owns its business key."""
    info = activity.info()
    with db.session() as session:
        claim_or_check(session, claim, info.workflow_id or "", info.workflow_run_id or "")
        yield session


def check(session: Session, claim: BusinessClaim, workflow_id: str, run_id: str) -> None:
    """The read-only look: raise ``BusinessKeyClaimed`` if another run owns ``claim`` now."""
    row = (
        session.connection()
        .execute(_SELECT, {"c_process": claim.process, "c_key": claim.key})
        .one_or_none()
    )
    refusal = _refusal(claim, row, workflow_id, run_id)
    if refusal is not None:
        raise refusal


def settle(session: Session, inp: SettleClaimInput, workflow_id: str) -> ClaimState | None:
    """End the run's claim: kept or released (only the owner's row changes). The row's state
    afterwards, or None when the run never claimed the key (or another run owns it)."""
    claim = inp.claim
    key = {"c_process": claim.process, "c_key": claim.key}
    conn = session.connection()
    row = conn.execute(_SELECT_FOR_UPDATE, key).one_or_none()
    if row is None or row.workflow_id != workflow_id or row.state != "active":
        return None if row is None or row.workflow_id != workflow_id else row.state
    state: ClaimState = "kept" if inp.outcome == "completed" and inp.keep else "released"
    conn.execute(update(CLAIMS).where(_KEY).values(state=state, updated_at=utcnow()), key)
    return state


def release_claims_of(session: Session, workflow_id: str, run_id: str = "") -> list[str]:
    """Release every active claim ``workflow_id`` holds (its run ``run_id`` when given), after
    a repair undid what its terminated run left standing; the keys released."""
    held = (CLAIMS.c.workflow_id == workflow_id) & (CLAIMS.c.state == "active")
    if run_id:
        held = held & (CLAIMS.c.run_id == run_id)
    conn = session.connection()
    rows = conn.execute(
        select(CLAIMS.c.process, CLAIMS.c.business_key).where(held).with_for_update()
    ).all()
    if rows:
        conn.execute(update(CLAIMS).where(held).values(state="released", updated_at=utcnow()))
    return [f"{r.process}:{r.business_key}" for r in rows]


def claim_of(db: Database, process: str, business_key: str) -> ProcessClaim | None:
    """The claim row of a business key, for operators and tests."""
    with db.read_session() as session:
        row = session.get(ProcessClaim, (process, business_key))
        if row is not None:
            row.claimed_at, row.updated_at = as_utc(row.claimed_at), as_utc(row.updated_at)
            session.expunge(row)
        return row


@dataclass(eq=False)  # one instance per worker: identity, not field equality
class ClaimActivities:
    """The claim check at a run's start and the claim's end. Built once in worker.py."""

    db: Database

    @activity.defn(name="check_business_key")
    async def check_business_key(self, inp: ClaimCheckInput) -> None:
        """Fail fast, before agents and approvals, when another run owns the business key;
        with ``take``, claim it (before the run asks anyone to approve)."""
        info = activity.info()
        ids = (info.workflow_id or "", info.workflow_run_id or "")
        await asyncio.to_thread(self._check, inp.claim, *ids, take=inp.take)

    def _check(
        self, claim: BusinessClaim, workflow_id: str, run_id: str, *, take: bool = False
    ) -> None:
        if take:
            with self.db.session() as session:
                claim_or_check(session, claim, workflow_id, run_id)
            return
        with self.db.read_session() as session:
            check(session, claim, workflow_id, run_id)

    @activity.defn(name="settle_business_key")
    async def settle_business_key(self, inp: SettleClaimInput) -> str | None:
        """The run ended: keep its claim or release it (docs/processes.md, claim rules)."""
        workflow_id = activity.info().workflow_id or ""
        return await asyncio.to_thread(self._settle, inp, workflow_id)

    def _settle(self, inp: SettleClaimInput, workflow_id: str) -> str | None:
        with self.db.session() as session:
            return settle(session, inp, workflow_id)

    @activity.defn(name="release_business_keys")
    async def release_business_keys(self, inp: FindEffectsInput) -> list[str]:
        """A repair undid what a terminated run left standing: release the run's claims, so
        its business key may run again (workflows/repair.py)."""
        return await asyncio.to_thread(self._release, inp)

    def _release(self, inp: FindEffectsInput) -> list[str]:
        with self.db.session() as session:
            return release_claims_of(session, inp.workflow_id, inp.run_id)


__all__ = [
    "CLAIMS",
    "ClaimActivities",
    "ClaimState",
    "ProcessClaim",
    "check",
    "claim_of",
    "claim_or_check",
    "claimed_error",
    "claimed_session",
    "release_claims_of",
    "settle",
]
