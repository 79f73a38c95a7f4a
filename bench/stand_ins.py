"""What the benchmark registers next to Baton's real activities.

- ``noop``: the bare activity every ratio is measured against.
- ``InstantAgents``: Baton's real agent activities (same names, same parsing, same schema
  validation, same audit row) with the model call replaced by an instant, deterministic answer,
  so a finance close needs no model server and no human: five small entries on allowed accounts,
  no compliance findings. With ``approval_amount`` set, the reconciler adds one entry that large,
  which the posting policy sends to a finance controller.
- ``PlainPosting``: the governed step's posting written by a plain activity (the same row, the
  same idempotency check, one transaction) with no policy, no kill switch and no audit: what the
  posting costs without governance, so governed / plain is governance's own cost.
- the input models of the bench workflows (shared with the workflow sandbox by pass-through).

Must not: do work at import time (the workflow sandbox imports this module).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from temporalio import activity

from activities.agents import AgentActivities, AnswerCheck, Route
from activities.audit import AuditLedger
from activities.database import Database, JournalPosting
from activities.finance import posting_row
from baton.settings import REPO_ROOT, Settings
from workflows.contracts import PostEntryInput, TokenUsage

T = TypeVar("T", bound=BaseModel)


def stand_in_settings(state: Path, **overrides: Any) -> Settings:
    """Worker settings of a bench whose agents are instant stand-ins: a SQLite database in
    ``state``, the repository's policies, and a model URL nothing listens on (never called)."""
    return dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{state / 'baton.db'}",
        policy_dir=REPO_ROOT / "policy",
        openai_base_url="http://127.0.0.1:9/v1",
        **overrides,
    )


INSTANT_MODEL = "bench-instant-agent-not-an-llm"
AGENT_ACTIVITY_NAMES = ("propose_adjustments", "review_compliance", "write_close_memo")

# (entry id, account, amount): all on allowed accounts, all below the approval threshold.
SMALL_ENTRIES: list[tuple[str, str, str]] = [
    ("ADJ-FEE-0", "6100-bank-fees", "-25.00"),
    ("ADJ-FEE-1", "6100-bank-fees", "-18.50"),
    ("ADJ-INT-1", "7100-interest-income", "317.42"),
    ("ADJ-INT-2", "7100-interest-income", "89.15"),
    ("ADJ-RFD-1", "2000-accounts-payable", "765.00"),
]


class NoopInput(BaseModel):
    step: int = 0
    label: str = ""


class LoopInput(BaseModel):
    """One workflow that runs ``steps`` steps of one kind back to back."""

    mode: Literal["bare", "local", "governed", "naive", "plain"]
    steps: int
    tenant: str = "acme"
    period: str = ""


class BareCloseInput(BaseModel):
    posts: int = len(SMALL_ENTRIES)


@activity.defn(name="bench_noop")
async def noop(inp: NoopInput) -> None:
    """Does nothing: the cost of an activity is then all orchestration."""
    return None


class PlainPosting:
    """The posting without governance (the bench's baseline for governance's own cost)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @activity.defn(name="bench_plain_post")
    async def plain_post(self, inp: PostEntryInput) -> str:
        return await asyncio.to_thread(self._post, inp)

    def _post(self, inp: PostEntryInput) -> str:
        from sqlalchemy import insert, select

        table = JournalPosting.__table__  # type: ignore[attr-defined]
        with self.db.session() as session:
            conn = session.connection()
            stored = conn.execute(
                select(table.c.posting_id).where(table.c.idempotency_key == inp.idempotency_key)
            ).scalar()
            if stored is not None:
                return str(stored)
            posting_id = f"P-{uuid.uuid4().hex[:12]}"
            workflow_id = activity.info().workflow_id or ""
            conn.execute(
                insert(table),
                posting_row(inp, posting_id, workflow_id, approved_by=None, decision_json=""),
            )
        return posting_id


class InstantAgents(AgentActivities):
    """The real agent activities with an instant, deterministic stand-in for the model."""

    def __init__(self, ledger: AuditLedger, *, approval_amount: Decimal | None = None) -> None:
        super().__init__(None, ledger, model=INSTANT_MODEL)  # type: ignore[arg-type]
        self.approval_amount = approval_amount

    async def _ask(
        self,
        agent: str,
        payload: BaseModel,
        wire: type[T],
        chosen: Route | None = None,
        *,
        check: AnswerCheck | None = None,
        schema_wire: type[BaseModel] | None = None,
    ) -> tuple[T, TokenUsage]:
        """The canned answer (``check`` and ``schema_wire`` are not applied: the benches
        measure orchestration, not answers)."""
        answer: dict[str, Any]
        if agent == "reconciler":
            entries = [
                {
                    "entry_id": entry_id,
                    "account": account,
                    "amount": amount,
                    "source_ids": [entry_id.removeprefix("ADJ-")],
                    "rationale": "bench: instant stand-in for the reconciler agent",
                }
                for entry_id, account, amount in SMALL_ENTRIES
            ]
            if self.approval_amount is not None:
                entries.append(
                    {
                        "entry_id": "ADJ-UNKNOWN-1",
                        "account": "6900-suspense",
                        "amount": str(self.approval_amount),
                        "source_ids": ["UNKNOWN-1"],
                        "rationale": "bench: unexplained deposit parked in suspense",
                    }
                )
            answer = {"entries": entries}
        elif agent == "compliance_checker":
            answer = {"summary": "bench: no findings", "findings": []}
        elif agent == "close_memo_writer":
            answer = {"memo": "bench: close memo"}
        else:  # a new agent: fail loudly rather than measure something else
            raise RuntimeError(f"InstantAgents has no canned answer for agent {agent!r}")
        return wire.model_validate(answer), TokenUsage(model=INSTANT_MODEL)
