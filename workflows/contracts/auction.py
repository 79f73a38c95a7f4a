"""Contracts of the auction building block (workflows/auction.py) and the document-review
allocation process (workflows/document_review.py) that uses it.

Like the rest of workflows/contracts/, this module imports only pydantic, the standard library
and its sibling modules, and does nothing at import.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from workflows.contracts.base import (
    NAME_PATTERN,
    NAME_RULE,
    Contract,
    Requester,
    TenantName,
    TokenUsage,
    must_match,
)
from workflows.contracts.security import Id

#: Workflow type and process name (search attribute BatonProcess, kill-switch scope).
DOCUMENT_REVIEW_WORKFLOW = "DocumentReviewAllocation"
DOCUMENT_REVIEW_PROCESS = "document_review"
AUCTION_STATUS_QUERY = "auction_status"

#: Failure types (``ApplicationError.type``) users can match on.
NO_BIDS = "AuctionNoBids"
ALL_WINNERS_FAILED = "AuctionAllWinnersFailed"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CAPABILITY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,62}$")


def _check_id(v: str, info: ValidationInfo) -> str:
    if not _ID_PATTERN.match(v):
        raise ValueError(
            f"{info.field_name} must be letters, digits, '_', '.' or '-' (1-63 chars), "
            f"got {v!r:.40}"
        )
    return v


def _check_capabilities(v: list[str]) -> list[str]:
    for c in v:
        if not _CAPABILITY_PATTERN.match(c):
            raise ValueError(
                f"capability {c!r:.40} must be lowercase letters, digits, '_', '.', ':' or '-'"
            )
    return sorted(set(v))


#: A document's, task's or batch's id (the error names the field).
_AuctionId = Annotated[str, AfterValidator(_check_id)]
#: Capabilities such as 'review:contract', sorted and without repeats.
_Capabilities = Annotated[list[str], AfterValidator(_check_capabilities)]


class AgentTier(Contract):
    """One bidder: an agent pool on one model tier, with its declared price and speed.

    ``name`` comes first: the tier travels inside agent inputs as compact JSON, and tests match
    scripted model faults on ``"bidder":{"name":"<tier>"`` / ``"tier":{"name":"<tier>"``.
    """

    name: str = Field(description="Bidder id, e.g. 'small'.")
    model: str = Field(min_length=1, description="Model the tier's agents call.")
    capabilities: _Capabilities = Field(
        min_length=1, description="Kinds of work it can do, e.g. ['review:contract']."
    )
    price_per_1k_tokens: float = Field(ge=0, description="USD per 1000 tokens (in + out).")
    latency_ms_base: int = Field(default=300, ge=0, description="Fixed latency of one call.")
    latency_ms_per_1k_tokens: float = Field(default=500, ge=0)
    max_input_tokens: int = Field(default=8000, ge=1, description="Longest input it accepts.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return must_match(NAME_PATTERN, v, NAME_RULE)

    @field_validator("price_per_1k_tokens", "latency_ms_per_1k_tokens")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class AwardRule(Contract):
    """The award rule's weights: score = cost_weight * expected cost (USD) + latency_weight *
    expected latency (seconds); the lowest score among capable bidders wins."""

    cost_weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    latency_weight: float = Field(
        default=0.01, ge=0, allow_inf_nan=False, description="USD a second of latency is worth."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> AwardRule:
        if self.cost_weight == 0 and self.latency_weight == 0:
            raise ValueError("cost_weight and latency_weight cannot both be 0")
        return self


class ReviewDocument(Contract):
    doc_id: _AuctionId
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=200_000)


class AuctionTask(Contract):
    """One piece of work to allocate: review one document, needing these capabilities."""

    task_id: _AuctionId
    requires: _Capabilities = Field(min_length=1, description="Capabilities a winner must have.")
    document: ReviewDocument
    classification: Literal["public", "internal", "confidential"] = Field(
        default="internal", description="Which tiers policy clears for it (policy/auction)."
    )


class BidRequest(Contract):
    """What one bidder is asked (activity ``bid_on_task``)."""

    tenant: str
    round: int = Field(ge=1)
    bidder: AgentTier
    task: AuctionTask


class Bid(Contract):
    """A bidder's offer for one task in one round."""

    bidder: str
    task_id: str
    round: int = Field(ge=1)
    capabilities: list[str]
    expected_tokens: int = Field(ge=0)
    expected_cost_usd: float = Field(ge=0, allow_inf_nan=False)
    expected_latency_ms: float = Field(ge=0, allow_inf_nan=False)
    note: str = ""


class BidResponse(Contract):
    """A bid, or the bidder's reason for not bidding; ``usage`` is what asking it cost."""

    bid: Bid | None = None
    declined: str | None = None
    usage: TokenUsage

    @model_validator(mode="after")
    def _one_of(self) -> BidResponse:
        if (self.bid is None) == (self.declined is None):
            raise ValueError("a bid response holds exactly one of bid and declined")
        return self


class ScoredBid(Contract):
    bidder: str
    score: float
    expected_cost_usd: float
    expected_latency_ms: float


class Award(Contract):
    """The allocator's decision for one round: the winner (None: no eligible bid), every
    eligible bid with its score (best first), and why each other bidder was left out."""

    task_id: str
    round: int
    winner: str | None
    score: float | None = None
    ranked: list[ScoredBid] = []
    rejected: dict[str, str] = {}
    rule: AwardRule


class AwardCheckInput(Contract):
    """The award gate's question (activity ``check_award``, policy ``baton/auction/award``)."""

    tenant: str
    task: AuctionTask
    winner: AgentTier
    expected_cost_usd: float = Field(ge=0, allow_inf_nan=False)
    round: int = Field(ge=1)


class ReviewInput(Contract):
    """The awarded work (activity ``review_document``): ``tier`` does it on its model."""

    tenant: str
    tier: AgentTier
    task: AuctionTask


class ReviewResult(Contract):
    doc_id: str
    tier: str
    verdict: Literal["approve", "flag"]
    findings: list[str]
    summary: str
    usage: TokenUsage
    #: actual cost at the tier's declared price, to compare with the winning bid
    cost_at_tier_price_usd: float


class PublishReviewInput(Contract):
    tenant: str
    batch_id: str
    task_id: str
    review: ReviewResult
    idempotency_key: str


class RetractReviewInput(Contract):
    original_key: str
    reason: str


class TaskAllocation(Contract):
    """How one task ended: reviewed by a winner, or escalated to a human (no bids, or every
    winner failed within the rounds allowed)."""

    task_id: str
    status: Literal["reviewed", "escalated"]
    winner: str | None = None
    awards: list[Award] = []
    failed_winners: dict[str, str] = {}
    #: winners the award policy refused, with its reasons
    denied: dict[str, str] = {}
    review: ReviewResult | None = None
    reason: str = ""
    escalation_type: str | None = None


class DocumentReviewInput(Contract):
    """Allocate a batch of document reviews among agent tiers by auction."""

    tenant: TenantName
    batch_id: Annotated[Id, AfterValidator(_check_id)]
    requested_by: Requester
    tiers: list[AgentTier] = Field(min_length=1)
    tasks: list[AuctionTask] = Field(min_length=1, max_length=200)
    rule: AwardRule = AwardRule()
    bid_deadline_seconds: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    max_rounds: int = Field(default=3, ge=1, le=10, description="Auctions per task at most.")

    @model_validator(mode="after")
    def _unique(self) -> DocumentReviewInput:
        for what, names in (
            ("tiers", [t.name for t in self.tiers]),
            ("tasks", [t.task_id for t in self.tasks]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: names must be unique, repeated: {', '.join(dupes)}")
        return self

    def workflow_id(self) -> str:
        return f"document-review/{self.tenant}/{self.batch_id}"


class DocumentReviewResult(Contract):
    tenant: str
    batch_id: str
    allocations: list[TaskAllocation]
    tokens: int
    cost_usd: float

    @property
    def escalated(self) -> list[TaskAllocation]:
        return [a for a in self.allocations if a.status == "escalated"]


class AuctionStatus(Contract):
    stage: str
    allocations: list[TaskAllocation]
    current_task: str | None = None
    current_round: int | None = None
    compensated: list[str] = []


#: The tiers' shape (capabilities, prices, speeds). The CLI and the demo put them on the model
#: catalogue's models (activities/auction.py ``catalogue_tiers``); the model named here is only
#: for tests against the local rule-based server (it answers any model name).
DEFAULT_TIERS: list[AgentTier] = [
    AgentTier(
        name="small",
        model="baton-rules-not-an-llm",
        capabilities=["review:nda", "review:invoice"],
        price_per_1k_tokens=0.0006,
        latency_ms_base=200,
        latency_ms_per_1k_tokens=300,
        max_input_tokens=2000,
    ),
    AgentTier(
        name="medium",
        model="baton-rules-not-an-llm",
        capabilities=["review:nda", "review:invoice", "review:contract"],
        price_per_1k_tokens=0.003,
        latency_ms_base=400,
        latency_ms_per_1k_tokens=600,
        max_input_tokens=16000,
    ),
    AgentTier(
        name="large",
        model="baton-rules-not-an-llm",
        capabilities=["review:nda", "review:invoice", "review:contract", "review:legal-opinion"],
        price_per_1k_tokens=0.015,
        latency_ms_base=800,
        latency_ms_per_1k_tokens=1200,
        max_input_tokens=128000,
    ),
]

__all__ = [
    "ALL_WINNERS_FAILED",
    "AUCTION_STATUS_QUERY",
    "AgentTier",
    "AuctionStatus",
    "AuctionTask",
    "Award",
    "AwardCheckInput",
    "AwardRule",
    "Bid",
    "BidRequest",
    "BidResponse",
    "DEFAULT_TIERS",
    "DOCUMENT_REVIEW_PROCESS",
    "DOCUMENT_REVIEW_WORKFLOW",
    "DocumentReviewInput",
    "DocumentReviewResult",
    "NO_BIDS",
    "PublishReviewInput",
    "RetractReviewInput",
    "ReviewDocument",
    "ReviewInput",
    "ReviewResult",
    "ScoredBid",
    "TaskAllocation",
]
