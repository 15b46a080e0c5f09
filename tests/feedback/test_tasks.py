"""The retention purge as a real Celery task: a worker process on the Redis broker runs it."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from chatbot.models import Conversation
from feedback.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_purge_task_runs_on_a_real_worker(settings, make_conversation, celery_worker_proc):
    from feedback.tasks import conversations_purge_task

    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs REDIS_URL (the Redis broker)")
    old, _ = make_conversation([("customer", "old")])
    kept, _ = make_conversation([("customer", "new")], session_key="other")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=40))

    celery_worker_proc(FEEDBACK_RETENTION_DAYS=30)
    conversations_purge_task.delay()
    for _ in range(1200):  # a bound for a loaded host (it timed out once beside a benchmark)
        if not Conversation.objects.filter(pk=old.pk).exists():
            break
        time.sleep(0.1)
    assert list(Conversation.objects.all()) == [kept]
    assert AuditEvent.objects.get(action="purge").detail == {"conversations": 1, "days": 30}
