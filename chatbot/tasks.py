"""Celery tasks of the chat app (thin: each calls one service)."""

from celery import shared_task
from celery.signals import worker_ready


@shared_task(acks_late=True, time_limit=600, soft_time_limit=540)
def knowledge_article_index(article_id: int) -> dict:
    """Re-embed a changed article and sync the faiss index (idempotent)."""
    from chatbot.knowledge.services import article_index

    return vars(article_index(article_id=article_id))


@shared_task(acks_late=True, time_limit=600, soft_time_limit=540)
def knowledge_index_sync(rebuild: bool = False) -> dict:
    """Bring the index file in line with the database; also run periodically and at
    worker start, so a missing, corrupt or stale index is repaired without anyone asking."""
    from chatbot.knowledge.services import index_sync

    return vars(index_sync(rebuild=rebuild))


@worker_ready.connect
def _knowledge_index_check_at_start(sender, **kwargs) -> None:
    sender.app.send_task("chatbot.tasks.knowledge_index_sync")


@shared_task(name="chatbot.tasks.pending_replies_settle")
def pending_replies_settle() -> int:
    """Mark failed the customer messages unanswered for CHAT_REPLY_PENDING_MAX_SECONDS (their
    web process died or lost them); a live reply never takes that long."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from chatbot.services import pending_replies_settle as settle

    return settle(
        before=timezone.now() - timedelta(seconds=settings.CHAT_REPLY_PENDING_MAX_SECONDS)
    )


@shared_task(name="chatbot.tasks.sessions_clear")
def sessions_clear() -> None:
    """Delete expired browser sessions (Django keeps them until asked: `clearsessions`)."""
    from importlib import import_module

    from django.conf import settings

    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
