"""Helpers the tests share (plain functions; the fixtures are in the conftest.py files)."""

from django.utils import timezone

from chatbot.models import Conversation, Message


def conversation_make(
    turns: list[tuple[str, str]],
    *,
    session_key: str = "customer-1",
    status: str = Conversation.Status.BOT,
) -> tuple[Conversation, list[Message]]:
    """A conversation from (role, text) turns a second apart: (conversation, [messages])."""
    conversation = Conversation.objects.create(session_key=session_key, status=status)
    start = timezone.now()
    messages = [
        Message.objects.create(
            conversation=conversation,
            role=role,
            text=text,
            created_at=start + timezone.timedelta(seconds=i),
        )
        for i, (role, text) in enumerate(turns)
    ]
    return conversation, messages
