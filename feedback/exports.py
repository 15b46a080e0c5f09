"""Feedback as training data: chat-format SFT examples, DPO preference pairs, regression cases.

These plain functions are what `training/` calls (and what `manage.py export_feedback`
writes as JSONL). Messages use the chat roles "user" (customer) and "assistant" (bot or
agent); no system message is included: training adds `chatbot.prompting.system_prompt()`.

Only reviewed text trains. Rules:
- SFT: one example per conversation. A bot reply is kept only when someone reviewed it:
  corrected (replaced by its newest correction), approved (an agent rated it good, no agent
  rated it bad, nobody flagged it) or, with `include_thumbs_up`, a customer thumbs-up that
  nobody rated bad or flagged. At the first other bot reply (unreviewed, rated bad, flagged)
  the example stops: what followed reacted to it. Agents' own messages are assistant turns.
  Consecutive turns of one role are joined; trailing customer turns are dropped. `source`
  names the strongest reviewed turn in it: correction > approved > agent > thumbs_up.
- A correction whose approved answer a reviewer revoked (console, /agent/answers/) counts as
  withdrawn: the reply is treated as uncorrected.
- Corrections: one single-turn example per corrected bot reply (the customer turns just
  before it -> the newest correction), the most valuable rows of all.
- DPO: one pair per corrected bot reply whose correction differs from it: prompt = the
  conversation before the reply as the customer saw it, chosen = the newest correction,
  rejected = the bot's reply.
"""

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Prefetch, QuerySet

from chatbot.models import ApprovedAnswer, Conversation, Message
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
            queryset=Message.objects.order_by("created_at", "id")
            .select_related("approved_answer")
            .prefetch_related(
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
    """The correction in force: the newest one, unless a reviewer revoked the approved answer
    it made (then the reply counts as uncorrected and its correction does not train)."""
    corrections = list(message.corrections.all())
    if not corrections:
        return None
    try:
        answer = message.approved_answer
    except ObjectDoesNotExist:
        return corrections[0]
    revoked = not answer.active and answer.origin == ApprovedAnswer.Origin.CORRECTION
    return None if revoked else corrections[0]


SOURCE_RANK = ("correction", "approved", "agent", "thumbs_up")


def reply_review(message: Message, *, include_thumbs_up: bool = False) -> str | None:
    """How an uncorrected bot reply was reviewed: "approved" (an agent rated it good and no
    agent bad, not flagged), "thumbs_up" (only with `include_thumbs_up`: the customer liked
    it, nobody rated it bad, not flagged), or None (unreviewed, rated bad or flagged)."""
    if message.flags.all():
        return None
    ratings = list(message.ratings.all())
    agent = {r.value for r in ratings if r.source == MessageRating.Source.AGENT}
    if MessageRating.Value.BAD in agent:
        return None
    if MessageRating.Value.GOOD in agent:
        return "approved"
    values = {r.value for r in ratings}
    if include_thumbs_up and values == {MessageRating.Value.GOOD}:
        return "thumbs_up"
    return None


def sft_examples(
    *, conversation_ids: Iterable | None = None, include_thumbs_up: bool = False
) -> list[dict]:
    """Chat-format examples of reviewed text only (see the module docstring):
    {"conversation_id", "messages": [{role, content}], "corrected", "source"}."""
    examples = []
    for conversation in _messages_of(conversation_ids):
        turns: list[dict] = []
        corrected = 0
        kinds: set[str] = set()
        for message in conversation.messages.all():
            if message.role == Message.Role.BOT:
                correction = newest_correction(message)
                review = (
                    None
                    if correction
                    else reply_review(message, include_thumbs_up=include_thumbs_up)
                )
                if correction is not None:
                    corrected += 1
                    kinds.add("correction")
                    _turns_add(turns, "assistant", correction.text)
                elif review is not None:
                    kinds.add(review)
                    _turns_add(turns, "assistant", message.text)
                else:
                    break
            elif message.role in ROLE_FOR_MODEL:
                if message.role == Message.Role.AGENT:
                    kinds.add("agent")
                _turns_add(turns, ROLE_FOR_MODEL[message.role], message.text)
        while turns and turns[-1]["role"] != "assistant":
            turns.pop()
        if turns and turns[0]["role"] == "user":
            examples.append(
                {
                    "conversation_id": str(conversation.id),
                    "messages": turns,
                    "corrected": corrected,
                    "source": next(kind for kind in SOURCE_RANK if kind in kinds),
                }
            )
    return examples


def correction_examples(*, conversation_ids: Iterable | None = None) -> list[dict]:
    """One single-turn example per corrected bot reply: the customer turns just before it
    (joined) -> the newest correction. {"conversation_id", "message_id", "correction_id",
    "messages": [user, assistant], "source": "correction"}. A reply no customer turn
    precedes (a corrected greeting) makes none."""
    examples = []
    for conversation in _messages_of(conversation_ids):
        question: list[str] = []
        for message in conversation.messages.all():
            if message.role == Message.Role.CUSTOMER:
                question.append(message.text)
                continue
            correction = newest_correction(message) if message.role == Message.Role.BOT else None
            if correction is not None and question:
                examples.append(
                    {
                        "conversation_id": str(conversation.id),
                        "message_id": str(message.id),
                        "correction_id": correction.id,
                        "messages": [
                            {"role": "user", "content": "\n\n".join(question)},
                            {"role": "assistant", "content": correction.text},
                        ],
                        "source": "correction",
                    }
                )
            if message.role in ROLE_FOR_MODEL:
                question = []
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
    """Active evaluation cases every new model must pass: {"id", "conversation_id" (None once
    purged), "prompt", "expected"}."""
    return [
        {
            "id": case.id,
            "conversation_id": case.conversation_id and str(case.conversation_id),
            "prompt": case.prompt,
            "expected": case.expected,
        }
        for case in RegressionCase.objects.filter(is_active=True).order_by("id")
    ]


def feedback_count_since(since: datetime | None) -> int:
    """New reviewed feedback (corrections, agent ratings, flags, regression cases) since a
    moment; all of it when `since` is None. Retraining is due when enough has arrived.
    Customer thumbs feed monitoring, not this count."""
    querysets: tuple[QuerySet, ...] = (
        Correction.objects.all(),
        MessageRating.objects.filter(source=MessageRating.Source.AGENT),
        Flag.objects.all(),
        RegressionCase.objects.all(),
    )
    if since is not None:
        querysets = tuple(qs.filter(created_at__gt=since) for qs in querysets)
    return sum(qs.count() for qs in querysets)


EXPORTS: dict[str, Callable[..., list[dict]]] = {
    "sft": sft_examples,
    "corrections": correction_examples,
    "dpo": preference_pairs,
    "regression": regression_cases,
}


def export_records(*, format: str, include_thumbs_up: bool = False) -> list[dict]:
    """One export's rows (`include_thumbs_up` is for sft only)."""
    if format == "sft":
        return sft_examples(include_thumbs_up=include_thumbs_up)
    return EXPORTS[format]()


def jsonl_write(records: Iterable[dict], stream: IO[str]) -> int:
    count = 0
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def export_write(*, format: str, name: str, include_thumbs_up: bool = False) -> tuple[Path, int]:
    """Write one export as JSONL to `name` inside FEEDBACK_EXPORT_DIR, the one place on disk
    where deleting a customer's data finds exports (`exports_forget`); returns (path, rows).
    Raises ValueError for a path outside that folder."""
    folder = Path(settings.FEEDBACK_EXPORT_DIR).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or path == folder:
        raise ValueError(
            f"Exports are written in FEEDBACK_EXPORT_DIR ({folder}), where deleting a "
            f"customer's data can remove their rows; name a file there, not {name}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(path.name + ".partial")
    with draft.open("w", encoding="utf-8") as stream:
        count = jsonl_write(
            export_records(format=format, include_thumbs_up=include_thumbs_up), stream
        )
    draft.replace(path)
    return path, count


def row_drawn_from(row: dict, conversation_ids: set[str], correction_ids: set[int]) -> bool:
    """Whether an exported or snapshot row came from these conversations or corrections."""
    return (
        str(row.get("conversation_id")) in conversation_ids
        or row.get("correction_id") in correction_ids
    )


def jsonl_rows_remove(path: Path, drop: Callable[[dict], bool]) -> list[dict]:
    """Rewrite a JSONL file without the rows `drop` picks (a draft renamed over it, so a
    reader never sees half a file); returns the rows removed."""
    kept: list[str] = []
    gone: list[dict] = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if not line.strip():
                continue
            row = json.loads(line)
            if drop(row):
                gone.append(row)
            else:
                kept.append(line)
    if gone:
        draft = path.with_name(path.name + ".tmp")
        draft.write_text("".join(kept), encoding="utf-8")
        draft.replace(path)
    return gone


def exports_forget(*, conversation_ids: set[str], correction_ids: set[int]) -> int:
    """Remove from every export in FEEDBACK_EXPORT_DIR each row drawn from these
    conversations or their corrections (customer-data deletion); returns how many went."""
    folder = Path(settings.FEEDBACK_EXPORT_DIR)
    if not folder.is_dir():
        return 0
    return sum(
        len(
            jsonl_rows_remove(
                path, lambda row: row_drawn_from(row, conversation_ids, correction_ids)
            )
        )
        for path in sorted(folder.rglob("*.jsonl"))
    )
