"""Live handling by agents: take over (the bot stops), hand back, close, write to the
customer, assign.

Every function that changes a conversation's status locks the conversation row first
(select_for_update), so concurrent agents are serialised: of two takeovers of the same
conversation exactly one wins and the other gets a ConsoleActionError("already_taken").
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from chatbot.handoff import handoff_record, status_publish
from chatbot.models import Conversation, Message
from chatbot.services import ChatInputError, message_publish_on_commit, message_text_clean
from feedback.agents import agent_display_name, is_agent
from feedback.models import AuditEvent, ConversationReview
from feedback.services.audit import (
    ConsoleActionError,
    agent_require,
    audit_log,
    conversation_locked,
    review_publish,
)

Status = Conversation.Status
Action = AuditEvent.Action
Reason = Conversation.HandoffReason


def status_publish_with_agent(conversation: Conversation, review: ConversationReview) -> None:
    agent = agent_display_name(review.handled_by) if review.handled_by_id else None
    status_publish(conversation, agent_name=agent)


@transaction.atomic
def conversation_take_over(*, conversation_id, agent) -> Conversation:
    """The agent starts answering; the bot stops. Exactly one of concurrent callers wins."""
    agent_require(agent)
    conversation, review = conversation_locked(conversation_id)
    if conversation.status == Status.AGENT:
        if review.handled_by_id == agent.pk:
            return conversation
        holder = agent_display_name(review.handled_by)
        raise ConsoleActionError("already_taken", f"{holder} is already answering this one.")
    if conversation.status == Status.CLOSED:
        raise ConsoleActionError("closed", "This conversation is closed.")
    previous = conversation.status
    conversation.status = Status.AGENT
    handoff_record(conversation, reason=Reason.AGENT)
    conversation.save(
        update_fields=["status", "handoff_reason", "handoff_detail", "handoff_at", "updated_at"]
    )
    review.handled_by = agent
    if review.assigned_to_id is None:
        review.assigned_to = agent
    review.save()
    audit_log(
        actor=agent, action=Action.TAKE_OVER, conversation_id=conversation.id, previous=previous
    )
    status_publish_with_agent(conversation, review)
    return conversation


def _status_set(*, conversation_id, agent, status: str, action: str) -> Conversation:
    agent_require(agent)
    conversation, review = conversation_locked(conversation_id)
    if conversation.status == status:
        return conversation
    previous = conversation.status
    conversation.status = status
    conversation.save(update_fields=["status", "updated_at"])
    review.handled_by = None
    review.save(update_fields=["handled_by"])
    audit_log(actor=agent, action=action, conversation_id=conversation.id, previous=previous)
    status_publish_with_agent(conversation, review)
    return conversation


@transaction.atomic
def conversation_hand_back(*, conversation_id, agent) -> Conversation:
    """The bot answers the customer's next messages again."""
    return _status_set(
        conversation_id=conversation_id, agent=agent, status=Status.BOT, action=Action.HAND_BACK
    )


@transaction.atomic
def conversation_close(*, conversation_id, agent) -> Conversation:
    return _status_set(
        conversation_id=conversation_id, agent=agent, status=Status.CLOSED, action=Action.CLOSE
    )


@transaction.atomic
def agent_message_send(*, conversation_id, agent, text: str) -> Message:
    """Store the agent's message and deliver it live; only the agent holding it may write."""
    agent_require(agent)
    try:
        text = message_text_clean(text)
    except ChatInputError as exc:
        raise ConsoleActionError(exc.code, exc.detail) from exc
    conversation, review = conversation_locked(conversation_id)
    if conversation.status != Status.AGENT or review.handled_by_id != agent.pk:
        raise ConsoleActionError("take_over_first", "Take the conversation over first.")
    conversation.save(update_fields=["updated_at"])
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.AGENT, text=text, created_at=timezone.now()
    )
    audit_log(
        actor=agent,
        action=Action.AGENT_MESSAGE,
        conversation_id=conversation.id,
        message_id=message.id,
    )
    message_publish_on_commit(message)
    return message


@transaction.atomic
def conversation_assign(*, conversation_id, agent, assignee_id: int | None) -> ConversationReview:
    agent_require(agent)
    assignee = None
    if assignee_id is not None:
        assignee = get_user_model().objects.filter(pk=assignee_id).first()
        if not is_agent(assignee):
            raise ConsoleActionError("not_an_agent", "Conversations go to support agents only.")
    conversation, review = conversation_locked(conversation_id)
    review.assigned_to = assignee
    review.save(update_fields=["assigned_to"])
    name = agent_display_name(assignee) if assignee else None
    audit_log(actor=agent, action=Action.ASSIGN, conversation_id=conversation.id, assigned_to=name)
    review_publish(conversation_id=conversation.id, kind="assign", actor=agent, assigned_to=name)
    return review
