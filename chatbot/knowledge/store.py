"""The knowledge index's one owner: the faiss file kept in step with the database, its lock,
the stored passage vectors, and each process's loaded copy.

Saving, unpublishing or deleting an article (knowledge/services.py) commits to the database
first and then, on commit, enqueues a task (knowledge/tasks.py) that re-embeds the
article's passages and syncs the index file; the chat never waits for it. In the meantime
retrieval already ignores unpublished or deleted articles, because every hit is checked
against the database (knowledge/selectors.py).

`index_sync` makes the index file equal to the published passages in the database: it
adds and removes the difference, or rebuilds from the stored vectors when the file is
missing, corrupt or the wrong kind for the collection's size. It is idempotent and holds
a file lock, so any process (worker, web server, command) may run it at any time.

Each process keeps the index file it last loaded and reloads it when the file changes
(a stat per search). The first search in a process syncs the index with the database
first, so an index that is missing, corrupt or stale at start is repaired before use.
"""

import fcntl
import hashlib
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from chatbot.knowledge.artifact import index_publish, index_refresh
from chatbot.knowledge.chunking import article_chunks, passage_embedding_text
from chatbot.knowledge.index import (
    IndexUnreadable,
    KnowledgeIndex,
    index_build,
    index_load,
    index_needs_rebuild,
    index_save,
    index_update,
)
from chatbot.knowledge.models import Article, Passage

log = logging.getLogger(__name__)


def index_path() -> Path:
    return Path(settings.KNOWLEDGE_INDEX_PATH)


# --- Passage vectors ---------------------------------------------------------------------


def article_text_hash(article: Article) -> str:
    return hashlib.sha256(f"{article.title}\x00{article.body}".encode()).hexdigest()


def article_passages_refresh(*, article_id: int) -> int | None:
    """Re-split and re-embed an article whose text changed; the number of passages, or
    None when the article is gone. Embedding runs outside any transaction."""
    from chatbot.knowledge.embedding import texts_embed

    article = Article.objects.filter(pk=article_id).first()
    if article is None:
        return None
    digest = article_text_hash(article)
    if article.indexed_hash == digest:
        return article.passages.count()
    chunks = article_chunks(article.title, article.body)
    vectors = texts_embed([passage_embedding_text(article.title, c) for c in chunks])
    with transaction.atomic():
        locked = Article.objects.select_for_update().filter(pk=article_id).first()
        if locked is None or article_text_hash(locked) != digest:
            return None  # edited again meanwhile: the task for that edit re-embeds it
        locked.passages.all().delete()
        Passage.objects.bulk_create(
            Passage(article=locked, position=i, text=text, embedding=vector.tobytes())
            for i, (text, vector) in enumerate(zip(chunks, vectors, strict=True))
        )
        Article.objects.filter(pk=article_id).update(indexed_hash=digest)
    return len(chunks)


def articles_reembed() -> int:
    """Re-embed every article (after a change of chunking or embedding model)."""
    Article.objects.update(indexed_hash="")
    ids = list(Article.objects.values_list("pk", flat=True))
    for article_id in ids:
        article_passages_refresh(article_id=article_id)
    return len(ids)


# --- The index file ---------------------------------------------------------------------


@dataclass
class SyncResult:
    kind: str
    count: int
    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    reason: str = ""


_thread_lock = threading.Lock()


@contextmanager
def index_file_lock(path: Path):
    """One index writer at a time, across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _thread_lock, open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def published_passage_ids() -> np.ndarray:
    ids = Passage.objects.filter(article__published=True).order_by("pk").values_list("pk")
    return np.fromiter((row[0] for row in ids.iterator(chunk_size=5000)), dtype=np.int64)


def passage_vectors(ids: np.ndarray) -> np.ndarray:
    """Stored embeddings for these passage ids, in the same order."""
    from chatbot.knowledge.embedding import DIMENSION

    out = np.zeros((len(ids), DIMENSION), dtype=np.float32)
    where = {int(pid): i for i, pid in enumerate(ids)}
    for start in range(0, len(ids), 5000):
        chunk = [int(i) for i in ids[start : start + 5000]]
        for pid, raw in Passage.objects.filter(pk__in=chunk).values_list("pk", "embedding"):
            out[where[pid]] = np.frombuffer(bytes(raw), dtype=np.float32)
    return out


def index_sync(*, rebuild: bool = False) -> SyncResult:
    """Make the index file match the published passages in the database (see module doc)."""
    path = index_path()
    flat_max, nprobe = settings.KNOWLEDGE_FLAT_MAX, settings.KNOWLEDGE_IVF_NPROBE
    with index_file_lock(path):
        db_ids = published_passage_ids()
        current: KnowledgeIndex | None = None
        reason = "rebuild requested" if rebuild else ""
        if not rebuild:
            try:
                current = index_load(path)
            except IndexUnreadable as exc:
                reason = str(exc)
        if current is not None and index_needs_rebuild(current, len(db_ids), flat_max=flat_max):
            current, reason = None, f"{len(db_ids)} passages need another index layout"
        if current is None:
            log.info("Rebuilding the knowledge index (%s)", reason)
            current = index_build(passage_vectors(db_ids), db_ids, flat_max=flat_max, nprobe=nprobe)
            index_save(current, path)
            index_publish(path)
            _index_cache_put(path, current)
            return SyncResult(current.kind, len(db_ids), len(db_ids), 0, True, reason)
        remove = np.setdiff1d(current.ids, db_ids, assume_unique=True)
        add = np.setdiff1d(db_ids, current.ids, assume_unique=True)
        if len(remove) or len(add):
            index_update(current, remove=remove, add_vectors=passage_vectors(add), add_ids=add)
            index_save(current, path)
            index_publish(path)
        _index_cache_put(path, current)
        return SyncResult(current.kind, len(current), len(add), len(remove))


def article_index(*, article_id: int) -> SyncResult:
    """The background job after an article changed: refresh its passages, sync the index."""
    article_passages_refresh(article_id=article_id)
    return index_sync()


# --- This process's copy -------------------------------------------------------------------

_cache: dict[str, tuple[tuple | None, KnowledgeIndex]] = {}
_checked: set[str] = set()
_cache_lock = threading.Lock()


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _index_cache_put(path: Path, current: KnowledgeIndex) -> None:
    with _cache_lock:
        _cache[str(path)] = (_signature(path), current)
        _checked.add(str(path))


def index_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
        _checked.clear()


def loaded_index() -> KnowledgeIndex:
    """This process's index, synced with the database on first use, reloaded on change."""
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
    with _cache_lock:
        _cache[key] = (signature, current)
    return current


def knowledge_warmup() -> None:
    """At server start: load the embedding model and check the index against the
    database (rebuilding a missing, corrupt or stale one) before the first customer."""
    from django.db import close_old_connections

    from chatbot.knowledge.embedding import texts_embed

    try:
        texts_embed(["warm-up"])
        current = loaded_index()
        log.info("Knowledge index ready: %s, %d passages", current.kind, len(current))
    except Exception:  # noqa: BLE001 - the server still starts; replies go without retrieval
        log.exception("Knowledge warm-up failed")
    finally:
        close_old_connections()
