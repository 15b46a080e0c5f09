"""A real Celery worker on Redis keeps the index in step with saved articles."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatbot.knowledge import services
from chatbot.knowledge.index import IndexUnreadable, index_load

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def wait_for_index(predicate, timeout=90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate(set(index_load(services.index_path()).ids.tolist())):
                return True
        except IndexUnreadable:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture
def celery_worker(settings, knowledge_index_path, tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "KNOWLEDGE_INDEX_PATH": str(knowledge_index_path),
        "DATA_DIR": str(tmp_path / "data"),
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "chatbot",
            "worker",
            "--pool=solo",
            "--purge",
            "--queues=celery",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_worker_indexes_saved_and_unpublished_articles(celery_worker, tmp_path):
    # At start the worker builds the (missing) index for the empty knowledge base.
    assert wait_for_index(lambda ids: ids == set()), (tmp_path / "worker.log").read_text()
    article, _ = services.article_upsert(
        slug="gift-wrapping",
        title="Gift wrapping",
        body="Every order can be gift wrapped for 3.50 at checkout.",
    )
    assert wait_for_index(
        lambda ids: ids and ids == set(article.passages.values_list("pk", flat=True))
    ), (tmp_path / "worker.log").read_text()[-3000:]
    services.article_publish_set(article=article, published=False)
    assert wait_for_index(lambda ids: ids == set())
