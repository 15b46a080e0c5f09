"""Agents reviewing bot replies and conversations: corrections, ratings, flags, notes,
approved answers, regression cases."""

from django.db import transaction
from django.utils import timezone

from chatbot.approved import services as approved
from chatbot.approved.models import ApprovedAnswer
from chatbot.models import Message
from feedback.models import (
    AgentNote,
    AuditEvent,
    ConversationReview,
    Correction,
    Flag,
    MessageRating,
    RegressionCase,
)
from feedback.services.audit import (
    ConsoleActionError,
    agent_require,
    audit_log,
    bot_reply_get,
    conversation_locked,
    review_publish,
    review_record,
    text_required,
)
from training.runs import paraphrases_prepare_request

Action = AuditEvent.Action


@transaction.atomic
def correction_submit(*, message_id, agent, text: str) -> Correction:
    """Keep the bot's reply and store what it should have said beside it (newest wins)."""
    agent_require(agent)
    text = text_required(
        text, code="empty_correction", detail="Write what the bot should have said."
    )
    message = bot_reply_get(message_id)
    correction = Correction.objects.create(message=message, text=text, agent=agent)
    # At once into the approved-answer memory: the next customer asking this gets it.
    remembered = approved.answer_record(
        message=message, answer=text, author=agent, origin=ApprovedAnswer.Origin.CORRECTION
    )
    review_record(
        message=message,
        agent=agent,
        action=Action.CORRECT,
        kind="correction",
        correction_id=correction.id,
        approved_answer_id=remembered.pk if remembered else None,
    )
    # ... and, for good after the next retrain, its question's paraphrases written ahead.
    paraphrases_prepare_request(message.conversation_id)
    return correction


@transaction.atomic
def message_rate(*, message_id, agent, value: str) -> MessageRating:
    agent_require(agent)
    if value not in MessageRating.Value.values:
        raise ConsoleActionError("bad_value", "Rate a reply good or bad.")
    message = bot_reply_get(message_id)
    rating, _ = MessageRating.objects.update_or_create(
        message=message,
        source=MessageRating.Source.AGENT,
        agent=agent,
        defaults={"value": value},
    )
    remembered = _approval_remember(message=message, agent=agent, value=value)
    review_record(
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
    agent_require(agent)
    try:
        record = approved.answer_revoke(answer_id=int(answer_id), by=agent)
    except (ApprovedAnswer.DoesNotExist, ValueError, TypeError) as exc:
        raise ConsoleActionError("not_found", "No such approved answer.") from exc
    message = record.message
    review_record(
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
    agent_require(agent)
    try:
        record = ApprovedAnswer.objects.get(pk=int(answer_id))
    except (ApprovedAnswer.DoesNotExist, ValueError, TypeError) as exc:
        raise ConsoleActionError("not_found", "No such approved answer.") from exc
    return correction_submit(message_id=record.message_id, agent=agent, text=text)


@transaction.atomic
def message_flag(*, message_id, agent, reason: str, note: str = "") -> Flag:
    agent_require(agent)
    if reason not in Flag.Reason.values:
        raise ConsoleActionError("bad_reason", "Pick a reason for the flag.")
    message = bot_reply_get(message_id)
    flag = Flag.objects.create(message=message, reason=reason, note=note.strip()[:500], agent=agent)
    review_record(
        message=message,
        agent=agent,
        action=Action.FLAG,
        kind="flag",
        reason=reason,
    )
    return flag


@transaction.atomic
def note_add(*, conversation_id, agent, text: str) -> AgentNote:
    agent_require(agent)
    text = text_required(text, code="empty_note", detail="The note is empty.")
    conversation, _review = conversation_locked(conversation_id)
    note = AgentNote.objects.create(conversation=conversation, agent=agent, text=text)
    audit_log(actor=agent, action=Action.NOTE, conversation_id=conversation.id, note_id=note.id)
    review_publish(conversation_id=conversation.id, kind="note", actor=agent)
    return note


@transaction.atomic
def conversation_mark_reviewed(*, conversation_id, agent) -> ConversationReview:
    agent_require(agent)
    conversation, review = conversation_locked(conversation_id)
    review.reviewed_by = agent
    review.reviewed_at = timezone.now()
    review.save(update_fields=["reviewed_by", "reviewed_at"])
    audit_log(actor=agent, action=Action.REVIEW, conversation_id=conversation.id)
    review_publish(conversation_id=conversation.id, kind="reviewed", actor=agent)
    return review


@transaction.atomic
def regression_case_add(*, message_id, agent) -> RegressionCase:
    """Turn a corrected bot reply into an evaluation case (again: refresh it to the newest
    correction). The prompt is the conversation as the bot saw it."""
    from feedback.exports import prompt_before

    agent_require(agent)
    message = bot_reply_get(message_id)
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
