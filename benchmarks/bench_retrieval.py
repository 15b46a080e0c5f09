"""Retrieval benchmark (run with `make bench-retrieval`; no database needed).

1. The demo knowledge base with the real embedding model: recall@3 on the paraphrased
   question set (tests/retrieval/questions.py) and query latency end to end (embed the
   question + search), p50 / p95.
2. Index build time and search latency (one query at a time, p50 / p95) for 1k, 10k and
   100k passages, with the index layout the app picks for that size (settings
   KNOWLEDGE_FLAT_MAX / KNOWLEDGE_IVF_NPROBE), and for the approximate (IVF) index its
   recall@3 and recall@10 against exact flat search. These use SYNTHETIC vectors
   (384-d, clustered like topical text, L2-normalised): embedding 100k real passages would
   take many minutes on this machine and measures the embedding model, not the index.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django  # noqa: E402

django.setup()

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402

from chatbot.knowledge.chunking import article_chunks, passage_embedding_text  # noqa: E402
from chatbot.knowledge.embedding import DIMENSION, texts_embed  # noqa: E402
from chatbot.knowledge.index import index_build, index_search  # noqa: E402
from chatbot.knowledge.services import markdown_article_parse  # noqa: E402
from tests.retrieval.questions import QUESTIONS  # noqa: E402

SIZES = [1_000, 10_000, 100_000]
QUERIES = 200


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5) * 1000:.2f} ms, p95 {pct(values, 0.95) * 1000:.2f} ms"


def demo_kb() -> None:
    articles = [
        markdown_article_parse(p) for p in sorted((ROOT / "chatbot/demo/knowledge").glob("*.md"))
    ]
    texts, owners = [], []
    for article in articles:
        for chunk in article_chunks(article.title, article.body):
            texts.append(passage_embedding_text(article.title, chunk))
            owners.append(article.slug)
    texts_embed(["warm-up"])
    start = time.perf_counter()
    vectors = texts_embed(texts)
    embed_s = time.perf_counter() - start
    index = index_build(
        vectors, np.arange(len(texts)), flat_max=settings.KNOWLEDGE_FLAT_MAX, nprobe=8
    )
    latencies, found, found_thr = [], 0, 0
    for question, want in QUESTIONS:
        start = time.perf_counter()
        scores, ids = index_search(index, texts_embed([question]), 3)
        latencies.append(time.perf_counter() - start)
        got = [owners[i] for i in ids[0]]
        found += want in got
        found_thr += any(
            owners[i] == want and s >= settings.KNOWLEDGE_MIN_SCORE
            for s, i in zip(scores[0], ids[0], strict=True)
        )
    n = len(QUESTIONS)
    print(
        f"Demo knowledge base: {len(articles)} articles, {len(texts)} passages "
        f"(embedded in {embed_s:.2f} s)"
    )
    print(
        f"  recall@3 on {n} paraphrased questions: {found / n:.3f} "
        f"({found_thr / n:.3f} counting only hits above the threshold "
        f"{settings.KNOWLEDGE_MIN_SCORE})"
    )
    print(f"  query latency, embed + search: {ms(latencies)}")


def synthetic(n: int, rng, centers: np.ndarray | None) -> np.ndarray:
    """Around random topic centres (noise as large as the centre), or i.i.d. if None."""
    vectors = rng.normal(size=(n, DIMENSION)).astype(np.float32)
    if centers is not None:
        vectors += centers[rng.integers(0, len(centers), n)]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def search_latencies(index, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        index_search(index, q[None, :], 3)
        out.append(time.perf_counter() - start)
    return out


def synthetic_sizes() -> None:
    print(
        f"\nSynthetic vectors ({DIMENSION}-d, clustered), {QUERIES} queries one at a time, "
        f"faiss threads={faiss.omp_get_max_threads()}; flat below "
        f"{settings.KNOWLEDGE_FLAT_MAX} passages, IVF (nprobe "
        f"{settings.KNOWLEDGE_IVF_NPROBE}) from there"
    )
    rng = np.random.default_rng(0)
    for n in SIZES:
        centers = rng.normal(size=(max(10, n // 200), DIMENSION)).astype(np.float32)
        vectors = synthetic(n, rng, centers)
        queries = synthetic(QUERIES, rng, centers)
        ids = np.arange(n, dtype=np.int64)
        start = time.perf_counter()
        index = index_build(
            vectors, ids, flat_max=settings.KNOWLEDGE_FLAT_MAX, nprobe=settings.KNOWLEDGE_IVF_NPROBE
        )
        build_s = time.perf_counter() - start
        latencies = search_latencies(index, queries)
        line = f"  {n:>7} passages: {index.kind:<4} build {build_s:6.2f} s, search {ms(latencies)}"
        print(line)
        if index.kind != "flat":
            exact = index_build(vectors, ids, flat_max=n + 1, nprobe=1)
            print(f"           flat for comparison: search {ms(search_latencies(exact, queries))}")
            print(
                f"           IVF ({index.meta['lists']} lists) {ivf_recall(index, exact, queries)}"
            )
            # Worst case for IVF: no cluster structure at all.
            vectors, queries = synthetic(n, rng, None), synthetic(QUERIES, rng, None)
            index = index_build(
                vectors,
                ids,
                flat_max=settings.KNOWLEDGE_FLAT_MAX,
                nprobe=settings.KNOWLEDGE_IVF_NPROBE,
            )
            exact = index_build(vectors, ids, flat_max=n + 1, nprobe=1)
            print(
                f"           same on unclustered i.i.d. vectors (worst case): "
                f"{ivf_recall(index, exact, queries)}"
            )


def ivf_recall(index, exact, queries) -> str:
    parts = []
    for k in (3, 10):
        _, want = index_search(exact, queries, k)
        _, got = index_search(index, queries, k)
        hits = sum(len(set(w) & set(g)) for w, g in zip(want, got, strict=True))
        parts.append(f"recall@{k} vs flat {hits / (k * len(queries)):.3f}")
    return ", ".join(parts)


if __name__ == "__main__":
    demo_kb()
    synthetic_sizes()
