import pytest

from tests.helpers import DEMO_KB, kb_load_demo


@pytest.fixture
def celery_eager():
    """Run Celery tasks in-process when enqueued (for on-commit indexing)."""
    from chatbot.celery import app

    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = False


@pytest.fixture
def demo_kb(db):
    """The demo knowledge base, embedded and indexed."""
    kb_load_demo()
    return DEMO_KB
