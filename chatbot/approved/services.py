"""Writes to the approved-answer memory. The feedback app calls these inside its own
transactions (correction saved, reply rated good or bad, answer revoked in the console)."""

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from chatbot.approved.models import ApprovedAnswer
from chatbot.models import Message
from chatbot.pii import pii_mask


def question_for(message: Message) -> str:
    """The customer's words that `message` answered: their messages since the previous
    bot or agent turn, joined (empty when the reply answered no customer message)."""
    before = Q(created_at__lt=message.created_at) | Q(
        created_at=message.created_at, id__lt=message.id
    )
    earlier = (
        Message.objects.filter(before, conversation_id=message.conversation_id)
        .order_by("-created_at", "-id")
        .values_list("role", "text")
    )
    parts: list[str] = []
    for role, text in earlier:
        if role != Message.Role.CUSTOMER:
            if parts:
                break
            continue
        parts.append(text)
    return "\n".join(reversed(parts))


@transaction.atomic
def answer_record(*, message: Message, answer: str, author, origin: str) -> ApprovedAnswer | None:
    """Remember `answer` for the question `message` answered (replacing an earlier answer to
    that reply, reviving a revoked one). None when there is no customer question to key it."""
    from chatbot.knowledge.embedding import texts_embed

    question = pii_mask(question_for(message)).strip()
    answer = pii_mask(answer).strip()
    if not question or not answer:
        return None
    vector = texts_embed([question])[0]
    record, _ = ApprovedAnswer.objects.update_or_create(
        message=message,
        defaults={
            "question": question,
            "answer": answer,
            "embedding": vector.astype("<f4").tobytes(),
            "origin": origin,
            "author": author,
            "author_name": _display_name(author),
            "active": True,
            "revoked_at": None,
            "revoked_by_name": "",
        },
    )
    return record


@transaction.atomic
def answer_revoke(*, answer_id: int, by) -> ApprovedAnswer:
    """Take an answer out of the memory (kept for the record)."""
    record = ApprovedAnswer.objects.select_for_update().get(pk=answer_id)
    if record.active:
        record.active = False
        record.revoked_at = timezone.now()
        record.revoked_by_name = _display_name(by)
        record.save(update_fields=["active", "revoked_at", "revoked_by_name", "updated_at"])
    return record


def answer_revoke_for_message(*, message: Message, origin: str, by) -> bool:
    """Revoke the message's answer if it has this origin (a reply approved, then rated bad)."""
    record = ApprovedAnswer.objects.filter(message=message, origin=origin, active=True).first()
    if record is None:
        return False
    answer_revoke(answer_id=record.pk, by=by)
    return True


def answer_used(*, answer_id: int) -> None:
    """Count a use (a plain UPDATE: leaves `updated_at`, so the index is not rebuilt)."""
    ApprovedAnswer.objects.filter(pk=answer_id).update(
        times_used=F("times_used") + 1, last_used_at=timezone.now()
    )


def _display_name(user) -> str:
    if user is None:
        return ""
    return (user.get_full_name() or user.get_username()).strip()
