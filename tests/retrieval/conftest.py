from pathlib import Path

import pytest

DEMO_KB = Path(__file__).resolve().parents[2] / "chatbot" / "demo" / "knowledge"


@pytest.fixture
def celery_eager():
    """Run Celery tasks in-process when enqueued (for on-commit indexing)."""
    from chatbot.celery import app

    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = False


def kb_load_demo() -> None:
    from chatbot.knowledge import services, store

    for article, _ in services.kb_import_dir(folder=DEMO_KB):
        store.article_passages_refresh(article_id=article.pk)
    store.index_sync()


@pytest.fixture
def demo_kb(db):
    """The demo knowledge base, embedded and indexed."""
    kb_load_demo()
    return DEMO_KB
