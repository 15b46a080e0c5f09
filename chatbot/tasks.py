"""Celery tasks of the chat app (thin: each calls one service)."""

from celery import shared_task

# The knowledge base's tasks live beside it; importing them here registers them with Celery
# (autodiscovery looks in each app's tasks module only).
from chatbot.knowledge.tasks import knowledge_article_index, knowledge_index_sync  # noqa: F401


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
