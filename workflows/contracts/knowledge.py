"""Contracts of the knowledge layer: documents with provenance, retrieval, the relation store.

Everything here crosses a Temporal boundary (activity inputs and outputs) or the CLI. Imports
only pydantic, the standard library and the shared base in workflows/contracts/base.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from workflows.contracts.base import Contract

#: Kinds of document the seed corpus and the labelled set use; any other kind is allowed too.
DocumentKind = str
EntityKind = Literal["customer", "account", "contract"]


def _not_blank(field: str, value: str) -> str:
    if not value.strip():
        raise ValueError(f"{field} must not be blank")
    return value


class Provenance(Contract):
    """Where a piece of knowledge comes from: carried by every hit into the audit trail."""

    source: str = Field(description="System and location, e.g. 'confluence:policies/discounts'.")
    author: str = Field(description="Who wrote it, e.g. 'j.meyer' or 'crm:sync'.")
    created_at: datetime = Field(description="When the author wrote it (not when it was ingested).")
    tenant: str


class KnowledgeDocument(Contract):
    """One document to ingest. ``doc_id`` is unique per tenant; re-ingesting the same text is a
    no-op, a changed text replaces the stored vectors."""

    doc_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1)
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)
    kind: DocumentKind = Field(default="note", description="product_doc, policy, customer_note...")
    source: str = Field(min_length=1)
    author: str = Field(min_length=1)
    created_at: datetime
    #: The entity (customer/account/contract) the document is about, if any.
    entity_id: str | None = None

    @field_validator("doc_id", "title", "text", "source", "author")
    @classmethod
    def _present(cls, value: str, info: Any) -> str:
        return _not_blank(info.field_name, value)


class IngestInput(Contract):
    documents: list[KnowledgeDocument] = Field(min_length=1)


class IngestResult(Contract):
    ingested: list[str] = Field(default_factory=list, description="New or changed doc ids.")
    unchanged: list[str] = Field(default_factory=list, description="Same text already stored.")
    chunks: int = 0
    model: str = ""


class KnowledgeQuery(Contract):
    """A retrieval request: the ``k`` most similar chunks of ``tenant``'s documents."""

    tenant: str = Field(min_length=1)
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=5, ge=1, le=50)
    kinds: list[str] = Field(default_factory=list, description="Only these kinds (empty: all).")
    entity_id: str | None = Field(default=None, description="Only documents about this entity.")
    min_score: float = Field(default=-1.0, ge=-1.0, le=1.0)
    #: Who asks (an agent role, a user): recorded in the retrieval's audit row.
    requested_by: str = "baton"

    @field_validator("query")
    @classmethod
    def _query_present(cls, value: str) -> str:
        return _not_blank("query", value)


class KnowledgeHit(Contract):
    doc_id: str
    chunk: int
    title: str
    text: str
    kind: str
    score: float = Field(description="Cosine similarity of query and chunk, -1..1.")
    provenance: Provenance
    entity_id: str | None = None


class KnowledgeResult(Contract):
    query: str
    tenant: str
    hits: list[KnowledgeHit]
    model: str
    searched_chunks: int
    embed_ms: float
    search_ms: float


class Entity(Contract):
    """A node of the relation store: a customer, one of its accounts, a contract of an account."""

    entity_id: str = Field(min_length=1)
    tenant: str = Field(min_length=1)
    kind: EntityKind
    name: str = Field(min_length=1)
    parent_id: str | None = Field(
        default=None, description="customer <- account <- contract; None for a customer."
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    source: str = "crm"


class RelationQuery(Contract):
    tenant: str = Field(min_length=1)
    entity_id: str = Field(min_length=1)
    requested_by: str = "baton"


class RelationResult(Contract):
    """``root`` and everything below it (accounts, then their contracts), parents first."""

    root: Entity
    descendants: list[Entity]

    def of_kind(self, kind: EntityKind) -> list[Entity]:
        return [e for e in self.descendants if e.kind == kind]


__all__ = [
    "DocumentKind",
    "Entity",
    "EntityKind",
    "IngestInput",
    "IngestResult",
    "KnowledgeDocument",
    "KnowledgeHit",
    "KnowledgeQuery",
    "KnowledgeResult",
    "Provenance",
    "RelationQuery",
    "RelationResult",
]
