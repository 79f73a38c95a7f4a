"""Finance-close activities: data collector, reconciler, policy gate, postings, compensations.

Each public method is a Temporal activity; its name is a public contract (it appears in the Web
UI and in workflow histories). Side effects are idempotent: a posting is keyed by an idempotency
key (workflow id + step + payload digest), so an activity retry never posts twice, and every side
effect commits in the same transaction as its audit row.

The sensitive activity, :meth:`FinanceActivities.post_journal_entry`, asks policy itself right
before it writes (no gap between check and action) and returns the decision as data; it posts only
on ``allow``. The workflow turns ``require_approval`` into a human approval and calls again with
the approval attached, which policy re-checks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import RowMapping, bindparam, insert, update
from sqlalchemy import select as core_select  # any number of columns (sqlmodel's stops at 4)
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import activity_event, compensation_event, decision_event
from activities.claims import claimed_session
from activities.database import (
    AccountingPeriod,
    BankStatementLine,
    JournalPosting,
    LedgerEntryRow,
    ShadowAction,
    from_cents,
    to_cents,
    utcnow,
)
from activities.kill_switch import KillSwitch, Subject
from activities.policy import (
    PolicyEngine,
    unavailable_error,
)
from activities.policy_gate import (
    GovernedWrites,
    PolicyGateActivities,
    allowed_shadow,
    shadow_undo,
)
from activities.store_base import by_idempotency_key
from workflows.contracts import (
    POSTING_POLICY,
    PROCESS_BY_WORKFLOW_TYPE,
    AuditEvent,
    BankLine,
    ClosePeriodInput,
    CollectPeriodInput,
    LedgerLine,
    Match,
    PeriodData,
    PolicyDecision,
    PolicyQuery,
    PostEntryInput,
    PostEntryOutcome,
    ReconcileInput,
    Reconciliation,
    ReverseEntryInput,
    digest,
    posting_policy_input,
)

_L = TypeVar("_L", LedgerLine, BankLine)

POSTINGS = JournalPosting.__table__  # type: ignore[attr-defined]
PERIODS = AccountingPeriod.__table__  # type: ignore[attr-defined]
# The governed step's statements, built once (building one per call cost more than running it).
_STORED_OUTCOME = select(POSTINGS.c.decision_json).where(
    POSTINGS.c.idempotency_key == bindparam("key")
)
_PERIOD_STATUS = select(PERIODS.c.status).where(
    PERIODS.c.tenant == bindparam("tenant"), PERIODS.c.period == bindparam("period")
)
# The reads of a posting in one round trip: the outcome an earlier attempt stored under the
# idempotency key (if any), the period's status, which policy is asked about, and whether any
# kill switch is engaged (only then are the engagements read and matched, in this transaction).
_STORED_OUTCOME_AND_STATUS = core_select(
    _STORED_OUTCOME.scalar_subquery(),
    _PERIOD_STATUS.scalar_subquery(),
    KillSwitch.ENGAGED_ANY.label("switch_engaged"),
)
_INSERT_POSTING = insert(POSTINGS)
LEDGER = LedgerEntryRow.__table__  # type: ignore[attr-defined]
BANK = BankStatementLine.__table__  # type: ignore[attr-defined]
_LEDGER_LINES = (
    core_select(
        LEDGER.c.entry_id,
        LEDGER.c.booked_on,
        LEDGER.c.account,
        LEDGER.c.amount_cents,
        LEDGER.c.reference,
        LEDGER.c.description,
    )
    .where(LEDGER.c.tenant == bindparam("tenant"), LEDGER.c.period == bindparam("period"))
    .order_by(LEDGER.c.entry_id)
)
_BANK_LINES = (
    core_select(
        BANK.c.line_id, BANK.c.value_date, BANK.c.amount_cents, BANK.c.reference, BANK.c.memo
    )
    .where(BANK.c.tenant == bindparam("tenant"), BANK.c.period == bindparam("period"))
    .order_by(BANK.c.line_id)
)
_SET_PERIOD_STATUS = update(PERIODS).where(
    PERIODS.c.tenant == bindparam("p_tenant"), PERIODS.c.period == bindparam("p_period")
)


def _decide_posting(
    inp: PostEntryInput,
    period_status: str,
    decide_now: Callable[[PolicyQuery], PolicyDecision],
    workflow_id: str,
    engine: PolicyEngine,
) -> tuple[PolicyDecision, AuditEvent]:
    """The posting policy's decision on ``inp`` and its audit event (real and shadow postings).
    Raises ``PolicyUnavailable`` when the engine did not answer and it is set to wait."""
    query = PolicyQuery(
        policy=POSTING_POLICY,
        input=posting_policy_input(inp, period_status),
        subject=inp.entry.entry_id,
        workflow_id=workflow_id,
    )
    decision = decide_now(query)
    if (unavailable := unavailable_error(engine, [decision])) is not None:
        raise unavailable  # the caller's transaction rolls back; the workflow holds, retries
    event = decision_event(
        "post/policy",
        decision,
        {"subject": inp.entry.entry_id},
        input_digest=digest(inp),
        after={
            "approval": inp.approval.model_dump() if inp.approval else None,
            **({"shadow": True} if inp.shadow else {}),
        },
    )
    return decision, event


def _line(model: type[_L], columns: RowMapping) -> _L:
    """A ledger or bank line from its row (``_LEDGER_LINES``, ``_BANK_LINES``): each column is
    the field of the same name, but ``amount_cents``, which becomes ``amount``."""
    fields = dict(columns)
    fields["amount"] = from_cents(fields.pop("amount_cents"))
    return model(**fields)


def posting_row(
    inp: PostEntryInput,
    posting_id: str,
    workflow_id: str,
    *,
    approved_by: str | None,
    decision_json: str,
) -> dict[str, object]:
    """The JournalPosting row that posts ``inp``, as a Core insert takes it (no model built)."""
    return dict(
        posting_id=posting_id,
        idempotency_key=inp.idempotency_key,
        tenant=inp.tenant,
        period=inp.period,
        entry_id=inp.entry.entry_id,
        account=inp.entry.account,
        amount_cents=to_cents(inp.entry.amount),
        rationale=inp.entry.rationale,
        prepared_by=inp.preparer,
        approved_by=approved_by,
        workflow_id=workflow_id,
        reverses_posting_id=None,
        decision_json=decision_json,
        posted_at=utcnow(),
    )


def _entry_detail(inp: PostEntryInput, approved_by: str | list[str] | None) -> dict[str, object]:
    """What the audit row of a posting, real or shadow, says about the entry posted: its id,
    account and amount, and who approved it."""
    return {
        "entry_id": inp.entry.entry_id,
        "account": inp.entry.account,
        "amount": str(inp.entry.amount),
        "approved_by": approved_by,
    }


def reconcile(inp: ReconcileInput) -> Reconciliation:
    """Match bank lines to ledger entries deterministically.

    Duplicated ledger entries (same reference, account and amount) are set aside first. A bank
    line then matches exactly (same reference, amount and date) or within tolerance (same
    reference, amount within ``amount_tolerance`` and date within ``date_tolerance_days``).
    """
    seen: dict[tuple[str, str, Decimal], str] = {}
    duplicates: list[LedgerLine] = []
    candidates: dict[str, list[LedgerLine]] = defaultdict(list)
    for entry in inp.data.ledger:
        key = (entry.reference, entry.account, entry.amount)
        if key in seen:
            duplicates.append(entry)
            continue
        seen[key] = entry.entry_id
        candidates[entry.reference].append(entry)

    matches: list[Match] = []
    unmatched_bank: list[BankLine] = []
    used: set[str] = set()
    for line in inp.data.bank:
        best: tuple[int, LedgerLine] | None = None
        for entry in candidates.get(line.reference, []):
            if entry.entry_id in used:
                continue
            diff = abs(line.amount - entry.amount)
            days = abs(
                (date.fromisoformat(line.value_date) - date.fromisoformat(entry.booked_on)).days
            )
            if diff == 0 and days == 0:
                best = (0, entry)
                break
            if diff <= inp.amount_tolerance and days <= inp.date_tolerance_days:
                best = best or (1, entry)
        if best is None:
            unmatched_bank.append(line)
            continue
        rank, entry = best
        used.add(entry.entry_id)
        matches.append(
            Match(
                bank_line_id=line.line_id,
                entry_id=entry.entry_id,
                kind="exact" if rank == 0 else "tolerance",
                difference=line.amount - entry.amount,
            )
        )
    duplicate_ids = {e.entry_id for e in duplicates}
    unmatched_ledger = [
        e for e in inp.data.ledger if e.entry_id not in used and e.entry_id not in duplicate_ids
    ]
    return Reconciliation(
        matches=matches,
        unmatched_bank=unmatched_bank,
        unmatched_ledger=unmatched_ledger,
        duplicate_ledger=duplicates,
    )


class FinanceActivities(GovernedWrites, PolicyGateActivities):
    """Activities over the finance systems of record. Built once in worker.py. It inherits the
    policy preflight (``evaluate_policies``, activities/policy_gate.py) so a worker or bench
    built from it alone still answers the preflight of the close."""

    @staticmethod
    def _subject(tenant: str, preparer: str = "") -> Subject:
        """The kill-switch subject of a sensitive action of the running workflow."""
        workflow_type = activity.info().workflow_type or ""
        return Subject(
            process=PROCESS_BY_WORKFLOW_TYPE.get(workflow_type, workflow_type),
            agent=preparer.removeprefix("agent:"),
            tenant=tenant,
        )

    # -- data collector ------------------------------------------------------------------

    @activity.defn(name="collect_period_data")
    async def collect_period_data(self, inp: CollectPeriodInput) -> PeriodData:
        return await asyncio.to_thread(self._collect, inp)

    def _collect(self, inp: CollectPeriodInput) -> PeriodData:
        key = {"tenant": inp.tenant, "period": inp.period}
        with self.db.session() as session:
            conn = session.connection()  # Core rows: no ORM objects for a few hundred lines
            status = conn.execute(_PERIOD_STATUS, key).scalar()
            if status is None:
                raise ApplicationError(
                    f"no accounting period {inp.period} for tenant {inp.tenant!r} in the "
                    "systems of record (seed it with `baton seed`)",
                    type="PeriodNotFound",
                    non_retryable=True,
                )
            ledger = conn.execute(_LEDGER_LINES, key).all()
            bank = conn.execute(_BANK_LINES, key).all()
            data = PeriodData(
                tenant=inp.tenant,
                period=inp.period,
                period_status="closed" if status == "closed" else "open",
                ledger=[_line(LedgerLine, r._mapping) for r in ledger],
                bank=[_line(BankLine, r._mapping) for r in bank],
            )
            self.ledger.append_in(
                session,
                [
                    activity_event(
                        "collect",
                        actor="agent:data-collector",
                        action="data.collected",
                        detail={"ledger_entries": len(ledger), "bank_lines": len(bank)},
                        output_digest=digest(data),
                    )
                ],
            )
        return data

    # -- reconciler (deterministic part) -------------------------------------------------

    @activity.defn(name="reconcile_transactions")
    async def reconcile_transactions(self, inp: ReconcileInput) -> Reconciliation:
        result = reconcile(inp)
        event = activity_event(
            "reconcile",
            actor="agent:reconciler",
            action="reconciliation.done",
            detail={
                "exact": sum(m.kind == "exact" for m in result.matches),
                "tolerance": sum(m.kind == "tolerance" for m in result.matches),
                "unmatched_bank": len(result.unmatched_bank),
                "unmatched_ledger": len(result.unmatched_ledger),
                "duplicates": len(result.duplicate_ledger),
            },
            input_digest=digest(inp),
            output_digest=digest(result),
        )
        await asyncio.to_thread(self.ledger.append, [event])
        return result

    # -- the sensitive action and its compensation ---------------------------------------

    @activity.defn(name="post_journal_entry")
    async def post_journal_entry(self, inp: PostEntryInput) -> PostEntryOutcome:
        """Post one adjusting entry if, and only if, policy allows it right now.

        Check, decision and write happen in ONE transaction: the period status policy sees
        cannot change before the posting commits, and a retry of an attempt that did post
        finds its posting and returns the same outcome instead of posting again.
        """
        post = self._post_shadow if inp.shadow else self._post
        return await self.write_governed(
            "post", inp.entry.entry_id, lambda decide_now: post(inp, decide_now)
        )

    def _post(
        self, inp: PostEntryInput, decide_now: Callable[[PolicyQuery], PolicyDecision]
    ) -> PostEntryOutcome:
        wf = activity.info().workflow_id or ""
        with claimed_session(self.db, inp.claim) as session:
            conn = session.connection()  # Core statements: this is every governed step
            stored, status, switch_engaged = conn.execute(
                _STORED_OUTCOME_AND_STATUS,
                {"key": inp.idempotency_key, "tenant": inp.tenant, "period": inp.period},
            ).one()
            if stored is not None:
                return PostEntryOutcome.model_validate_json(stored)
            # Inside the transaction: no write while engaged. The switch was read just now, in
            # the statement above; an engagement is matched to this posting only if there is one.
            if self.switch is not None and switch_engaged:
                self.switch.raise_if_blocking(self._subject(inp.tenant, inp.preparer), session)
            decision, policy_event = _decide_posting(
                inp, status or "unknown", decide_now, wf, self.policy
            )
            outcome = PostEntryOutcome(decision=decision)
            events = [*inp.audit_events, policy_event]  # the approval's first, if carried
            if decision.verdict == "allow":
                posting_id = f"P-{uuid.uuid4().hex[:12]}"
                outcome = PostEntryOutcome(decision=decision, posting_id=posting_id)
                # Everyone whose approval the posting carried (N-of-M), in one text column.
                approved_by = ", ".join(inp.approval.approvers) if inp.approval else None
                conn.execute(
                    _INSERT_POSTING,
                    posting_row(
                        inp,
                        posting_id,
                        wf,
                        approved_by=approved_by,
                        decision_json=outcome.model_dump_json(),
                    ),
                )
                events.append(
                    activity_event(
                        "post/posted",
                        actor=inp.preparer,
                        action="ledger.posted",
                        detail={"posting_id": posting_id, **_entry_detail(inp, approved_by)},
                        rationale=inp.entry.rationale,
                        decision_id=decision.decision_id,
                        input_digest=digest(inp.entry),
                    )
                )
            self.ledger.append_in(session, events)
        return outcome

    def _post_shadow(
        self, inp: PostEntryInput, decide_now: Callable[[PolicyQuery], PolicyDecision]
    ) -> PostEntryOutcome:
        """A shadow run's posting: the real policy decision, the intended posting recorded in
        the shadow outbox, nothing written to the ledger. The period counts as open, so a
        shadow run can replay a close that production already finished."""
        wf = activity.info().workflow_id or ""
        with self.db.session() as session:
            done = by_idempotency_key(session, ShadowAction, inp.idempotency_key)
            if done is not None:
                return PostEntryOutcome.model_validate(done.detail["outcome"])
            decision, policy_event = _decide_posting(inp, "open", decide_now, wf, self.policy)
            outcome = PostEntryOutcome(decision=decision)
            events = [*inp.audit_events, policy_event]  # the approval's first, if carried
            if decision.verdict == "allow":
                shadow_id = f"S-{uuid.uuid4().hex[:12]}"
                outcome = PostEntryOutcome(decision=decision, posting_id=shadow_id)
                approvers = inp.approval.approvers if inp.approval else []
                session.add(
                    allowed_shadow(
                        inp,
                        "post",
                        outcome,
                        approvers,
                        period=inp.period,
                        entry_id=inp.entry.entry_id,
                        account=inp.entry.account,
                        amount_cents=to_cents(inp.entry.amount),
                    )
                )
                events.append(
                    activity_event(
                        "post/shadow",
                        actor=inp.preparer,
                        action="shadow.posted",
                        detail=_entry_detail(inp, approvers),
                        rationale=inp.entry.rationale,
                        decision_id=decision.decision_id,
                    )
                )
            self.ledger.append_in(session, events)
        return outcome

    @activity.defn(name="reverse_journal_entry")
    async def reverse_journal_entry(self, inp: ReverseEntryInput) -> str | None:
        """Compensation: post the reversal of what was posted under ``original_key``, if anything.

        Idempotent, and a no-op when the original action never posted (it was denied, awaited
        approval, or failed before writing), so it can be registered before the action runs.
        """
        if inp.shadow:
            return await asyncio.to_thread(self._reverse_shadow, inp)
        return await asyncio.to_thread(self._reverse, inp)

    def _reverse_shadow(self, inp: ReverseEntryInput) -> str | None:
        original = self.shadow_original(inp.original_key)
        if original is None:
            return None
        self.record_shadow(
            shadow_undo(original, inp, "reverse", activity.info().workflow_id or ""),
            compensation_event(
                "reverse",
                "shadow.reversed",
                {"entry_id": original.entry_id, "key": inp.original_key},
                inp.reason,
            ),
        )
        return f"shadow reversal of {original.entry_id}"

    def _reverse(self, inp: ReverseEntryInput) -> str | None:
        wf = activity.info().workflow_id or ""
        with self.db.session() as session:
            original = by_idempotency_key(session, JournalPosting, inp.original_key)
            if original is None:
                return None
            done = by_idempotency_key(session, JournalPosting, inp.idempotency_key)
            if done is not None:
                return done.posting_id
            reversal = JournalPosting(
                posting_id=f"R-{uuid.uuid4().hex[:12]}",
                idempotency_key=inp.idempotency_key,
                tenant=original.tenant,
                period=original.period,
                entry_id=original.entry_id,
                account=original.account,
                amount_cents=-original.amount_cents,
                rationale=f"Reversal of {original.posting_id}: {inp.reason}",
                prepared_by="baton:compensation",
                workflow_id=wf,
                reverses_posting_id=original.posting_id,
                decision_json="",
            )
            session.add(reversal)
            self.ledger.append_in(
                session,
                [
                    compensation_event(
                        "reverse",
                        "ledger.reversed",
                        {
                            "posting_id": reversal.posting_id,
                            "reverses": original.posting_id,
                            "entry_id": original.entry_id,
                            "amount": str(from_cents(reversal.amount_cents)),
                        },
                        inp.reason,
                    )
                ],
            )
            return reversal.posting_id

    @activity.defn(name="close_period")
    async def close_period(self, inp: ClosePeriodInput) -> str:
        """Mark the period closed (or reopen it, as the compensation). Idempotent."""
        return await asyncio.to_thread(self._close_period, inp)

    def _close_period(self, inp: ClosePeriodInput) -> str:
        if inp.shadow:
            wf = activity.info().workflow_id or ""
            step = "reopen" if inp.reopen else "close"
            self.record_shadow(
                ShadowAction(
                    idempotency_key=f"{wf}/{step}-period",
                    workflow_id=wf,
                    action=f"{step}_period",
                    tenant=inp.tenant,
                    period=inp.period,
                ),
                activity_event(
                    step,
                    actor=inp.closed_by,
                    action="shadow.period_reopened" if inp.reopen else "shadow.period_closed",
                    detail={"tenant": inp.tenant, "period": inp.period},
                ),
            )
            return "open" if inp.reopen else "closed"
        with claimed_session(self.db, inp.claim) as session:
            if self.switch is not None and not inp.reopen:  # reopening is an undo: never stopped
                self.switch.raise_if_blocking(self._subject(inp.tenant), session)
            conn = session.connection()
            status = conn.execute(
                _PERIOD_STATUS, {"tenant": inp.tenant, "period": inp.period}
            ).scalar()
            if status is None:
                raise ApplicationError(
                    f"no accounting period {inp.period} for tenant {inp.tenant!r}",
                    type="PeriodNotFound",
                    non_retryable=True,
                )
            new_status = "open" if inp.reopen else "closed"
            if status != new_status:
                conn.execute(
                    _SET_PERIOD_STATUS,
                    {
                        "p_tenant": inp.tenant,
                        "p_period": inp.period,
                        "status": new_status,
                        "closed_by": None if inp.reopen else inp.closed_by,
                        "closed_at": None if inp.reopen else utcnow(),
                    },
                )
            self.ledger.append_in(
                session,
                [
                    activity_event(
                        "reopen" if inp.reopen else "close",
                        actor=inp.closed_by,
                        action="period.reopened" if inp.reopen else "period.closed",
                        detail={"tenant": inp.tenant, "period": inp.period},
                    )
                ],
            )
            return new_status


__all__ = [
    "BANK",
    "FinanceActivities",
    "LEDGER",
    "PERIODS",
    "POSTINGS",
    "POSTING_POLICY",
    "posting_policy_input",
    "reconcile",
]
