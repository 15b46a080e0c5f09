"""The customer's own feedback from the chat socket: a 1-5 rating of the conversation and
thumbs on a bot reply."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chatbot.models import Message
from feedback.models import ConversationReview, MessageRating
from feedback.services.audit import ConsoleActionError, conversation_locked, review_publish


@transaction.atomic
def customer_conversation_rate(*, conversation_id, score) -> ConversationReview:
    """The customer's 1-5 rating of their conversation; rating again replaces it."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ConsoleActionError("invalid_score", "Rate the conversation from 1 to 5.")
    conversation, review = conversation_locked(conversation_id)
    review.customer_rating = score
    review.customer_rated_at = timezone.now()
    review.save(update_fields=["customer_rating", "customer_rated_at"])
    review_publish(conversation_id=conversation.id, kind="customer_rating", actor=None, score=score)
    return review


CUSTOMER_THUMBS = {"up": MessageRating.Value.GOOD, "down": MessageRating.Value.BAD}


@transaction.atomic
def customer_message_rate(*, conversation_id, message_id, value: str) -> MessageRating:
    """Thumbs up/down on one bot reply of the customer's own conversation."""
    if value not in CUSTOMER_THUMBS:
        raise ConsoleActionError("invalid_value", 'Send "up" or "down".')
    try:
        message = Message.objects.get(
            pk=message_id, conversation_id=conversation_id, role=Message.Role.BOT
        )
    except (Message.DoesNotExist, ValueError, TypeError, ValidationError) as exc:
        raise ConsoleActionError("message_not_found", "No such reply in this chat.") from exc
    rating, _ = MessageRating.objects.update_or_create(
        message=message,
        source=MessageRating.Source.CUSTOMER,
        defaults={"value": CUSTOMER_THUMBS[value]},
    )
    review_publish(
        conversation_id=conversation_id,
        kind="customer_thumbs",
        actor=None,
        message_id=str(message.id),
        value=value,
    )
    return rating
