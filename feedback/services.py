"""Writes for the agent console and customer feedback; each audits and publishes its event.

Every function that changes a conversation's status locks the conversation row first
(select_for_update), so concurrent agents are serialised: of two takeovers of the same
conversation exactly one wins and the other gets a ConsoleActionError("already_taken").
"""

import logging
from datetime import timedelta
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chatbot.approved import services as approved
from chatbot.approved.models import ApprovedAnswer
from chatbot.handoff import handoff_record, status_publish
from chatbot.live import AGENTS_GROUP, frame_publish_on_commit
from chatbot.models import Conversation, Message
from chatbot.pii import pii_mask
from chatbot.services import ChatInputError, message_publish_on_commit, message_text_clean
from feedback.agents import agent_display_name, is_agent
from feedback.models import (
    AgentNote,
    AuditEvent,
    ConversationReview,
    Correction,
    Flag,
    MessageRating,
    RegressionCase,
)
from training.data.snapshot import snapshots_forget

log = logging.getLogger(__name__)

Status = Conversation.Status
Action = AuditEvent.Action
Reason = Conversation.HandoffReason


class ConsoleActionError(Exception):
    """An action that cannot be done; `code` is machine-readable, `detail` is for people."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- helpers ---------------------------------------------------------------------------------


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


def _locked(conversation_id) -> tuple[Conversation, ConversationReview]:
    """The conversation row locked for this transaction, with its review row."""
    try:
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValueError, ValidationError) as exc:
        raise ConsoleActionError("not_found", "No such conversation.") from exc
    review, _ = ConversationReview.objects.get_or_create(conversation=conversation)
    return conversation, review


def _bot_message(message_id) -> Message:
    try:
        return Message.objects.get(pk=message_id, role=Message.Role.BOT)
    except (Message.DoesNotExist, ValueError, ValidationError) as exc:
        raise ConsoleActionError("not_found", "No such bot reply.") from exc


def _require_agent(user) -> None:
    if not is_agent(user):
        raise ConsoleActionError("forbidden", "Only support agents can do that.")


def _status_publish(conversation: Conversation, review: ConversationReview) -> None:
    agent = agent_display_name(review.handled_by) if review.handled_by_id else None
    status_publish(conversation, agent_name=agent)


def _review_publish(*, conversation_id, kind: str, actor, **extra) -> None:
    """Tell the consoles that a conversation's review data changed (agents only)."""
    frame = {
        "type": "review",
        "conversation_id": str(conversation_id),
        "kind": kind,
        "agent_name": agent_display_name(actor) if actor else None,
        **extra,
    }
    frame_publish_on_commit(AGENTS_GROUP, frame)


# --- live handling by agents ---------------------------------------------------------------


@transaction.atomic
def conversation_take_over(*, conversation_id, agent) -> Conversation:
    """The agent starts answering; the bot stops. Exactly one of concurrent callers wins."""
    _require_agent(agent)
    conversation, review = _locked(conversation_id)
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
    _status_publish(conversation, review)
    return conversation


def _status_set(*, conversation_id, agent, status: str, action: str) -> Conversation:
    _require_agent(agent)
    conversation, review = _locked(conversation_id)
    if conversation.status == status:
        return conversation
    previous = conversation.status
    conversation.status = status
    conversation.save(update_fields=["status", "updated_at"])
    review.handled_by = None
    review.save(update_fields=["handled_by"])
    audit_log(actor=agent, action=action, conversation_id=conversation.id, previous=previous)
    _status_publish(conversation, review)
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
    _require_agent(agent)
    try:
        text = message_text_clean(text)
    except ChatInputError as exc:
        raise ConsoleActionError(exc.code, exc.detail) from exc
    conversation, review = _locked(conversation_id)
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
    _require_agent(agent)
    assignee = None
    if assignee_id is not None:
        assignee = get_user_model().objects.filter(pk=assignee_id).first()
        if not is_agent(assignee):
            raise ConsoleActionError("not_an_agent", "Conversations go to support agents only.")
    conversation, review = _locked(conversation_id)
    review.assigned_to = assignee
    review.save(update_fields=["assigned_to"])
    name = agent_display_name(assignee) if assignee else None
    audit_log(actor=agent, action=Action.ASSIGN, conversation_id=conversation.id, assigned_to=name)
    _review_publish(conversation_id=conversation.id, kind="assign", actor=agent, assigned_to=name)
    return review


# --- review: corrections, ratings, flags, notes ----------------------------------------------


def _message_review_record(*, message: Message, agent, action: str, kind: str, **detail) -> None:
    """The ending of every review of one bot reply: audited, then the consoles told."""
    audit_log(
        actor=agent,
        action=action,
        conversation_id=message.conversation_id,
        message_id=message.id,
        **detail,
    )
    _review_publish(
        conversation_id=message.conversation_id,
        kind=kind,
        actor=agent,
        message_id=str(message.id),
    )


@transaction.atomic
def correction_submit(*, message_id, agent, text: str) -> Correction:
    """Keep the bot's reply and store what it should have said beside it (newest wins)."""
    _require_agent(agent)
    text = (text or "").strip()
    if not text:
        raise ConsoleActionError("empty_correction", "Write what the bot should have said.")
    message = _bot_message(message_id)
    correction = Correction.objects.create(message=message, text=text, agent=agent)
    # At once into the approved-answer memory: the next customer asking this gets it.
    remembered = approved.answer_record(
        message=message, answer=text, author=agent, origin=ApprovedAnswer.Origin.CORRECTION
    )
    _message_review_record(
        message=message,
        agent=agent,
        action=Action.CORRECT,
        kind="correction",
        correction_id=correction.id,
        approved_answer_id=remembered.pk if remembered else None,
    )
    return correction


@transaction.atomic
def message_rate(*, message_id, agent, value: str) -> MessageRating:
    _require_agent(agent)
    if value not in MessageRating.Value.values:
        raise ConsoleActionError("bad_value", "Rate a reply good or bad.")
    message = _bot_message(message_id)
    rating, _ = MessageRating.objects.update_or_create(
        message=message,
        source=MessageRating.Source.AGENT,
        agent=agent,
        defaults={"value": value},
    )
    remembered = _approval_remember(message=message, agent=agent, value=value)
    _message_review_record(
        message=message,
        agent=agent,
        action=Action.RATE,
        kind="rating",
        value=value,
        approved_answer_id=remembered,
    )
    return rating


def _approval_remember(*, message: Message, agent, value: str) -> int | None:
    """A reply rated good (and never corrected) becomes an approved answer; rated bad, an
    approval of it leaves the memory. Corrections stay whatever the original's rating."""
    if message.corrections.exists():
        return None
    if value == MessageRating.Value.GOOD:
        record = approved.answer_record(
            message=message,
            answer=message.text,
            author=agent,
            origin=ApprovedAnswer.Origin.APPROVED_REPLY,
        )
        return record.pk if record else None
    approved.answer_revoke_for_message(
        message=message, origin=ApprovedAnswer.Origin.APPROVED_REPLY, by=agent
    )
    return None


@transaction.atomic
def approved_answer_revoke(*, answer_id, agent) -> ApprovedAnswer:
    """Take an approved answer out of the memory (the console's "Revoke")."""
    _require_agent(agent)
    try:
        record = approved.answer_revoke(answer_id=int(answer_id), by=agent)
    except (ApprovedAnswer.DoesNotExist, ValueError, TypeError) as exc:
        raise ConsoleActionError("not_found", "No such approved answer.") from exc
    message = record.message
    _message_review_record(
        message=message,
        agent=agent,
        action=Action.ANSWER_REVOKE,
        kind="answer_revoked",
        approved_answer_id=record.pk,
    )
    return record


@transaction.atomic
def approved_answer_edit(*, answer_id, agent, text: str) -> Correction:
    """Change an approved answer's text: a new correction of the reply it answers (so the
    edit also trains, and the history of texts is kept)."""
    _require_agent(agent)
    try:
        record = ApprovedAnswer.objects.get(pk=int(answer_id))
    except (ApprovedAnswer.DoesNotExist, ValueError, TypeError) as exc:
        raise ConsoleActionError("not_found", "No such approved answer.") from exc
    return correction_submit(message_id=record.message_id, agent=agent, text=text)


@transaction.atomic
def message_flag(*, message_id, agent, reason: str, note: str = "") -> Flag:
    _require_agent(agent)
    if reason not in Flag.Reason.values:
        raise ConsoleActionError("bad_reason", "Pick a reason for the flag.")
    message = _bot_message(message_id)
    flag = Flag.objects.create(message=message, reason=reason, note=note.strip()[:500], agent=agent)
    _message_review_record(
        message=message,
        agent=agent,
        action=Action.FLAG,
        kind="flag",
        reason=reason,
    )
    return flag


@transaction.atomic
def note_add(*, conversation_id, agent, text: str) -> AgentNote:
    _require_agent(agent)
    text = (text or "").strip()
    if not text:
        raise ConsoleActionError("empty_note", "The note is empty.")
    conversation, _review = _locked(conversation_id)
    note = AgentNote.objects.create(conversation=conversation, agent=agent, text=text)
    audit_log(actor=agent, action=Action.NOTE, conversation_id=conversation.id, note_id=note.id)
    _review_publish(conversation_id=conversation.id, kind="note", actor=agent)
    return note


@transaction.atomic
def conversation_mark_reviewed(*, conversation_id, agent) -> ConversationReview:
    _require_agent(agent)
    conversation, review = _locked(conversation_id)
    review.reviewed_by = agent
    review.reviewed_at = timezone.now()
    review.save(update_fields=["reviewed_by", "reviewed_at"])
    audit_log(actor=agent, action=Action.REVIEW, conversation_id=conversation.id)
    _review_publish(conversation_id=conversation.id, kind="reviewed", actor=agent)
    return review


@transaction.atomic
def regression_case_add(*, message_id, agent) -> RegressionCase:
    """Turn a corrected bot reply into an evaluation case (again: refresh it to the newest
    correction). The prompt is the conversation as the bot saw it."""
    from feedback.exports import prompt_before

    _require_agent(agent)
    message = _bot_message(message_id)
    correction = message.corrections.first()
    if correction is None:
        raise ConsoleActionError("not_corrected", "Correct the reply before adding it.")
    case, created = RegressionCase.objects.update_or_create(
        message=message,
        defaults={
            "prompt": prompt_before(message),
            "expected": correction.text,
            "conversation_id": message.conversation_id,
            "created_by": agent,
            "is_active": True,
        },
    )
    audit_log(
        actor=agent,
        action=Action.REGRESSION_ADD,
        conversation_id=message.conversation_id,
        message_id=message.id,
        case_id=case.id,
        created=created,
    )
    return case


# --- the customer's own feedback -------------------------------------------------------------


@transaction.atomic
def customer_conversation_rate(*, conversation_id, score) -> ConversationReview:
    """The customer's 1-5 rating of their conversation; rating again replaces it."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ConsoleActionError("invalid_score", "Rate the conversation from 1 to 5.")
    conversation, review = _locked(conversation_id)
    review.customer_rating = score
    review.customer_rated_at = timezone.now()
    review.save(update_fields=["customer_rating", "customer_rated_at"])
    _review_publish(
        conversation_id=conversation.id, kind="customer_rating", actor=None, score=score
    )
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
    _review_publish(
        conversation_id=conversation_id,
        kind="customer_thumbs",
        actor=None,
        message_id=str(message.id),
        value=value,
    )
    return rating


# --- data protection -----------------------------------------------------------------------


@transaction.atomic
def customer_data_delete(*, session_key: str, actor=None) -> dict:
    """Delete everything stored about one customer (their browser session): conversations,
    messages, corrections, ratings, flags, notes, regression cases made from them, and the
    session itself. Audit entries about those conversations keep who/what/when only."""
    if not session_key:
        raise ConsoleActionError("no_customer", "Name the customer's session.")
    ids = list(Conversation.objects.filter(session_key=session_key).values_list("id", flat=True))
    corrections = set(
        Correction.objects.filter(message__conversation_id__in=ids).values_list("id", flat=True)
    )
    # Files first: if rewriting one fails, nothing in the database is deleted either.
    snapshot_rows = snapshots_forget(
        conversation_ids={str(i) for i in ids}, correction_ids=corrections
    )
    cases = RegressionCase.objects.filter(conversation_id__in=ids).delete()[0]
    AuditEvent.objects.filter(conversation_id__in=ids).update(detail={})
    messages = Message.objects.filter(conversation_id__in=ids).count()
    Conversation.objects.filter(pk__in=ids).delete()
    Session.objects.filter(session_key=session_key).delete()
    counts = {
        "conversations": len(ids),
        "messages": messages,
        "regression_cases": cases,
        "snapshot_rows": snapshot_rows,
    }
    audit_log(
        actor=actor,
        action=Action.CUSTOMER_DATA_DELETE,
        conversations=len(ids),
        messages=messages,
        regression_cases=cases,
        snapshot_rows=snapshot_rows,
    )
    log.info("Deleted customer data: %s", counts)
    return counts


@transaction.atomic
def conversations_purge(*, older_than_days: int, actor=None) -> int:
    """Delete conversations untouched for `older_than_days` (not ones a human is handling).

    Regression cases made from them survive (the gate needs them) with personal data in
    their prompt and expected reply masked.
    """
    if older_than_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = Conversation.objects.filter(updated_at__lt=cutoff).exclude(
        status__in=[Status.WAITING, Status.AGENT]
    )
    ids = list(old.values_list("id", flat=True))
    if not ids:
        return 0
    AuditEvent.objects.filter(conversation_id__in=ids).update(detail={})
    for case in RegressionCase.objects.filter(conversation_id__in=ids):
        case.prompt = [{**turn, "content": pii_mask(turn["content"])} for turn in case.prompt]
        case.expected = pii_mask(case.expected)
        case.save(update_fields=["prompt", "expected", "updated_at"])
    Conversation.objects.filter(pk__in=ids).delete()
    audit_log(actor=actor, action=Action.PURGE, conversations=len(ids), days=older_than_days)
    return len(ids)
