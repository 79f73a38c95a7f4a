"""Customer-support escalation: the four routed agents and the ticketing system of record.

Agents (each asks the router for a task class, never a model; activities/router.py):
- triage classifier (``triage``): category + confidence; tier-0 rules first;
- L2 researcher (``research``): retrieves passages from the knowledge layer (``KnowledgeSource``)
  and answers from them, citing passage ids; the passages' provenance goes to the audit trail;
- case summarizer (``summarize``);
- ticketing integrator (``ticket_update``): drafts the ticket update (status, reply, tags).

The sensitive action is ``apply_ticket_update``: it asks policy (policy/support/ticket_update.rego)
and writes the ticket in ONE transaction, idempotently per key (a retry returns the stored
outcome and writes nothing twice).

Knowledge: the researcher reads through ``KnowledgeSource``; the worker gives it
``VectorKnowledgeSource``, the knowledge layer (activities/knowledge.py: real embeddings, vector
search with provenance, audited retrievals). config/support_articles.json holds support articles
to ingest (``baton support articles``).

Must not: be imported by workflows (it does I/O).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from pydantic import Field as WireField
from sqlmodel import Field, SQLModel, select
from temporalio import activity

from activities import answer_checks
from activities.audit import AuditLedger, activity_event
from activities.claims import claimed_session
from activities.database import Database
from activities.kill_switch import KillSwitch, Subject
from activities.knowledge import KnowledgeBase
from activities.policy import PolicyEngine
from activities.policy_gate import GovernedWrites
from activities.prompts import StablePrompts
from activities.router import Router
from activities.store_base import StoredOutcome, stored_outcome
from workflows.contracts import PolicyDecision, PolicyQuery, digest
from workflows.contracts.knowledge import KnowledgeDocument, KnowledgeQuery
from workflows.contracts.support import (
    SUPPORT_PROCESS,
    CaseSummary,
    Category,
    Passage,
    Research,
    ResearchInput,
    SummaryInput,
    TicketDraft,
    TicketDraftInput,
    TicketStatus,
    TicketUpdateInput,
    TicketUpdateOutcome,
    Triage,
    TriageInput,
)

TICKET_POLICY = "baton/support/ticket_update"

#: The agents' prompts (activities/prompts/<role>.md, read on first use).
SUPPORT_PROMPTS = StablePrompts(
    ["triage_classifier", "l2_researcher", "case_summarizer", "ticketing_integrator"]
)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WireTriage(_Wire):
    category: Category = WireField(description="The ticket's one category.")
    confidence: float = WireField(ge=0, le=1, description="0 = a guess, 1 = certain.")


class _WireResearch(_Wire):
    answer: str = WireField(description="What to tell the customer, from the passages only.")
    cited: list[str] = WireField(description="passage_id of each input passage used.")
    confidence: float = WireField(
        ge=0, le=1, description="0..1; low when the passages do not help."
    )


class _WireSummary(_Wire):
    summary: str = WireField(description="The case in at most three sentences.")


class _WireTicket(_Wire):
    status: TicketStatus = WireField(
        description="open: still being worked on; pending_customer: waiting for the customer; "
        "resolved: answered."
    )
    reply: str = WireField(description="The message to the customer.")
    tags: list[str] = WireField(description="Short lowercase labels, e.g. the category.")


# -- knowledge ---------------------------------------------------------------------------------


class KnowledgeSource(Protocol):
    """Where the L2 researcher's passages come from (the knowledge layer)."""

    name: str

    async def retrieve(self, tenant: str, query: str, k: int) -> list[Passage]: ...


class VectorKnowledgeSource:
    """The knowledge layer (activities/knowledge.py): real embeddings, tenant-scoped vector
    search, hits with provenance; every retrieval is audited there (``knowledge.retrieved``:
    who asked, the query by digest, every source shown)."""

    name = "knowledge-layer"

    def __init__(self, kb: KnowledgeBase, kinds: Sequence[str] = ()) -> None:
        self.kb = kb
        self.kinds = list(kinds)

    async def retrieve(self, tenant: str, query: str, k: int) -> list[Passage]:
        info = activity.info()
        key = (
            info.workflow_id or "",
            info.workflow_run_id or "",
            f"act/{info.activity_id}/knowledge/{info.attempt}",
        )
        result = await self.kb.search(
            KnowledgeQuery(
                tenant=tenant,
                query=query[:2000],
                k=k,
                kinds=self.kinds,
                requested_by="agent:l2_researcher",
            ),
            audit_key=key,
        )
        return [
            Passage(
                passage_id=f"{hit.doc_id}#{hit.chunk}",
                source=hit.provenance.source,
                text=hit.text,
                score=round(hit.score, 6),
            )
            for hit in result.hits
        ]


SUPPORT_ARTICLE_KIND = "support_article"


def support_articles(path: str | Path, tenant: str) -> list[KnowledgeDocument]:
    """The support articles of ``path`` (config/support_articles.json) as knowledge documents of
    ``tenant``, for ``baton support articles`` and the tests to ingest."""
    raw = json.loads(Path(path).read_text())
    return [
        KnowledgeDocument(
            doc_id=a["passage_id"],
            tenant=tenant,
            title=a["passage_id"],
            text=a["text"],
            kind=SUPPORT_ARTICLE_KIND,
            source=a["source"],
            author="support-team",
            created_at=datetime(2026, 1, 5, tzinfo=UTC),
        )
        for a in raw["articles"]
    ]


# -- the ticketing system of record ------------------------------------------------------------


class SupportTicket(SQLModel, table=True):
    __tablename__ = "support_ticket"
    case_id: str = Field(primary_key=True)
    tenant: str = Field(primary_key=True)
    customer: str
    category: str
    status: str
    reply: str
    tags: str  # JSON list
    version: int = 0
    updated_by: str
    approved_by: str | None = None
    updated_at: datetime


class TicketUpdateAttempt(StoredOutcome, table=True):
    """One idempotency key's stored outcome: a retry returns it instead of writing again."""

    __tablename__ = "support_ticket_update"
    case_id: str = Field(index=True)


def ticket_policy_input(inp: TicketUpdateInput) -> dict[str, object]:
    """The exact input document the ticket policy sees (policy/support/ticket_update.rego)."""
    return {
        "action": "update_ticket",
        "tenant": inp.case.tenant,
        "case": {
            "case_id": inp.case.case_id,
            "priority": inp.case.priority,
            "customer_value_usd": inp.case.customer_value_usd,
            "category": inp.category,
        },
        "update": {"status": inp.status, "reply_chars": len(inp.reply.strip())},
        "requested_by": inp.requested_by,
        "approval": inp.approval.model_dump(mode="json") if inp.approval else None,
    }


def ticket_of(db: Database, tenant: str, case_id: str) -> SupportTicket | None:
    with db.read_session() as session:
        row = session.get(SupportTicket, (case_id, tenant))
        return SupportTicket.model_validate(row.model_dump()) if row else None


def ticket_updates(db: Database, case_id: str) -> int:
    with db.read_session() as session:
        return len(
            session.exec(
                select(TicketUpdateAttempt).where(TicketUpdateAttempt.case_id == case_id)
            ).all()
        )


class SupportActivities(GovernedWrites):
    """The support agents and the ticketing connector. Built once in worker.py."""

    def __init__(
        self,
        router: Router,
        knowledge: KnowledgeSource,
        db: Database,
        ledger: AuditLedger,
        policy: PolicyEngine,
        switch: KillSwitch | None = None,
    ) -> None:
        super().__init__(db, ledger, policy, switch)
        self.router = router
        self.knowledge = knowledge

    @activity.defn(name="triage_ticket")
    async def triage_ticket(self, inp: TriageInput) -> Triage:
        wire, usage = await self.router.ask(
            "triage_classifier", "triage", SUPPORT_PROMPTS["triage_classifier"], inp,
            _WireTriage, _triage_confidence,
        )  # fmt: skip
        return Triage.model_validate(
            {"category": wire.category, "confidence": wire.confidence, "usage": usage}
        )

    @activity.defn(name="research_case")
    async def research_case(self, inp: ResearchInput) -> Research:
        query = f"{inp.subject} {inp.body}"
        passages = await self.knowledge.retrieve(inp.tenant, query, 4)  # audited there
        routed = _ResearchPayload(
            **inp.model_dump(),
            passages=[p.model_dump(include={"passage_id", "text"}) for p in passages],
        )
        wire, usage = await self.router.ask(
            "l2_researcher", "research", SUPPORT_PROMPTS["l2_researcher"], routed, _WireResearch,
            lambda w: w.confidence,
            check=answer_checks.research(p.passage_id for p in passages),
        )  # fmt: skip
        return Research(answer=wire.answer, cited=wire.cited, passages=passages, usage=usage)

    @activity.defn(name="summarize_case")
    async def summarize_case(self, inp: SummaryInput) -> CaseSummary:
        wire, usage = await self.router.ask(
            "case_summarizer", "summarize", SUPPORT_PROMPTS["case_summarizer"], inp,
            _WireSummary, check=answer_checks.summary,
        )  # fmt: skip
        return CaseSummary(summary=wire.summary, usage=usage)

    @activity.defn(name="draft_ticket_update")
    async def draft_ticket_update(self, inp: TicketDraftInput) -> TicketDraft:
        wire, usage = await self.router.ask(
            "ticketing_integrator", "ticket_update", SUPPORT_PROMPTS["ticketing_integrator"],
            inp, _WireTicket, check=answer_checks.ticket,
        )  # fmt: skip
        return TicketDraft.model_validate(
            {"status": wire.status, "reply": wire.reply, "tags": wire.tags, "usage": usage}
        )

    @activity.defn(name="apply_ticket_update")
    async def apply_ticket_update(self, inp: TicketUpdateInput) -> TicketUpdateOutcome:
        """Update the ticket if, and only if, policy allows it now (one transaction)."""
        return await asyncio.to_thread(self._apply, inp, self.decider("ticket"))

    def _apply(
        self, inp: TicketUpdateInput, decide_now: Callable[[PolicyQuery], PolicyDecision]
    ) -> TicketUpdateOutcome:
        wf = activity.info().workflow_id or ""
        with claimed_session(self.db, inp.claim) as session:
            stored = stored_outcome(
                session, TicketUpdateAttempt, inp.idempotency_key, TicketUpdateOutcome
            )
            if stored is not None:
                return stored
            if self.switch is not None:  # engaged for the process, the tenant or the integrator?
                subject = Subject(
                    process=SUPPORT_PROCESS, agent="ticketing_integrator", tenant=inp.case.tenant
                )
                self.switch.raise_if_blocking(subject, session)
            decision = decide_now(
                PolicyQuery(
                    policy=TICKET_POLICY,
                    input=ticket_policy_input(inp),
                    subject=inp.case.case_id,
                    workflow_id=wf,
                )
            )
            outcome = TicketUpdateOutcome(decision=decision)
            events = [
                activity_event(
                    "ticket/policy",
                    actor=f"policy:{decision.policy}",
                    action=f"policy.{decision.verdict}",
                    detail={
                        "subject": inp.case.case_id,
                        "reasons": decision.reasons,
                        "revision": decision.revision,
                        "approval": inp.approval.model_dump() if inp.approval else None,
                    },
                    decision_id=decision.decision_id,
                    input_digest=digest(inp),
                )
            ]
            if decision.verdict == "allow":
                ticket = session.get(SupportTicket, (inp.case.case_id, inp.case.tenant))
                version = (ticket.version if ticket else 0) + 1
                approved = ", ".join(inp.approval.approvers) if inp.approval else None
                values: dict[str, Any] = {
                    "customer": inp.case.customer,
                    "category": inp.category,
                    "status": inp.status,
                    "reply": inp.reply,
                    "tags": json.dumps(inp.tags),
                    "version": version,
                    "updated_by": "agent:ticketing_integrator",
                    "approved_by": approved,
                    "updated_at": datetime.now(UTC),
                }
                if ticket is None:
                    session.add(
                        SupportTicket(case_id=inp.case.case_id, tenant=inp.case.tenant, **values)
                    )
                else:
                    for k, v in values.items():
                        setattr(ticket, k, v)
                    session.add(ticket)
                outcome = TicketUpdateOutcome(
                    decision=decision, ticket_version=version, applied=True
                )
                events.append(
                    activity_event(
                        "ticket/updated",
                        actor="agent:ticketing_integrator",
                        action="ticket.updated",
                        detail={
                            "case_id": inp.case.case_id,
                            "status": inp.status,
                            "version": version,
                            "approved_by": approved,
                        },
                        decision_id=decision.decision_id,
                        input_digest=digest(inp),
                    )
                )
            session.add(
                TicketUpdateAttempt.of(inp.idempotency_key, outcome, case_id=inp.case.case_id)
            )
            self.ledger.append_in(session, events)
            return outcome


class _ResearchPayload(ResearchInput):
    """What the researcher model sees: the case plus the retrieved passages."""

    passages: list[dict[str, object]]


def _triage_confidence(wire: _WireTriage) -> float:
    return wire.confidence


__all__ = [
    "KnowledgeSource",
    "SUPPORT_ARTICLE_KIND",
    "SUPPORT_PROMPTS",
    "SupportActivities",
    "SupportTicket",
    "TICKET_POLICY",
    "TicketUpdateAttempt",
    "VectorKnowledgeSource",
    "support_articles",
    "ticket_of",
    "ticket_policy_input",
    "ticket_updates",
]
