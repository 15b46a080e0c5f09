from celery import shared_task
from django.conf import settings

from feedback.services import conversations_purge


@shared_task(name="feedback.conversations_purge")
def conversations_purge_task() -> int:
    """Apply the retention setting (idempotent: a rerun finds nothing more to delete)."""
    return conversations_purge(older_than_days=settings.FEEDBACK_RETENTION_DAYS)
