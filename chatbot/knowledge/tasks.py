"""Celery tasks of the knowledge base (thin: each calls the index store)."""

from celery import shared_task
from celery.signals import worker_ready

from chatbot.knowledge import store


# Named as when they lived in chatbot/tasks.py: the periodic schedule stored in the database
# (chatbot/schedule.py) and queued messages refer to them by these names.
@shared_task(
    name="chatbot.tasks.knowledge_article_index",
    acks_late=True,
    time_limit=600,
    soft_time_limit=540,
)
def knowledge_article_index(article_id: int) -> dict:
    """Re-embed a changed article and sync the faiss index (idempotent)."""
    return vars(store.article_index(article_id=article_id))


@shared_task(
    name="chatbot.tasks.knowledge_index_sync",
    acks_late=True,
    time_limit=600,
    soft_time_limit=540,
)
def knowledge_index_sync(rebuild: bool = False) -> dict:
    """Bring the index file in line with the database; also run periodically and at
    worker start, so a missing, corrupt or stale index is repaired without anyone asking."""
    return vars(store.index_sync(rebuild=rebuild))


@worker_ready.connect
def _knowledge_index_check_at_start(sender, **kwargs) -> None:
    sender.app.send_task("chatbot.tasks.knowledge_index_sync")
