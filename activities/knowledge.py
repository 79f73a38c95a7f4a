"""The knowledge layer: documents as vectors with provenance, retrieval, and a relation store.

Owns:
- the tables ``knowledge_chunk`` (a chunk of a document, its embedding and its provenance:
  source, author, created_at, tenant) and ``knowledge_entity`` (customer -> account -> contract);
- embeddings, requested through the ``openai`` SDK's embeddings API (``AsyncOpenAI.embeddings``),
  so any OpenAI-compatible embeddings endpoint works unchanged; the default is the local model
  server, which answers with the real all-MiniLM-L6-v2 (baton/devstack/embeddings.py);
- cosine search in numpy over one tenant's vectors (exact, no index: fine for thousands of
  chunks; a tenant never sees another tenant's documents);
- the activities ``knowledge_ingest``, ``knowledge_search`` and ``knowledge_relations``. Every
  retrieval writes an audit row naming the sources it returned (doc id, source, author, created
  at, score), so what an agent was shown is part of the audit trail.

Must not: be imported by workflows (it does I/O; workflows import it passed through), decide
policy, or call chat models.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import openai
from openai import AsyncOpenAI
from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, Session, SQLModel, UniqueConstraint, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agents import _map_status_error
from activities.audit import AuditLedger, activity_event
from activities.database import Database, as_utc, utcnow
from workflows.contracts import AuditEvent, digest
from workflows.contracts.knowledge import (
    Entity,
    IngestInput,
    IngestResult,
    KnowledgeDocument,
    KnowledgeHit,
    KnowledgeQuery,
    KnowledgeResult,
    Provenance,
    RelationQuery,
    RelationResult,
)

if TYPE_CHECKING:
    import numpy as np

#: all-MiniLM-L6-v2 reads ~256 word pieces; chunks of ~700 characters stay inside that.
CHUNK_CHARS = 700
#: Texts per embeddings request.
EMBED_BATCH = 64
ENTITY_CHAIN: dict[str, str | None] = {
    "customer": None,
    "account": "customer",
    "contract": "account",
}


class KnowledgeChunkRow(SQLModel, table=True):
    """One chunk of one document with its vector and provenance."""

    __tablename__ = "knowledge_chunk"
    __table_args__ = (UniqueConstraint("tenant", "doc_id", "chunk"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(index=True)
    doc_id: str = Field(index=True)
    chunk: int
    title: str
    text: str
    kind: str = Field(index=True)
    entity_id: str | None = Field(default=None, index=True)
    source: str
    author: str
    created_at: datetime
    content_digest: str  # of the whole document: the same text again is not re-embedded
    model: str
    dimensions: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # float32, unit length
    ingested_at: datetime = Field(default_factory=utcnow)


class KnowledgeEntityRow(SQLModel, table=True):
    """A node of the relation store (customer -> account -> contract)."""

    __tablename__ = "knowledge_entity"
    tenant: str = Field(primary_key=True)
    entity_id: str = Field(primary_key=True)
    kind: str = Field(index=True)
    name: str
    parent_id: str | None = Field(default=None, index=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    source: str = "crm"
    updated_at: datetime = Field(default_factory=utcnow)


def chunk_text(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs packed into chunks of at most ~``limit`` characters (a longer paragraph is
    split at sentence ends, then hard)."""
    pieces: list[str] = []
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        while len(para) > limit:
            cut = para.rfind(". ", 0, limit)
            cut = cut + 1 if cut > limit // 3 else limit
            pieces.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= limit:
            chunks[-1] = f"{chunks[-1]}\n\n{piece}"
        else:
            chunks.append(piece)
    return chunks or [text.strip()]


def _embedded_text(title: str, chunk: str) -> str:
    # The title says what a chunk is about even when the chunk itself does not repeat it.
    return f"{title}\n{chunk}"


class Embedder:
    """Embeddings through the ``openai`` SDK (``client.embeddings.create``), unit length."""

    def __init__(self, client: AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(matrix of unit vectors, one row per text; tokens the endpoint counted)."""
        rows: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), EMBED_BATCH):
            batch = list(texts[start : start + EMBED_BATCH])
            try:
                response = await self.client.embeddings.create(
                    model=self.model, input=batch, encoding_format="float"
                )
            except openai.APIStatusError as err:
                raise _map_status_error("embeddings", err) from err
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                raise ApplicationError(
                    f"embeddings: endpoint unreachable or timed out: {err}",
                    type="EmbeddingsUnavailable",
                ) from err
            if len(response.data) != len(batch):
                raise ApplicationError(
                    f"embeddings: asked for {len(batch)} vectors, got {len(response.data)}",
                    type="EmbeddingsInvalid",
                )
            rows.extend(d.embedding for d in sorted(response.data, key=lambda d: d.index))
            tokens += response.usage.total_tokens if response.usage else 0
        import numpy as np  # here, not at import: it adds ~0.4 s to every worker's start

        matrix = np.asarray(rows, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # a real endpoint may not normalise; a zero vector stays zero
        return matrix / norms, tokens


class KnowledgeStore:
    """The database side: chunks with vectors, cosine search, entities. Synchronous."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- documents ----------------------------------------------------------------------

    def unchanged(self, docs: Sequence[KnowledgeDocument]) -> set[str]:
        """doc ids whose stored text is exactly this text already."""
        found: set[str] = set()
        with self.db.read_session() as session:
            for doc in docs:
                stored = session.exec(
                    select(KnowledgeChunkRow.content_digest).where(
                        KnowledgeChunkRow.tenant == doc.tenant,
                        KnowledgeChunkRow.doc_id == doc.doc_id,
                    )
                ).first()
                if stored == _doc_digest(doc):
                    found.add(doc.doc_id)
        return found

    def replace(
        self,
        docs: Sequence[KnowledgeDocument],
        chunks: Sequence[list[str]],
        vectors: np.ndarray,
        model: str,
        session: Session,
    ) -> int:
        """Store ``docs`` (their old chunks, if any, are replaced) in the caller's session."""
        row = 0
        for doc, parts in zip(docs, chunks, strict=True):
            old = session.exec(
                select(KnowledgeChunkRow).where(
                    KnowledgeChunkRow.tenant == doc.tenant, KnowledgeChunkRow.doc_id == doc.doc_id
                )
            ).all()
            for stale in old:
                session.delete(stale)
            session.flush()
            for i, text in enumerate(parts):
                vector = vectors[row]
                row += 1
                session.add(
                    KnowledgeChunkRow(
                        # the document's id, tenant, title, kind, entity and provenance
                        **doc.model_dump(exclude={"text"}),
                        chunk=i,
                        text=text,
                        content_digest=_doc_digest(doc),
                        model=model,
                        dimensions=int(vector.shape[0]),
                        vector=vector.astype("float32").tobytes(),
                    )
                )
        return row

    def search(
        self, query: KnowledgeQuery, vector: np.ndarray, model: str
    ) -> tuple[list[Any], int]:
        """(best chunk per document, best first, at most k; chunks searched)."""
        with self.db.read_session() as session:
            stmt = select(KnowledgeChunkRow).where(KnowledgeChunkRow.tenant == query.tenant)
            if query.kinds:
                stmt = stmt.where(col(KnowledgeChunkRow.kind).in_(query.kinds))
            if query.entity_id is not None:
                stmt = stmt.where(KnowledgeChunkRow.entity_id == query.entity_id)
            rows = list(session.exec(stmt).all())
        rows = [r for r in rows if r.model == model and r.dimensions == vector.shape[0]]
        if not rows:
            return [], 0
        import numpy as np

        matrix = np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32)
        scores = matrix.reshape(len(rows), -1) @ vector
        best: dict[str, tuple[float, KnowledgeChunkRow]] = {}
        for index in np.argsort(-scores, kind="stable"):
            score, r = float(scores[int(index)]), rows[int(index)]
            if score < query.min_score:
                break
            if r.doc_id not in best:  # the best chunk stands for its document
                best[r.doc_id] = (score, r)
                if len(best) >= query.k:
                    break
        return sorted(best.values(), key=lambda p: -p[0]), len(rows)

    def count(self, tenant: str) -> tuple[int, int]:
        """(documents, chunks) stored for ``tenant``."""
        with self.db.read_session() as session:
            rows = session.exec(
                select(KnowledgeChunkRow.doc_id).where(KnowledgeChunkRow.tenant == tenant)
            ).all()
        return len(set(rows)), len(rows)

    # -- the relation store -------------------------------------------------------------

    def upsert_entities(self, entities: Sequence[Entity]) -> int:
        with self.db.session() as session:
            for e in entities:
                _check_parent(session, e, {x.entity_id: x for x in entities})
                row = session.get(KnowledgeEntityRow, (e.tenant, e.entity_id))
                if row is None:
                    row = KnowledgeEntityRow(
                        tenant=e.tenant, entity_id=e.entity_id, kind=e.kind, name=e.name
                    )
                row.kind, row.name, row.parent_id = e.kind, e.name, e.parent_id
                row.attributes, row.source, row.updated_at = dict(e.attributes), e.source, utcnow()
                session.add(row)
        return len(entities)

    def related(self, tenant: str, entity_id: str) -> RelationResult:
        """The entity and everything below it; LookupError if it is unknown."""
        with self.db.read_session() as session:
            root = session.get(KnowledgeEntityRow, (tenant, entity_id))
            if root is None:
                raise LookupError(f"no entity {entity_id!r} for tenant {tenant!r}")
            descendants: list[Entity] = []
            frontier = [root.entity_id]
            while frontier:
                children = session.exec(
                    select(KnowledgeEntityRow)
                    .where(
                        KnowledgeEntityRow.tenant == tenant,
                        col(KnowledgeEntityRow.parent_id).in_(frontier),
                    )
                    .order_by(col(KnowledgeEntityRow.entity_id))
                ).all()
                descendants.extend(_entity(c) for c in children)
                frontier = [c.entity_id for c in children]
            return RelationResult(root=_entity(root), descendants=descendants)


def _check_parent(session: Session, e: Entity, batch: dict[str, Entity]) -> None:
    want = ENTITY_CHAIN[e.kind]
    if want is None:
        if e.parent_id is not None:
            raise ValueError(f"entity {e.entity_id}: a customer has no parent_id")
        return
    if e.parent_id is None:
        raise ValueError(f"entity {e.entity_id}: parent_id must name the {want} of this {e.kind}")
    parent = batch.get(e.parent_id)
    kind: str | None = parent.kind if parent else None
    if parent is None:
        row = session.get(KnowledgeEntityRow, (e.tenant, e.parent_id))
        kind = row.kind if row else None
    if kind != want:
        raise ValueError(
            f"entity {e.entity_id}: parent_id {e.parent_id!r} must be a {want} of tenant "
            f"{e.tenant!r} (found: {kind or 'nothing'})"
        )


def _entity(row: KnowledgeEntityRow) -> Entity:
    return Entity(
        entity_id=row.entity_id,
        tenant=row.tenant,
        kind=row.kind,  # type: ignore[arg-type]
        name=row.name,
        parent_id=row.parent_id,
        attributes=dict(row.attributes),
        source=row.source,
    )


def _doc_digest(doc: KnowledgeDocument) -> str:
    return digest(doc.model_dump(mode="json", exclude={"tenant", "doc_id"}))


def _hit(score: float, row: KnowledgeChunkRow) -> KnowledgeHit:
    shown = row.model_dump(include={"doc_id", "chunk", "title", "text", "kind", "entity_id"})
    provenance = Provenance(
        source=row.source, author=row.author, created_at=as_utc(row.created_at), tenant=row.tenant
    )
    return KnowledgeHit(**shown, score=round(score, 6), provenance=provenance)


def retrieval_detail(result: KnowledgeResult, requested_by: str) -> dict[str, Any]:
    """What a retrieval's audit row says: who asked, and every source shown (not the texts)."""
    return {
        "tenant": result.tenant,
        "requested_by": requested_by,
        "query_digest": digest(result.query),
        "model": result.model,
        "sources": [
            {
                "doc_id": h.doc_id,
                "chunk": h.chunk,
                "score": h.score,
                "source": h.provenance.source,
                "author": h.provenance.author,
                "created_at": h.provenance.created_at.isoformat(),
            }
            for h in result.hits
        ],
    }


class KnowledgeBase:
    """Embedder + store + audit ledger: what the activities and the CLI share."""

    def __init__(self, db: Database, ledger: AuditLedger, embedder: Embedder) -> None:
        self.store = KnowledgeStore(db)
        self.ledger = ledger
        self.embedder = embedder

    async def ingest(
        self, docs: Sequence[KnowledgeDocument], audit_key: tuple[str, str, str] | None = None
    ) -> IngestResult:
        _unique(docs)
        same = await asyncio.to_thread(self.store.unchanged, docs)
        fresh = [d for d in docs if d.doc_id not in same]
        result = IngestResult(unchanged=sorted(same), model=self.embedder.model)
        if not fresh:
            return result
        chunks = [chunk_text(d.text) for d in fresh]
        texts = [
            _embedded_text(d.title, c)
            for d, parts in zip(fresh, chunks, strict=True)
            for c in parts
        ]
        vectors, tokens = await self.embedder.embed(texts)
        wf, run, seq = audit_key or _cli_key("ingest")
        event = AuditEvent(
            workflow_id=wf,
            run_id=run,
            seq=seq,
            actor="baton:knowledge",
            action="knowledge.ingested",
            detail={
                "documents": [
                    {"tenant": d.tenant, "doc_id": d.doc_id, "source": d.source, "author": d.author}
                    for d in fresh
                ],
                "chunks": len(texts),
                "unchanged": sorted(same),
            },
            model=self.embedder.model,
            tokens=tokens,
            input_digest=digest([d.model_dump(mode="json") for d in fresh]),
        )

        def write() -> int:
            with self.store.db.session() as session:
                written = self.store.replace(fresh, chunks, vectors, self.embedder.model, session)
                self.ledger.append_in(session, [event])
                return written

        written = await asyncio.to_thread(write)
        return result.model_copy(update={"ingested": [d.doc_id for d in fresh], "chunks": written})

    async def search(
        self, query: KnowledgeQuery, audit_key: tuple[str, str, str] | None = None
    ) -> KnowledgeResult:
        started = time.perf_counter()
        vectors, tokens = await self.embedder.embed([query.query])
        embedded = time.perf_counter()
        found, searched = await asyncio.to_thread(
            self.store.search, query, vectors[0], self.embedder.model
        )
        done = time.perf_counter()
        result = KnowledgeResult(
            query=query.query,
            tenant=query.tenant,
            hits=[_hit(score, row) for score, row in found],
            model=self.embedder.model,
            searched_chunks=searched,
            embed_ms=round((embedded - started) * 1000, 3),
            search_ms=round((done - embedded) * 1000, 3),
        )
        wf, run, seq = audit_key or _cli_key("search")
        event = AuditEvent(
            workflow_id=wf,
            run_id=run,
            seq=seq,
            actor=f"knowledge:{query.requested_by}",
            action="knowledge.retrieved",
            detail=retrieval_detail(result, query.requested_by),
            model=self.embedder.model,
            tokens=tokens,
            input_digest=digest(query),
            output_digest=digest(result.hits),
        )
        await asyncio.to_thread(self.ledger.append, [event])
        return result


def _cli_key(what: str) -> tuple[str, str, str]:
    """Audit key of a call made outside a workflow (the CLI, the bench)."""
    return ("cli:knowledge", "", f"{what}/{uuid.uuid4().hex}")


def _activity_key(step: str) -> tuple[str, str, str]:
    event = activity_event(step, actor="", action="")
    return event.workflow_id, event.run_id, event.seq


def _unique(docs: Sequence[KnowledgeDocument]) -> None:
    seen: set[tuple[str, str]] = set()
    for d in docs:
        if (d.tenant, d.doc_id) in seen:
            raise ValueError(f"documents: doc_id {d.doc_id!r} appears twice for {d.tenant!r}")
        seen.add((d.tenant, d.doc_id))


class KnowledgeActivities:
    """The knowledge layer's activities. Built once in worker.py. Activity names are public."""

    def __init__(self, knowledge: KnowledgeBase) -> None:
        self.knowledge = knowledge

    @activity.defn(name="knowledge_ingest")
    async def knowledge_ingest(self, inp: IngestInput) -> IngestResult:
        """Embed and store documents (unchanged ones are skipped); one audit row."""
        try:
            return await self.knowledge.ingest(inp.documents, _activity_key("knowledge/ingest"))
        except ValueError as err:
            raise ApplicationError(str(err), type="InvalidInput", non_retryable=True) from err

    @activity.defn(name="knowledge_search")
    async def knowledge_search(self, inp: KnowledgeQuery) -> KnowledgeResult:
        """The k most similar documents of the tenant, with provenance; audits the sources."""
        return await self.knowledge.search(inp, _activity_key("knowledge/search"))

    @activity.defn(name="knowledge_relations")
    async def knowledge_relations(self, inp: RelationQuery) -> RelationResult:
        """An entity and everything below it (customer -> accounts -> contracts); audited."""
        try:
            result = await asyncio.to_thread(
                self.knowledge.store.related, inp.tenant, inp.entity_id
            )
        except LookupError as err:
            raise ApplicationError(str(err), type="EntityNotFound", non_retryable=True) from err
        event = activity_event(
            "knowledge/relations",
            actor=f"knowledge:{inp.requested_by}",
            action="knowledge.relations",
            detail={
                "tenant": inp.tenant,
                "entity_id": inp.entity_id,
                "entities": [f"{e.kind}:{e.entity_id}" for e in result.descendants],
                "sources": sorted({result.root.source, *(e.source for e in result.descendants)}),
            },
            output_digest=digest(result),
        )
        await asyncio.to_thread(self.knowledge.ledger.append, [event])
        return result


__all__ = [
    "CHUNK_CHARS",
    "EMBED_BATCH",
    "ENTITY_CHAIN",
    "Embedder",
    "KnowledgeActivities",
    "KnowledgeBase",
    "KnowledgeChunkRow",
    "KnowledgeEntityRow",
    "KnowledgeStore",
    "chunk_text",
    "retrieval_detail",
]
