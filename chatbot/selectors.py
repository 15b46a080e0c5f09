"""Reading conversations, always scoped to who is asking."""

from uuid import UUID

from chatbot.models import Conversation, Message


def conversation_for_session(
    *, session_key: str, conversation_id: UUID | str | None = None
) -> Conversation | None:
    """The customer's conversation: the one named (if theirs) or their latest open one.

    A conversation id that is unknown or belongs to another session gives None, so a
    guessed id reveals nothing.
    """
    if not session_key:
        return None
    mine = Conversation.objects.filter(session_key=session_key)
    if conversation_id is not None:
        try:
            return mine.filter(pk=UUID(str(conversation_id))).first()
        except ValueError:
            return None
    return mine.exclude(status=Conversation.Status.CLOSED).order_by("-updated_at").first()


def conversation_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.all())


def conversation_history(*, conversation_id) -> list[tuple[str, str]]:
    """(role, text) pairs in order: what the model sees of the conversation."""
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("created_at", "id")
        .values_list("role", "text")
    )


def message_frame_data(message: Message) -> dict:
    """The JSON shape of a stored message in frames and history."""
    return {
        "message_id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "role": message.role,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "model_version": message.model_version.number if message.model_version else None,
        "sources": message.sources,
        "token_count": message.token_count,
        "reply_kind": message.reply_kind,
        "reply_failed": message.reply_failed_at is not None,
    }
