"""Reading the knowledge base: nearest passages to a question, checked against the database.

Each process keeps the index file it last loaded and reloads it when the file changes
(a stat per search). The first search in a process first syncs the index with the
database, so an index that is missing, corrupt or stale at start is repaired before use.
"""

import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from chatbot.knowledge.index import IndexUnreadable, KnowledgeIndex, index_load, index_search
from chatbot.knowledge.models import Passage

log = logging.getLogger(__name__)

_cache: dict[str, tuple[tuple | None, KnowledgeIndex]] = {}
_checked: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Hit:
    passage_id: int
    article_id: int
    title: str
    kind: str
    text: str
    score: float


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def index_cache_put(path: Path, current: KnowledgeIndex) -> None:
    with _lock:
        _cache[str(path)] = (_signature(path), current)
        _checked.add(str(path))


def index_cache_clear() -> None:
    with _lock:
        _cache.clear()
        _checked.clear()


def loaded_index() -> KnowledgeIndex:
    """This process's index, synced with the database on first use, reloaded on change."""
    from chatbot.knowledge.artifact import index_refresh
    from chatbot.knowledge.services import index_path, index_sync

    path = index_path()
    key = str(path)
    if key not in _checked:
        index_sync()  # caches the result
    index_refresh(path)  # another host's newer index, from the artifact store
    signature = _signature(path)
    cached = _cache.get(key)
    if cached and cached[0] == signature:
        return cached[1]
    try:
        current = index_load(path)
    except IndexUnreadable as exc:
        log.warning("Knowledge index unreadable (%s): rebuilding", exc)
        index_sync(rebuild=True)
        return _cache[key][1]
    with _lock:
        _cache[key] = (signature, current)
    return current


def passages_for_vector(vector: np.ndarray, *, k: int, min_score: float) -> list[Hit]:
    """The best `k` published passages scoring at least `min_score`, best first."""
    current = loaded_index()
    # Over-fetch: some hits may belong to articles unpublished or deleted since indexing.
    scores, ids = index_search(current, vector, k * 4)
    ranked = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    ranked = [(s, i) for s, i in ranked if s >= min_score]
    if not ranked:
        return []
    rows = {
        p.pk: p
        for p in Passage.objects.filter(
            pk__in=[i for _, i in ranked], article__published=True
        ).select_related("article")
    }
    hits = [
        Hit(
            passage_id=pid,
            article_id=rows[pid].article_id,
            title=rows[pid].article.title,
            kind=rows[pid].article.kind,
            text=rows[pid].text,
            score=round(score, 4),
        )
        for score, pid in ranked
        if pid in rows
    ]
    return hits[:k]


def passages_search(*, query: str, k: int | None = None, min_score: float | None = None):
    """Embed `query` and search (blocking: call off the event loop)."""
    from chatbot.knowledge.embedding import texts_embed

    return passages_for_vector(
        texts_embed([query]),
        k=k or settings.KNOWLEDGE_TOP_K,
        min_score=settings.KNOWLEDGE_MIN_SCORE if min_score is None else min_score,
    )


def hits_sources(hits: list[Hit]) -> list[dict]:
    """Citations for a reply: one per article, best score first."""
    sources: dict[int, dict] = {}
    for hit in hits:
        if hit.article_id not in sources:
            sources[hit.article_id] = {
                "article_id": hit.article_id,
                "title": hit.title,
                "kind": hit.kind,
                "score": hit.score,
            }
    return list(sources.values())


def hit_dict(hit: Hit) -> dict:
    return asdict(hit)
