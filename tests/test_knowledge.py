"""The knowledge layer: real embeddings over the openai SDK, vectors with provenance in the
database, tenant isolation, the relation store, audited retrievals, the activities and the CLI.

Embeddings come from the session's model server (tests/support/scripted_model.py is the local
model server, whose /v1/embeddings runs the real all-MiniLM-L6-v2); the first request loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import openai
import pytest
from openai import AsyncOpenAI
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditLedger
from activities.database import Database
from activities.knowledge import (
    Embedder,
    KnowledgeActivities,
    KnowledgeBase,
    chunk_text,
)
from activities.knowledge_seed import SEED_DOCUMENTS, TENANT, seed_knowledge
from baton.devstack.embeddings import EMBEDDING_DIMENSIONS, EMBEDDING_MODEL_NAME
from baton.settings import REPO_ROOT
from bench.knowledge_labels import LABELLED_QUERIES
from tests.support.scripted_model import ScriptedModelServer
from workflows.contracts.knowledge import (
    Entity,
    KnowledgeDocument,
    KnowledgeQuery,
    RelationQuery,
)


@pytest.fixture
async def openai_client(model_server: ScriptedModelServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=model_server.url, api_key="test", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def kb(database_url: str, openai_client: AsyncOpenAI) -> AsyncIterator[KnowledgeBase]:
    db = Database(database_url)
    db.create_tables()
    base = KnowledgeBase(db, AuditLedger(db), Embedder(openai_client, EMBEDDING_MODEL_NAME))
    yield base
    db.dispose()


async def test_embeddings_endpoint_speaks_the_openai_wire_format(openai_client: AsyncOpenAI):
    response = await openai_client.embeddings.create(
        model=EMBEDDING_MODEL_NAME,
        input=[
            "How do I get my money back?",
            "Refunds are paid within 30 days of cancellation.",
            "The mobile app caches dashboards offline.",
        ],
    )
    assert response.model == EMBEDDING_MODEL_NAME
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, EMBEDDING_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert response.usage.prompt_tokens > 10 and response.usage.total_tokens > 10
    # a real model: the refund question is closer to the refund answer than to the mobile app
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2

    single = await openai_client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input="How do I get my money back?"
    )
    assert np.allclose(single.data[0].embedding, vectors[0], atol=1e-5)  # deterministic


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"model": "text-embedding-3-small", "input": "x"}, "'model' must be one of"),
        ({"model": EMBEDDING_MODEL_NAME, "input": []}, "'input' must be a string or a non-empty"),
        ({"model": EMBEDDING_MODEL_NAME, "input": ["ok", "  "]}, "'input[1]' must be a non-empty"),
    ],
)
async def test_embeddings_bad_input_is_a_400_naming_the_field(
    openai_client: AsyncOpenAI, kwargs: dict, names: str
):
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.embeddings.create(**kwargs)
    assert names in str(caught.value)


def test_chunking_keeps_paragraphs_and_bounds_size():
    text = "\n\n".join(["A short paragraph."] * 3 + ["Long sentence here. " * 60])
    chunks = chunk_text(text, limit=200)
    assert chunks[0] == "A short paragraph.\n\nA short paragraph.\n\nA short paragraph."
    assert all(len(c) <= 200 for c in chunks)
    assert "".join(chunks).count("Long sentence here.") == 60


async def test_search_finds_the_answer_with_provenance_and_audits_the_sources(
    kb: KnowledgeBase,
):
    first = await seed_knowledge(kb)
    assert len(first.ingested) == len(SEED_DOCUMENTS) and first.model == EMBEDDING_MODEL_NAME

    result = await kb.search(
        KnowledgeQuery(
            tenant=TENANT,
            query="how much discount can a sales rep give without anyone approving it",
            requested_by="agent:l2_researcher",
        ),
        audit_key=("wf-support-1", "run-1", "act/3/knowledge/search"),
    )
    top = result.hits[0]
    assert top.doc_id == "pol-discounts"
    assert top.provenance.source == "confluence:policies/sales/discounts"
    assert top.provenance.author == "cfo.office"
    assert top.provenance.created_at == datetime(2026, 1, 15, tzinfo=UTC)
    assert top.provenance.tenant == TENANT
    assert len(result.hits) == 5 and len({h.doc_id for h in result.hits}) == 5
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)

    trail = kb.ledger.trail("wf-support-1")
    assert [r.action for r in trail] == ["knowledge.retrieved"]
    detail = json.loads(trail[0].detail_json)
    assert trail[0].actor == "knowledge:agent:l2_researcher"
    assert [s["doc_id"] for s in detail["sources"]] == [h.doc_id for h in result.hits]
    assert detail["sources"][0]["source"] == "confluence:policies/sales/discounts"
    assert detail["sources"][0]["author"] == "cfo.office"
    assert "without anyone approving" not in trail[0].detail_json  # query by digest only
    assert kb.ledger.verify().ok


async def test_a_tenant_never_sees_another_tenants_documents(kb: KnowledgeBase):
    await seed_knowledge(kb)
    acme = await kb.search(KnowledgeQuery(tenant=TENANT, query="discount rules", k=50))
    assert acme.hits and all(h.provenance.tenant == TENANT for h in acme.hits)
    assert not any(h.doc_id.startswith("globex-") for h in acme.hits)
    globex = await kb.search(KnowledgeQuery(tenant="globex", query="discount rules", k=50))
    assert {h.doc_id for h in globex.hits} == {"globex-pol-discounts", "globex-pol-residency"}
    nobody = await kb.search(KnowledgeQuery(tenant="initrode", query="discount rules"))
    assert nobody.hits == [] and nobody.searched_chunks == 0


async def test_filters_by_kind_and_entity(kb: KnowledgeBase):
    await seed_knowledge(kb)
    notes = await kb.search(
        KnowledgeQuery(tenant=TENANT, query="data residency", kinds=["customer_note"], k=3)
    )
    assert notes.hits and all(h.kind == "customer_note" for h in notes.hits)
    dossier = await kb.search(
        KnowledgeQuery(tenant=TENANT, query="what does the customer want", entity_id="cust-globex")
    )
    assert {h.doc_id for h in dossier.hits} == {
        "note-globex-kickoff",
        "note-globex-security",
        "note-globex-champion",
    }


async def test_reingest_skips_unchanged_and_replaces_changed_text(kb: KnowledgeBase):
    await seed_knowledge(kb)
    again = await seed_knowledge(kb)
    assert again.ingested == [] and len(again.unchanged) == len(SEED_DOCUMENTS)

    old = next(d for d in SEED_DOCUMENTS if d.doc_id == "pol-gifts")
    changed = old.model_copy(
        update={"text": "Employees must decline every gift and hospitality offer, whatever its "
                "value. Tell compliance about the offer."}
    )  # fmt: skip
    result = await kb.ingest([changed])
    assert result.ingested == ["pol-gifts"] and result.chunks == 1
    hits = (await kb.search(KnowledgeQuery(tenant=TENANT, query="decline every gift", k=1))).hits
    assert hits[0].doc_id == "pol-gifts" and "decline every gift" in hits[0].text
    assert kb.store.count(TENANT) == (34, 34)  # replaced, not added


async def test_labelled_set_recall_at_5_stays_high(kb: KnowledgeBase):
    """A quality floor, not a benchmark (bench/knowledge_bench.py measures): 52 labelled
    questions; the seed corpus answers >= 90% of relevant documents within the top 5."""
    await seed_knowledge(kb)
    recalls = []
    for question, relevant in LABELLED_QUERIES:
        result = await kb.search(KnowledgeQuery(tenant=TENANT, query=question, k=5))
        recalls.append(len({h.doc_id for h in result.hits} & relevant) / len(relevant))
    assert sum(recalls) / len(recalls) >= 0.9


def test_bad_queries_and_documents_name_the_field():
    with pytest.raises(ValidationError, match="query"):
        KnowledgeQuery(tenant=TENANT, query="   ")
    with pytest.raises(ValidationError, match="k"):
        KnowledgeQuery(tenant=TENANT, query="x", k=0)
    with pytest.raises(ValidationError, match="created_at"):
        KnowledgeDocument.model_validate(
            {"doc_id": "d", "tenant": "t", "title": "T", "text": "x", "source": "s", "author": "a"}
        )


async def test_relation_store_walks_customer_accounts_contracts(kb: KnowledgeBase):
    await seed_knowledge(kb)
    tree = kb.store.related(TENANT, "cust-globex")
    assert tree.root.name == "Globex GmbH" and tree.root.attributes["region"] == "eu"
    assert [e.entity_id for e in tree.of_kind("account")] == [
        "acct-globex-berlin",
        "acct-globex-munich",
    ]
    assert [e.entity_id for e in tree.of_kind("contract")] == ["ctr-globex-2026"]
    assert tree.of_kind("contract")[0].parent_id == "acct-globex-munich"

    with pytest.raises(ValueError, match="parent_id 'cust-nope' must be a customer"):
        kb.store.upsert_entities(
            [Entity(entity_id="acct-x", tenant=TENANT, kind="account", name="X",
                    parent_id="cust-nope")]
        )  # fmt: skip
    with pytest.raises(ValueError, match="parent_id 'cust-globex' must be a account"):
        kb.store.upsert_entities(
            [Entity(entity_id="ctr-x", tenant=TENANT, kind="contract", name="X",
                    parent_id="cust-globex")]
        )  # fmt: skip
    with pytest.raises(LookupError, match="no entity 'cust-globex' for tenant 'globex'"):
        kb.store.related("globex", "cust-globex")


async def test_activities_audit_under_the_calling_run(kb: KnowledgeBase):
    """The activities as a worker runs them (a real activity context): the audit rows are keyed
    by the calling workflow run and activity, so a retry writes nothing twice."""
    await seed_knowledge(kb)
    acts = KnowledgeActivities(kb)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        ActivityEnvironment.default_info(),
        workflow_id="customer-onboarding-globex",
        workflow_run_id="r1",
        activity_id="7",
    )
    query = KnowledgeQuery(tenant=TENANT, query="Globex data must stay in the EU", k=3)
    result = await env.run(acts.knowledge_search, query)
    assert result.hits[0].doc_id in {"note-globex-kickoff", "pol-data-residency"}
    await env.run(acts.knowledge_search, query)  # a retry of the same activity
    tree = await env.run(
        acts.knowledge_relations, RelationQuery(tenant=TENANT, entity_id="cust-globex")
    )
    assert len(tree.descendants) == 3
    trail = kb.ledger.trail("customer-onboarding-globex")
    assert [(r.seq, r.action) for r in trail] == [
        ("act/7/knowledge/search", "knowledge.retrieved"),
        ("act/7/knowledge/relations", "knowledge.relations"),
    ]
    assert json.loads(trail[1].detail_json)["entities"] == [
        "account:acct-globex-berlin",
        "account:acct-globex-munich",
        "contract:ctr-globex-2026",
    ]
    with pytest.raises(ApplicationError) as caught:
        await env.run(acts.knowledge_relations, RelationQuery(tenant=TENANT, entity_id="cust-x"))
    assert caught.value.type == "EntityNotFound" and caught.value.non_retryable


async def test_embeddings_endpoint_down_is_a_retryable_error(database_url: str):
    db = Database(database_url)
    db.create_tables()
    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    try:
        base = KnowledgeBase(db, AuditLedger(db), Embedder(client, EMBEDDING_MODEL_NAME))
        with pytest.raises(ApplicationError) as caught:
            await base.search(KnowledgeQuery(tenant=TENANT, query="anything"))
        assert caught.value.type == "EmbeddingsUnavailable" and not caught.value.non_retryable
        assert base.ledger.trail("cli:knowledge") == []  # nothing retrieved, nothing audited
    finally:
        await client.close()
        db.dispose()


def test_cli_ingest_search_related(model_server: ScriptedModelServer, tmp_path: Path):
    env = {
        **os.environ,
        "OPENAI_BASE_URL": model_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }
    baton = [sys.executable, "-m", "baton.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*baton, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )

    ingest = run("knowledge", "ingest", "--seed")
    assert ingest.returncode == 0, ingest.stderr
    assert f"ingested {len(SEED_DOCUMENTS)} documents" in ingest.stdout
    search = run("knowledge", "search", "can a customer get a refund", "--k", "2")
    assert search.returncode == 0, search.stderr
    assert "1. " in search.stdout and "pol-refunds" in search.stdout.splitlines()[1]
    assert "source confluence:policies/finance/refunds  author finance.ops" in search.stdout
    related = run("knowledge", "related", "cust-stark")
    assert related.returncode == 0 and "contract ctr-stark-expansion" in related.stdout
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"doc_id": "x", "tenant": "acme", "title": "T", "text": "t"}) + "\n")
    bad = run("knowledge", "ingest", "--file", str(docs))
    assert bad.returncode == 2 and "line 1: source: Field required" in bad.stderr
    unique = uuid.uuid4().hex  # a document from a file is searchable at once
    docs.write_text(
        json.dumps(
            {"doc_id": f"d-{unique}", "tenant": "initrode", "title": "Parking", "text": "Visitors "
             "park in the north garage, level 2.", "source": "wiki:facilities", "author": "fm",
             "created_at": "2026-11-01T00:00:00Z"}
        ) + "\n"
    )  # fmt: skip
    assert run("knowledge", "ingest", "--file", str(docs)).returncode == 0
    found = run("knowledge", "search", "where can guests leave their car", "--tenant", "initrode")
    assert found.returncode == 0 and f"d-{unique}" in found.stdout
