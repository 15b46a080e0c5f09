"""What every console action shares: its error, the rows it works on (checked and locked),
and its ending (audited, then the consoles told)."""

from uuid import UUID

from django.core.exceptions import ValidationError

from chatbot.live import AGENTS_GROUP, frame_publish_on_commit
from chatbot.models import Conversation, Message
from feedback.agents import agent_display_name, is_agent
from feedback.models import AuditEvent, ConversationReview


class ConsoleActionError(Exception):
    """An action that cannot be done; `code` is machine-readable, `detail` is for people."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def audit_log(
    *,
    actor,
    action: str,
    conversation_id: UUID | None = None,
    message_id: UUID | None = None,
    **detail,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor else "",
        action=action,
        conversation_id=conversation_id,
        message_id=message_id,
        detail=detail,
    )


def conversation_locked(conversation_id) -> tuple[Conversation, ConversationReview]:
    """The conversation row locked for this transaction, with its review row."""
    try:
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError, ValidationError) as exc:
        raise ConsoleActionError("not_found", "No such conversation.") from exc
    review, _ = ConversationReview.objects.get_or_create(conversation=conversation)
    return conversation, review


def bot_reply_get(message_id) -> Message:
    try:
        return Message.objects.get(pk=message_id, role=Message.Role.BOT)
    except (Message.DoesNotExist, ValueError, ValidationError) as exc:
        raise ConsoleActionError("not_found", "No such bot reply.") from exc


def text_required(text, *, code: str, detail: str) -> str:
    """The text stripped; ConsoleActionError(code, detail) when nothing is left."""
    text = (text or "").strip()
    if not text:
        raise ConsoleActionError(code, detail)
    return text


def agent_require(user) -> None:
    if not is_agent(user):
        raise ConsoleActionError("forbidden", "Only support agents can do that.")


def review_publish(*, conversation_id, kind: str, actor, **extra) -> None:
    """Tell the consoles that a conversation's review data changed (agents only)."""
    frame = {
        "type": "review",
        "conversation_id": str(conversation_id),
        "kind": kind,
        "agent_name": agent_display_name(actor) if actor else None,
        **extra,
    }
    frame_publish_on_commit(AGENTS_GROUP, frame)


def review_record(*, message: Message, agent, action: str, kind: str, **detail) -> None:
    """The ending of every review of one bot reply: audited, then the consoles told."""
    audit_log(
        actor=agent,
        action=action,
        conversation_id=message.conversation_id,
        message_id=message.id,
        **detail,
    )
    review_publish(
        conversation_id=message.conversation_id,
        kind=kind,
        actor=agent,
        message_id=str(message.id),
    )
