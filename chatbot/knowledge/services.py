"""Writes to the knowledge base and keeping the faiss index in step with the database.

Saving, unpublishing or deleting an article commits to the database first and then, on
commit, enqueues a Celery task that re-embeds the article's passages and syncs the index
file; the chat never waits for it. In the meantime retrieval already ignores unpublished
or deleted articles, because every hit is checked against the database.

`index_sync` makes the index file equal to the published passages in the database: it
adds and removes the difference, or rebuilds from the stored vectors when the file is
missing, corrupt or the wrong kind for the collection's size. It is idempotent and holds
a file lock, so any process (worker, web server, command) may run it at any time.
"""

import fcntl
import hashlib
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from chatbot.knowledge.artifact import index_publish
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


# --- Articles ------------------------------------------------------------------------------


def article_index_enqueue(article_id: int) -> None:
    """Re-index the article in the background once the current transaction commits."""
    from chatbot.tasks import knowledge_article_index

    # robust: a broker outage must not fail the save; the periodic check repairs the index.
    transaction.on_commit(lambda: knowledge_article_index.delay(article_id), robust=True)


def index_sync_enqueue() -> None:
    from chatbot.tasks import knowledge_index_sync

    transaction.on_commit(lambda: knowledge_index_sync.delay(), robust=True)


@transaction.atomic
def article_save(*, article: Article) -> Article:
    """Save a new or edited article (e.g. from the admin form) and re-index it."""
    article.full_clean()
    article.save()
    article_index_enqueue(article.pk)
    return article


@transaction.atomic
def article_upsert(
    *,
    slug: str,
    title: str,
    body: str,
    tags: str = "",
    published: bool = True,
    kind: str = Article.Kind.ARTICLE,
    keep_existing: bool = False,
) -> tuple[Article, bool]:
    """Create or update the article with this slug; (article, changed)."""
    article = Article.objects.select_for_update().filter(slug=slug).first()
    if article is not None and keep_existing:
        return article, False
    if article is None:
        article = Article(slug=slug)
    new = {"title": title, "body": body, "tags": tags, "published": published, "kind": kind}
    if article.pk and all(getattr(article, k) == v for k, v in new.items()):
        return article, False
    for key, value in new.items():
        setattr(article, key, value)
    article_save(article=article)
    return article, True


@transaction.atomic
def article_publish_set(*, article: Article, published: bool) -> Article:
    Article.objects.filter(pk=article.pk).update(published=published, updated_at=timezone.now())
    article.published = published
    article_index_enqueue(article.pk)
    return article


@transaction.atomic
def article_delete(*, article: Article) -> None:
    article.delete()
    index_sync_enqueue()


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


# --- The index ------------------------------------------------------------------------------


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
    from chatbot.knowledge import selectors

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
            selectors.index_cache_put(path, current)
            return SyncResult(current.kind, len(db_ids), len(db_ids), 0, True, reason)
        remove = np.setdiff1d(current.ids, db_ids, assume_unique=True)
        add = np.setdiff1d(db_ids, current.ids, assume_unique=True)
        if len(remove) or len(add):
            index_update(current, remove=remove, add_vectors=passage_vectors(add), add_ids=add)
            index_save(current, path)
            index_publish(path)
        selectors.index_cache_put(path, current)
        return SyncResult(current.kind, len(current), len(add), len(remove))


def article_index(*, article_id: int) -> SyncResult:
    """The background job after an article changed: refresh its passages, sync the index."""
    article_passages_refresh(article_id=article_id)
    return index_sync()


# --- Markdown import -------------------------------------------------------------------------


@dataclass
class MarkdownArticle:
    slug: str
    title: str
    body: str
    tags: str = ""
    published: bool = True


def markdown_article_parse(path: Path) -> MarkdownArticle:
    """A Markdown file as an article: optional front matter between `---` lines
    (`title:`, `tags:`, `published:`), else the first `# heading` is the title."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n").strip()
    fields: dict[str, str] = {}
    if text.startswith("---\n"):
        header, sep, rest = text[4:].partition("\n---")
        if sep:
            for line in header.splitlines():
                key, colon, value = line.partition(":")
                if colon:
                    fields[key.strip().lower()] = value.strip()
            text = rest.lstrip("-").strip()
    title = fields.get("title", "")
    if not title and text.startswith("# "):
        first, _, text = text.partition("\n")
        title = first[2:].strip()
        text = text.strip()
    if not title:
        title = path.stem.replace("-", " ").replace("_", " ").capitalize()
    published = fields.get("published", "true").lower() not in {"false", "no", "0", "off"}
    return MarkdownArticle(
        slug=slugify(path.stem)[:200] or "article",
        title=title[:200],
        body=text,
        tags=fields.get("tags", "")[:300],
        published=published,
    )


def kb_import_dir(*, folder: Path, keep_existing: bool = False) -> list[tuple[Article, bool]]:
    """Create or update one article per `*.md` file (slug = file name); [(article, changed)].

    Re-importing an unchanged folder changes nothing. With keep_existing, articles already
    in the database (perhaps edited in the admin since) are left alone.
    """
    files = sorted(Path(folder).glob("*.md"))
    if not files:
        raise FileNotFoundError(f"No Markdown (*.md) files in {folder}")
    results = []
    for path in files:
        parsed = markdown_article_parse(path)
        results.append(
            article_upsert(
                slug=parsed.slug,
                title=parsed.title,
                body=parsed.body,
                tags=parsed.tags,
                published=parsed.published,
                keep_existing=keep_existing,
            )
        )
    return results


def knowledge_warmup() -> None:
    """At server start: load the embedding model and check the index against the
    database (rebuilding a missing, corrupt or stale one) before the first customer."""
    from django.db import close_old_connections

    from chatbot.knowledge.embedding import texts_embed
    from chatbot.knowledge.selectors import loaded_index

    try:
        texts_embed(["warm-up"])
        current = loaded_index()
        log.info("Knowledge index ready: %s, %d passages", current.kind, len(current))
    except Exception:  # noqa: BLE001 - the server still starts; replies go without retrieval
        log.exception("Knowledge warm-up failed")
    finally:
        close_old_connections()
