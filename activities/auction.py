"""Auction activities: bidders' offers, the awarded review, and the review register.

* ``bid_on_task``: the bidding tier's agent (``auction_bidder``, on the tier's own model,
  through the governed agent call of activities/agents.py) reads the task and says whether it
  bids and how many tokens it expects to write; the worker turns that into the bid: expected
  tokens = the review prompt's size (~4 characters a token) + the answer it expects; expected
  cost = tokens at the tier's declared price; expected latency = the tier's base latency +
  its per-1k-token latency. The bid carries the tier's capabilities; the allocator checks them.
* ``check_award``: the award gate: asks policy/auction/award.rego whether the winner may get the
  task (its clearance for the document's classification, the tenant's cost cap); the decision
  is returned as data and audited. A deny makes the allocator pass to the next-ranked bidder.
* ``review_document``: the awarded work, done by the winner's agent (``document_reviewer``) on
  the winner's model.
* ``publish_review`` (system of record: table ``document_review``) writes a review once per
  idempotency key, with its audit row in the same transaction; ``retract_review`` is its
  compensation (a no-op when nothing was published).

Must not: be imported by workflows except through ``imports_passed_through``.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Field as SqlField
from sqlmodel import SQLModel
from temporalio import activity

from activities import answer_checks
from activities.agents import AgentActivities, Route
from activities.audit import AuditLedger, activity_event, compensation_event, decision_event
from activities.database import Database, utcnow
from activities.policy import PolicyEngine, decide
from activities.prompts import StablePrompts
from activities.router import Catalogue
from workflows.contracts import STABLE_VERSION, PolicyDecision, PolicyQuery, digest
from workflows.contracts.auction import (
    DEFAULT_TIERS,
    AgentTier,
    AwardCheckInput,
    Bid,
    BidRequest,
    BidResponse,
    PublishReviewInput,
    RetractReviewInput,
    ReviewInput,
    ReviewResult,
)

#: The agents' prompts (activities/prompts/<role>.md, read on first use).
AUCTION_PROMPTS = StablePrompts(["auction_bidder", "document_reviewer"])


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WireBid(_Wire):
    bid: bool = Field(description="True to bid for the task.")
    expected_completion_tokens: int = Field(
        ge=0, le=100_000, description="Tokens of the review answer; 0 when not bidding."
    )
    reason: str = Field(description="Why (not), in one line.")


class _WireReview(_Wire):
    verdict: Literal["approve", "flag"] = Field(
        description="flag when any risky clause is present, else approve."
    )
    findings: list[str] = Field(description="One per risky clause, naming it.")
    summary: str = Field(description="Two sentences.")


class DocumentReviewRow(SQLModel, table=True):
    """One published document review (the system of record reviewers' outputs go to)."""

    __tablename__ = "document_review"
    idempotency_key: str = SqlField(primary_key=True)
    tenant: str = SqlField(index=True)
    batch_id: str = SqlField(index=True)
    task_id: str
    doc_id: str
    tier: str
    verdict: str
    findings_json: str
    summary: str
    workflow_id: str = SqlField(index=True)
    published_at: datetime = SqlField(default_factory=utcnow)
    retracted_at: datetime | None = None
    retract_reason: str | None = None


AWARD_POLICY = "baton/auction/award"


def award_policy_input(inp: AwardCheckInput) -> dict[str, object]:
    """The input document of the award policy (policy/auction/award.rego)."""
    return {
        "action": "award_task",
        "tenant": inp.tenant,
        "task": {
            "task_id": inp.task.task_id,
            "classification": inp.task.classification,
            "requires": inp.task.requires,
        },
        "winner": {"name": inp.winner.name, "model": inp.winner.model},
        # micro-dollars as an integer: both policy engines compare the same digits
        "expected_cost_microusd": round(inp.expected_cost_usd * 1_000_000),
    }


def catalogue_tiers(catalogue: Catalogue) -> list[AgentTier]:
    """The CLI's and the demo's default tiers (DEFAULT_TIERS: capabilities, prices, speeds) on
    the catalogue's models, so they name models the configured servers serve: small on the
    cheapest model that can review, medium on the cheapest strong one, large on the strongest."""
    task_class = "review" if "review" in catalogue.task_classes else None
    models = catalogue.candidates(task_class) if task_class else list(catalogue.models)
    if not models:
        return list(DEFAULT_TIERS)
    strong = [m for m in models if m.tier == "strong"]
    names = {
        "small": models[0].name,
        "medium": (strong[0] if strong else models[-1]).name,
        "large": models[-1].name,
    }
    return [
        t.model_copy(update={"model": names.get(t.name, models[-1].name)}) for t in DEFAULT_TIERS
    ]


def estimated_prompt_tokens(inp: ReviewInput) -> int:
    """Tokens the review prompt will take: ~4 characters a token (the usual rule of thumb)."""
    return math.ceil((len(AUCTION_PROMPTS["document_reviewer"]) + len(inp.model_dump_json())) / 4)


def price(tokens: int, per_1k: float) -> float:
    return round(tokens / 1000 * per_1k, 8)


def _route(agent: str, tier: AgentTier) -> Route:
    """An auction agent's prompt on the model of the tier it answers for (not a version's)."""
    return Route(STABLE_VERSION, f"tier:{tier.name}", AUCTION_PROMPTS[agent], tier.model)


@dataclass(eq=False)  # one instance per worker: identity, not field equality
class AuctionActivities:
    """Built once in worker.py on the shared agent plumbing and the database."""

    agents: AgentActivities
    db: Database
    ledger: AuditLedger
    policy: PolicyEngine

    @activity.defn(name="check_award")
    async def check_award(self, inp: AwardCheckInput) -> PolicyDecision:
        """The award gate: may ``inp.winner`` get ``inp.task``? Fails closed (see decide)."""
        info = activity.info()
        query = PolicyQuery(
            policy=AWARD_POLICY,
            input=award_policy_input(inp),
            subject=f"{inp.task.task_id}->{inp.winner.name}",
            workflow_id=info.workflow_id or "",
        )
        decision = await decide(self.policy, query, f"{info.workflow_id}/act/{info.activity_id}")
        event = decision_event(
            "award/policy",
            decision,
            {
                "subject": query.subject,
                "round": inp.round,
                "classification": inp.task.classification,
            },
            input_digest=digest(query.input),
            actor=f"policy:{AWARD_POLICY}",
        )
        await asyncio.to_thread(self.ledger.append, [event])
        return decision

    @activity.defn(name="bid_on_task")
    async def bid_on_task(self, inp: BidRequest) -> BidResponse:
        tier = inp.bidder
        wire, usage = await self.agents._ask(
            "auction_bidder", inp, _WireBid, _route("auction_bidder", tier), check=answer_checks.bid
        )
        if not wire.bid:
            response = BidResponse(declined=wire.reason or "no reason given", usage=usage)
        else:
            review = ReviewInput(tenant=inp.tenant, tier=tier, task=inp.task)
            tokens = estimated_prompt_tokens(review) + wire.expected_completion_tokens
            response = BidResponse(
                bid=Bid(
                    bidder=tier.name,
                    task_id=inp.task.task_id,
                    round=inp.round,
                    capabilities=tier.capabilities,
                    expected_tokens=tokens,
                    expected_cost_usd=price(tokens, tier.price_per_1k_tokens),
                    expected_latency_ms=round(
                        tier.latency_ms_base + tokens / 1000 * tier.latency_ms_per_1k_tokens, 3
                    ),
                    note=wire.reason,
                ),
                usage=usage,
            )
        await self.agents._audit(
            "auction_bidder",
            "agent.bid" if response.bid else "agent.declined_to_bid",
            inp,
            wire,
            usage,
            {"bidder": tier.name, "task_id": inp.task.task_id, "round": inp.round},
        )
        return response

    @activity.defn(name="review_document")
    async def review_document(self, inp: ReviewInput) -> ReviewResult:
        tier = inp.tier
        chosen = _route("document_reviewer", tier)
        wire, usage = await self.agents._ask(
            "document_reviewer", inp, _WireReview, chosen, check=answer_checks.review
        )
        verdict = wire.verdict
        result = ReviewResult(
            doc_id=inp.task.document.doc_id,
            tier=tier.name,
            verdict="flag" if verdict == "flag" else "approve",
            findings=wire.findings,
            summary=wire.summary,
            usage=usage,
            cost_at_tier_price_usd=price(usage.total_tokens, tier.price_per_1k_tokens),
        )
        await self.agents._audit(
            "document_reviewer",
            "agent.reviewed_document",
            inp,
            wire,
            usage,
            {
                "tier": tier.name,
                "task_id": inp.task.task_id,
                "doc_id": result.doc_id,
                "verdict": result.verdict,
                "findings": len(result.findings),
            },
        )
        return result

    @activity.defn(name="publish_review")
    async def publish_review(self, inp: PublishReviewInput) -> str:
        return await asyncio.to_thread(self._publish, inp)

    def _publish(self, inp: PublishReviewInput) -> str:
        with self.db.session() as session:
            if session.get(DocumentReviewRow, inp.idempotency_key) is not None:
                return inp.idempotency_key  # a retry: published already
            review = inp.review
            session.add(
                DocumentReviewRow(
                    idempotency_key=inp.idempotency_key,
                    tenant=inp.tenant,
                    batch_id=inp.batch_id,
                    task_id=inp.task_id,
                    doc_id=review.doc_id,
                    tier=review.tier,
                    verdict=review.verdict,
                    findings_json=json.dumps(review.findings),
                    summary=review.summary,
                    workflow_id=activity.info().workflow_id or "",
                )
            )
            self.ledger.append_in(
                session,
                [
                    activity_event(
                        "publish",
                        actor=f"agent:document_reviewer@{review.tier}",
                        action="review.published",
                        detail={
                            "task_id": inp.task_id,
                            "doc_id": review.doc_id,
                            "tier": review.tier,
                            "verdict": review.verdict,
                            "findings": review.findings,
                        },
                        rationale=review.summary,
                    )
                ],
            )
        return inp.idempotency_key

    @activity.defn(name="retract_review")
    async def retract_review(self, inp: RetractReviewInput) -> bool:
        """Compensation: retract what was published under ``original_key``, once."""
        return await asyncio.to_thread(self._retract, inp)

    def _retract(self, inp: RetractReviewInput) -> bool:
        with self.db.session() as session:
            row = session.get(DocumentReviewRow, inp.original_key)
            if row is None or row.retracted_at is not None:
                return False
            row.retracted_at = utcnow()
            row.retract_reason = inp.reason
            session.add(row)
            self.ledger.append_in(
                session,
                [
                    compensation_event(
                        "retract",
                        "review.retracted",
                        {"task_id": row.task_id, "doc_id": row.doc_id, "tier": row.tier},
                        inp.reason,
                    )
                ],
            )
            return True


__all__ = [
    "AUCTION_PROMPTS",
    "AWARD_POLICY",
    "AuctionActivities",
    "DocumentReviewRow",
    "award_policy_input",
    "catalogue_tiers",
    "estimated_prompt_tokens",
    "price",
]
