"""`baton knowledge ...`: ingest documents, search them, look up related entities.

    baton knowledge ingest --seed              the demo corpus and relation store (tenant acme)
    baton knowledge ingest --file DOCS.jsonl   one KnowledgeDocument JSON object per line
    baton knowledge search "QUERY" [--tenant acme] [--k 5] [--kind policy] [--json]
    baton knowledge related ENTITY_ID [--tenant acme]

These talk to the database and the embeddings endpoint directly (no Temporal needed); every
ingest and search writes an audit row under workflow id ``cli:knowledge``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import click
from pydantic import ValidationError

from baton.cli_common import json_option, run
from baton.settings import Settings

# baton/cli.py's exit codes; bad input is a ValueError, which its main() turns into exit 2 (this
# module does not import baton.cli: under `python -m baton.cli` that would be a second copy).
EXIT_OK, EXIT_FAILED = 0, 1


class _Knowledge:
    """The knowledge base the CLI uses, closed after the command."""

    def __init__(self, settings: Settings) -> None:
        from openai import AsyncOpenAI

        from activities.audit import AuditLedger
        from activities.database import Database
        from activities.knowledge import Embedder, KnowledgeBase

        self.db = Database(settings.database_url)
        self.db.create_tables()
        self.client = AsyncOpenAI(
            base_url=settings.openai_base_url, api_key=settings.openai_api_key, max_retries=2
        )
        self.base = KnowledgeBase(
            self.db, AuditLedger(self.db), Embedder(self.client, settings.embedding_model)
        )

    async def close(self) -> None:
        await self.client.close()
        self.db.dispose()


def _read_documents(name: str) -> list[Any]:
    from workflows.contracts.knowledge import KnowledgeDocument

    try:
        with open(name, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read --file {name}: {err.strerror or err}") from None
    docs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            docs.append(KnowledgeDocument.model_validate_json(line))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                for e in err.errors()
            )
            raise ValueError(f"--file {name} line {number}: {problems}") from None
    if not docs:
        raise ValueError(f"--file {name} holds no documents")
    return docs


async def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:

    if bool(args.seed) == bool(args.file):
        raise ValueError("give exactly one of --seed or --file DOCS.jsonl")
    if args.seed:
        from activities.knowledge_seed import SEED_DOCUMENTS, SEED_ENTITIES

        docs, entities = SEED_DOCUMENTS, SEED_ENTITIES
    else:
        docs, entities = _read_documents(args.file), []
    kb = _Knowledge(settings)
    try:
        result = await kb.base.ingest(docs)
        if entities:
            kb.base.store.upsert_entities(entities)
    finally:
        await kb.close()
    print(
        f"ingested {len(result.ingested)} documents ({result.chunks} chunks) with "
        f"{result.model}; {len(result.unchanged)} unchanged"
        + (f"; {len(entities)} entities in the relation store" if entities else "")
    )
    return EXIT_OK


async def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from workflows.contracts.knowledge import KnowledgeQuery

    query = KnowledgeQuery(
        tenant=args.tenant,
        query=args.query,
        k=args.k,
        kinds=args.kind or [],
        entity_id=args.entity,
        requested_by="cli",
    )
    kb = _Knowledge(settings)
    try:
        result = await kb.base.search(query)
    finally:
        await kb.close()
    if args.json:
        print(result.model_dump_json(indent=2))
        return EXIT_OK if result.hits else EXIT_FAILED
    print(
        f"{len(result.hits)} hits for {result.query!r} (tenant {result.tenant}, "
        f"{result.searched_chunks} chunks, {result.model}, embed {result.embed_ms:.1f} ms, "
        f"search {result.search_ms:.1f} ms)"
    )
    for rank, hit in enumerate(result.hits, 1):
        p = hit.provenance
        print(f"{rank}. {hit.score:.3f}  {hit.doc_id}  [{hit.kind}]  {hit.title}")
        print(f"   source {p.source}  author {p.author}  written {p.created_at:%Y-%m-%d}")
        text = hit.text.replace("\n", " ")
        print(f"   {text[:160]}{'...' if len(text) > 160 else ''}")
    if not result.hits:
        print("no documents: ingest some first (baton knowledge ingest --seed)", file=sys.stderr)
    return EXIT_OK if result.hits else EXIT_FAILED


async def cmd_related(args: argparse.Namespace, settings: Settings) -> int:

    kb = _Knowledge(settings)
    try:
        result = kb.base.store.related(args.tenant, args.entity_id)
    except LookupError as err:
        raise ValueError(str(err)) from None
    finally:
        await kb.close()
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return EXIT_OK
    for entity in [result.root, *result.descendants]:
        depth = {"customer": 0, "account": 1, "contract": 2}[entity.kind]
        attrs = json.dumps(entity.attributes, sort_keys=True)
        print(f"{'  ' * depth}{entity.kind} {entity.entity_id}: {entity.name}  {attrs}")
    return EXIT_OK


knowledge = click.Group("knowledge", help="knowledge layer: ingest, search, relations")


@knowledge.command("ingest", help="embed and store documents (with provenance)")
@click.option("--seed", is_flag=True, help="the demo corpus and relation store")
@click.option("--file", metavar="DOCS.jsonl", help="one KnowledgeDocument per line")
def knowledge_ingest(**params: Any) -> int:
    return run(cmd_ingest, params)


@knowledge.command("search", help="the most similar documents, with provenance")
@click.argument("query")
@click.option("--tenant", default="acme")
@click.option("--k", type=int, default=5)
@click.option("--kind", multiple=True, help="only this kind (repeatable)")
@click.option("--entity", help="only documents about this entity id")
@json_option("print the hits as JSON")
def knowledge_search(**params: Any) -> int:
    return run(cmd_search, params)


@knowledge.command("related", help="an entity and its accounts and contracts")
@click.argument("entity_id")
@click.option("--tenant", default="acme")
@json_option("print the entity and its relations as JSON")
def knowledge_related(**params: Any) -> int:
    return run(cmd_related, params)
