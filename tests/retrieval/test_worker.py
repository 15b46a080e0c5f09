"""A real Celery worker on Redis keeps the index in step with saved articles."""

import time

import pytest

from chatbot.knowledge import services, store
from chatbot.knowledge.index import IndexUnreadable, index_load

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for_index(predicate, timeout=90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate(set(index_load(store.index_path()).ids.tolist())):
                return True
        except IndexUnreadable:
            pass
        time.sleep(0.2)
    return False


def test_worker_indexes_saved_and_unpublished_articles(
    settings, celery_worker_proc, knowledge_index_path
):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    worker = celery_worker_proc(KNOWLEDGE_INDEX_PATH=knowledge_index_path)
    # At start the worker builds the (missing) index for the empty knowledge base.
    assert wait_for_index(lambda ids: ids == set()), worker.log_path.read_text()
    article, _ = services.article_upsert(
        slug="gift-wrapping",
        title="Gift wrapping",
        body="Every order can be gift wrapped for 3.50 at checkout.",
    )
    assert wait_for_index(
        lambda ids: ids and ids == set(article.passages.values_list("pk", flat=True))
    ), worker.log_path.read_text()[-3000:]
    services.article_publish_set(article=article, published=False)
    assert wait_for_index(lambda ids: ids == set())
