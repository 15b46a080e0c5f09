"""Knowledge base: chunking, indexing on change, unpublished articles, rebuilds, recall."""

import numpy as np
import pytest
from django.core.management import call_command

from chatbot.knowledge import selectors, services, store
from chatbot.knowledge.chunking import article_chunks
from chatbot.knowledge.index import index_load
from chatbot.knowledge.models import Article, Passage
from tests.retrieval.questions import QUESTIONS, UNRELATED

pytestmark = pytest.mark.django_db

GIFT_WRAP = (
    "## Gift wrapping\n\nEvery order can be gift wrapped for 3.50. Choose gift wrapping at "
    "checkout and add a personal card message of up to 200 characters."
)


def titles(query: str, **kwargs) -> list[str]:
    return [hit.title for hit in selectors.passages_search(query=query, **kwargs)]


def index_ids() -> set[int]:
    return set(index_load(store.index_path()).ids.tolist())


def test_markdown_is_split_into_passages_led_by_their_heading():
    long = " ".join(f"This is sentence {i}." for i in range(40))  # 160 words
    body = f"Intro line.\n\n## Part one\n\n{long}\n\n## Part two\n\n**Short.**"
    chunks = article_chunks("Guide", body, max_words=90)
    assert chunks[0] == "Intro line."
    assert all(c.startswith("Part one: ") for c in chunks[1:-1]) and len(chunks) == 4
    assert chunks[-1] == "Part two: Short."
    assert all(len(c.split()) <= 92 for c in chunks)
    assert "sentence 39." in chunks[2]


def test_new_article_is_indexed_on_commit(celery_eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        article, changed = services.article_upsert(
            slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP, tags="gifts"
        )
    assert changed and len(callbacks) == 1
    passages = list(article.passages.all())
    assert passages and "3.50" in passages[0].text
    assert index_ids() == {p.pk for p in passages}
    assert titles("Can you wrap my order as a present?") == ["Gift wrapping"]


def test_saving_enqueues_instead_of_indexing_inline(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        article = services.article_save(
            article=Article(slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP)
        )
    assert len(callbacks) == 1
    assert not article.passages.exists()  # the worker embeds it, not the saving request


def test_editing_an_article_replaces_its_passages_in_the_index(
    celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        article, _ = services.article_upsert(
            slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP
        )
    old_ids = set(article.passages.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        article.body = "## Gift wrapping\n\nGift wrapping is no longer offered, sorry."
        services.article_save(article=article)
    new_ids = set(article.passages.values_list("pk", flat=True))
    assert new_ids and not new_ids & old_ids
    assert index_ids() == new_ids
    hits = selectors.passages_search(query="Do you offer gift wrapping?")
    assert hits and "no longer offered" in hits[0].text


def test_unpublished_articles_are_never_retrieved(celery_eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        article, _ = services.article_upsert(
            slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP
        )
    assert titles("gift wrap my parcel") == ["Gift wrapping"]
    # Before the background task has run, the index still holds the passages ...
    with django_capture_on_commit_callbacks(execute=False):
        services.article_publish_set(article=article, published=False)
    assert index_ids()
    # ... but a hit is checked against the database, so it is never returned.
    assert titles("gift wrap my parcel", min_score=0.0) == []
    store.article_index(article_id=article.pk)
    assert index_ids() == set()
    with django_capture_on_commit_callbacks(execute=True):
        services.article_publish_set(article=article, published=True)
    assert titles("gift wrap my parcel") == ["Gift wrapping"]


def test_an_article_created_unpublished_is_not_retrieved(
    celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.article_upsert(
            slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP, published=False
        )
    assert Passage.objects.exists()
    assert titles("gift wrap my parcel", min_score=0.0) == []


def test_deleting_an_article_removes_it_from_the_index(
    celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        article, _ = services.article_upsert(
            slug="gift-wrapping", title="Gift wrapping", body=GIFT_WRAP
        )
    with django_capture_on_commit_callbacks(execute=True):
        services.article_delete(article=article)
    assert index_ids() == set()
    assert titles("gift wrap my parcel", min_score=0.0) == []


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
def test_a_missing_or_corrupt_index_is_rebuilt_from_the_database(demo_kb, damage):
    path = store.index_path()
    expected = set(Passage.objects.values_list("pk", flat=True))
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"this is not an index")
    else:
        path.write_bytes(path.read_bytes()[:-200])
    store.index_cache_clear()  # as in a freshly started process
    assert titles("When will I get my money back?")[0] == "Refunds"
    assert index_ids() == expected


def test_a_stale_index_is_detected_at_start_and_synced(demo_kb):
    refunds = Article.objects.get(slug="refunds")
    # Changed behind the services' back: the index file no longer matches the database.
    Article.objects.filter(pk=refunds.pk).update(published=False)
    store.index_cache_clear()
    assert "Refunds" not in titles("When will I get my money back?", min_score=0.0)
    assert not index_ids() & set(refunds.passages.values_list("pk", flat=True))


def test_rebuild_command_restores_the_index(demo_kb, capsys):
    store.index_path().unlink()
    call_command("kb_rebuild")
    assert "Index rebuilt: flat" in capsys.readouterr().out
    assert index_ids() == set(Passage.objects.values_list("pk", flat=True))


def test_import_kb_is_idempotent_and_kb_search_prints_titles_and_scores(demo_kb, capsys):
    count = Passage.objects.count()
    call_command("import_kb", str(demo_kb))
    assert "Imported 7 articles (0 new or changed)" in capsys.readouterr().out
    assert Passage.objects.count() == count
    call_command("kb_search", "Do you ship to Norway?", "-k", "2")
    out = capsys.readouterr().out
    assert out.startswith("1. 0.") and "Shipping and delivery" in out


def test_nothing_relevant_means_no_hits(demo_kb):
    for question in UNRELATED:
        assert selectors.passages_search(query=question) == [], question


def test_recall_at_3_on_paraphrased_questions(demo_kb):
    """At least 0.9 of 50+ paraphrased questions find their article in the top 3 passages
    above the production similarity threshold."""
    assert len(QUESTIONS) >= 50
    slugs = dict(Article.objects.values_list("pk", "slug"))
    misses = []
    for question, want in QUESTIONS:
        got = [slugs[h.article_id] for h in selectors.passages_search(query=question, k=3)]
        if want not in got:
            misses.append((question, want, got))
    recall = 1 - len(misses) / len(QUESTIONS)
    assert recall >= 0.9, misses


def test_index_layout_follows_size_and_updates_in_place(settings):
    from chatbot.knowledge.index import index_build, index_search, index_update

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 384))
    vectors = centers[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(100, 4100, dtype=np.int64)
    assert index_build(vectors[:50], ids[:50], flat_max=1000, nprobe=8).kind == "flat"
    ivf = index_build(vectors, ids, flat_max=1000, nprobe=8)
    assert ivf.kind == "ivf"
    _, found = index_search(ivf, vectors[:5], 1)
    assert found[:, 0].tolist() == ids[:5].tolist()
    index_update(ivf, remove=ids[:5], add_vectors=vectors[:1], add_ids=np.array([9999]))
    _, found = index_search(ivf, vectors[:2], 1)
    assert found[0, 0] == 9999 and 100 not in found[:, 0] and 101 not in found[:, 0]
    assert len(ivf) == 3996


@pytest.mark.django_db(transaction=True)
def test_server_warmup_rebuilds_a_missing_index(demo_kb):
    import threading

    store.index_path().unlink()
    store.index_cache_clear()
    warmup = threading.Thread(target=store.knowledge_warmup)  # as at server start
    warmup.start()
    warmup.join(timeout=60)
    assert index_ids() == set(Passage.objects.values_list("pk", flat=True))
