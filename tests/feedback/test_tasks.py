"""The retention purge as a real Celery task: a worker on the Redis broker runs it."""

import time
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
    queue = f"feedback-test-{kept.pk.hex[:8]}"
    # The app has no result backend (tasks report through the database), so watch the
    # effect itself rather than the task's return value.
    with start_worker(app, queues=[queue], perform_ping_check=False, pool="solo"):
        conversations_purge_task.apply_async(queue=queue)
        for _ in range(300):
            if not Conversation.objects.filter(pk=old.pk).exists():
                break
            time.sleep(0.1)
    assert list(Conversation.objects.all()) == [kept]
