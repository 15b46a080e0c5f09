"""Feedback as training data: chat-format SFT examples, DPO preference pairs, regression cases.

These plain functions are what `training/` calls (and what `manage.py export_feedback`
writes as JSONL). Messages use the chat roles "user" (customer) and "assistant" (bot or
agent); no system message is included: training adds `chatbot.prompting.system_prompt()`.

Rules:
- SFT: one example per conversation. A corrected bot reply is replaced by its newest
  correction. An uncorrected bot reply is kept only if no one rated it bad (agent or
  customer thumbs down) and no agent flagged it; otherwise the example stops before it
  (what followed was a reaction to it). Agents' own messages are assistant turns.
  Consecutive turns of one role are joined; trailing customer turns are dropped.
- DPO: one pair per corrected bot reply whose correction differs from it: prompt = the
  conversation before the reply as the customer saw it, chosen = the newest correction,
  rejected = the bot's reply.
"""

import json
from collections.abc import Iterable
from datetime import datetime
from typing import IO

from django.db.models import Prefetch

from chatbot.models import Conversation, Message
from chatbot.prompting import ROLE_FOR_MODEL
from feedback.models import Correction, Flag, MessageRating, RegressionCase


def _turns_add(turns: list[dict], role: str, text: str) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += "\n\n" + text
    else:
        turns.append({"role": role, "content": text})


def _messages_of(conversation_ids: Iterable | None) -> Iterable[Conversation]:
    conversations = Conversation.objects.order_by("created_at", "id").prefetch_related(
        Prefetch(
            "messages",
            queryset=Message.objects.order_by("created_at", "id").prefetch_related(
                Prefetch("corrections", queryset=Correction.objects.order_by("-created_at", "-id")),
                "ratings",
                "flags",
            ),
        )
    )
    if conversation_ids is not None:
        conversations = conversations.filter(pk__in=list(conversation_ids))
    return conversations.iterator(chunk_size=200)


def newest_correction(message: Message) -> Correction | None:
    corrections = list(message.corrections.all())
    return corrections[0] if corrections else None


def reply_is_trusted(message: Message) -> bool:
    """An uncorrected bot reply fit to learn from: not rated bad by anyone, not flagged."""
    if any(r.value == "bad" for r in message.ratings.all()):
        return False
    return not message.flags.all()


def sft_examples(*, conversation_ids: Iterable | None = None) -> list[dict]:
    """Chat-format examples: {"conversation_id", "messages": [{role, content}], "corrected"}."""
    examples = []
    for conversation in _messages_of(conversation_ids):
        turns: list[dict] = []
        corrected = 0
        for message in conversation.messages.all():
            if message.role == Message.Role.BOT:
                correction = newest_correction(message)
                if correction is not None:
                    corrected += 1
                    _turns_add(turns, "assistant", correction.text)
                elif reply_is_trusted(message):
                    _turns_add(turns, "assistant", message.text)
                else:
                    break
            elif message.role in ROLE_FOR_MODEL:
                _turns_add(turns, ROLE_FOR_MODEL[message.role], message.text)
        while turns and turns[-1]["role"] != "assistant":
            turns.pop()
        if turns and turns[0]["role"] == "user":
            examples.append(
                {"conversation_id": str(conversation.id), "messages": turns, "corrected": corrected}
            )
    return examples


def prompt_before(message: Message) -> list[dict]:
    """The conversation before `message`, as the customer saw it (original bot replies)."""
    turns: list[dict] = []
    earlier = Message.objects.filter(conversation_id=message.conversation_id).order_by(
        "created_at", "id"
    )
    for other in earlier:
        if other.pk == message.pk:
            break
        if other.role in ROLE_FOR_MODEL:
            _turns_add(turns, ROLE_FOR_MODEL[other.role], other.text)
    return turns


def preference_pairs(*, conversation_ids: Iterable | None = None) -> list[dict]:
    """DPO pairs in TRL's conversational format:
    {"conversation_id", "message_id", "prompt": [...], "chosen": [...], "rejected": [...]}."""
    pairs = []
    for conversation in _messages_of(conversation_ids):
        turns: list[dict] = []
        for message in conversation.messages.all():
            correction = newest_correction(message) if message.role == Message.Role.BOT else None
            if correction is not None and correction.text.strip() != message.text.strip():
                pairs.append(
                    {
                        "conversation_id": str(conversation.id),
                        "message_id": str(message.id),
                        "prompt": [dict(t) for t in turns],
                        "chosen": [{"role": "assistant", "content": correction.text}],
                        "rejected": [{"role": "assistant", "content": message.text}],
                    }
                )
            if message.role in ROLE_FOR_MODEL:
                _turns_add(turns, ROLE_FOR_MODEL[message.role], message.text)
    return pairs


def regression_cases() -> list[dict]:
    """Active evaluation cases every new model must pass: {"id", "prompt", "expected"}."""
    return [
        {"id": case.id, "prompt": case.prompt, "expected": case.expected}
        for case in RegressionCase.objects.filter(is_active=True).order_by("id")
    ]


def feedback_count_since(since: datetime | None) -> int:
    """New feedback items (corrections, ratings, flags, regression cases) since a moment;
    all of them when `since` is None. Retraining is due when enough have arrived."""
    models = (Correction, MessageRating, Flag, RegressionCase)
    if since is None:
        return sum(model.objects.count() for model in models)
    return sum(model.objects.filter(created_at__gt=since).count() for model in models)


EXPORTS = {"sft": sft_examples, "dpo": preference_pairs, "regression": regression_cases}


def jsonl_write(records: Iterable[dict], stream: IO[str]) -> int:
    count = 0
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count
