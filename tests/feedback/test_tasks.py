"""The retention purge as a real Celery task: a worker on the Redis broker runs it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chatbot.models import Conversation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_purge_task_runs_on_a_real_worker(settings, make_conversation):
    from celery.contrib.testing.worker import start_worker

    from chatbot.celery import app
    from feedback.tasks import conversations_purge_task

    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs REDIS_URL (the Redis broker)")
    old, _ = make_conversation([("customer", "old")])
    kept, _ = make_conversation([("customer", "new")], session_key="other")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=40))
    settings.FEEDBACK_RETENTION_DAYS = 30

    app.conf.broker_url = settings.CELERY_BROKER_URL
    app.conf.result_backend = "cache+memory://"
    queue = f"feedback-test-{kept.pk.hex[:8]}"
    app.conf.task_default_queue = queue
    try:
        with start_worker(app, queues=[queue], perform_ping_check=False, pool="solo"):
            result = conversations_purge_task.apply_async(queue=queue)
            assert result.get(timeout=30) == 1
    finally:
        app.conf.result_backend = None
        app.conf.task_default_queue = "celery"
    assert list(Conversation.objects.all()) == [kept]
