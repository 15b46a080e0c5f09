"""Writes to the knowledge base: articles (admin, Markdown import). Each commits to the
database, then enqueues the task that re-embeds the article and syncs the index
(knowledge/tasks.py, knowledge/store.py); the chat never waits for it."""

import logging
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from chatbot.knowledge.models import Article
from chatbot.knowledge.tasks import knowledge_article_index, knowledge_index_sync

log = logging.getLogger(__name__)


# --- Articles ------------------------------------------------------------------------------


def article_index_enqueue(article_id: int) -> None:
    """Re-index the article in the background once the current transaction commits."""
    # robust: a broker outage must not fail the save; the periodic check repairs the index.
    transaction.on_commit(lambda: knowledge_article_index.delay(article_id), robust=True)


def index_sync_enqueue() -> None:
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
