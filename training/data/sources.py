"""Where training examples come from: the seed corpus, logged conversations, agent feedback.

Feedback contract (the `feedback` app, read defensively so training works without it):
`feedback.exports.sft_examples(include_thumbs_up=...)` -> [{"conversation_id", "messages":
[{"role": "user" | "assistant", "content"}], "source", ...}] (reviewed text only, corrected
replies already substituted), `feedback.exports.correction_examples()` -> single-turn
[{"conversation_id", "correction_id", "messages": [question, correction]}] and
`feedback.exports.preference_pairs()` -> [{"conversation_id", "prompt": [messages],
"chosen": [assistant message], "rejected": [assistant message]}] (TRL's conversational
format). Without that module, only agents' own messages are read from chatbot.Message
(bot replies are unreviewed there) and there are no corrections or preference pairs.
"""

import json
import logging
from pathlib import Path

from django.db import transaction

from training.models import SeedExample

log = logging.getLogger(__name__)


@transaction.atomic
def seed_examples_import(*, path: Path, source: str = "") -> tuple[int, int]:
    """Load a JSONL file of {"id", "customer", "agent", "intent"?, "category"?} rows.

    Idempotent per (source, id). Returns (created, skipped). Rows without customer or agent
    text are skipped here; all other cleaning happens in build_dataset.
    """
    source = source or path.stem
    rows, skipped = [], 0
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(row, dict) or not row.get("customer") or not row.get("agent"):
                skipped += 1
                continue
            rows.append(
                SeedExample(
                    source=source,
                    external_id=str(row.get("id") or number),
                    intent=str(row.get("intent", ""))[:100],
                    category=str(row.get("category", ""))[:100],
                    customer=str(row["customer"]),
                    agent=str(row["agent"]),
                )
            )
    before = SeedExample.objects.filter(source=source).count()
    SeedExample.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    created = SeedExample.objects.filter(source=source).count() - before
    return created, skipped + len(rows) - created


def seed_examples() -> list[dict]:
    return [
        {
            "id": f"seed:{seed.source}:{seed.external_id}",
            "conversation_id": f"seed:{seed.source}:{seed.external_id}",
            "source": "seed",
            "topic": seed.intent or seed.category,
            "messages": [
                {"role": "user", "content": seed.customer},
                {"role": "assistant", "content": seed.agent},
            ],
        }
        for seed in SeedExample.objects.order_by("id").iterator(chunk_size=1000)
    ]


def _feedback_export(name: str):
    try:
        from feedback import exports
    except ImportError:
        return None
    return getattr(exports, name, None)


def conversation_examples(*, include_thumbs_up: bool = False) -> list[dict]:
    """Logged conversations as chat examples of reviewed text, through the feedback app when
    it is there; `source` is "correction", "approved", "agent" or "thumbs_up"."""
    export = _feedback_export("sft_examples")
    if export is not None:
        return [
            {
                "id": f"conversation:{row['conversation_id']}",
                "conversation_id": str(row["conversation_id"]),
                "source": row.get("source", "agent"),
                "messages": row["messages"],
            }
            for row in export(include_thumbs_up=include_thumbs_up)
        ]
    return _messages_as_examples()


def correction_examples() -> list[dict]:
    """One single-turn example per corrected reply: customer question -> newest correction."""
    export = _feedback_export("correction_examples")
    if export is None:
        return []
    return [
        {
            "id": f"correction:{row['correction_id']}",
            "conversation_id": str(row["conversation_id"]),
            "source": "correction",
            "correction_id": row["correction_id"],
            "messages": row["messages"],
        }
        for row in export()
    ]


def _messages_as_examples() -> list[dict]:
    """Without the feedback app nothing reviews bot replies: keep each conversation up to its
    first bot reply, so only customers' and agents' own messages train."""
    from chatbot.models import Message
    from chatbot.prompting import ROLE_FOR_MODEL

    examples: dict[str, list[dict]] = {}
    stopped: set[str] = set()
    for conversation_uuid, role, text in (
        Message.objects.order_by("conversation_id", "created_at", "id")
        .values_list("conversation_id", "role", "text")
        .iterator(chunk_size=2000)
    ):
        conversation_id = str(conversation_uuid)
        if role not in ROLE_FOR_MODEL or conversation_id in stopped:
            continue
        if role == Message.Role.BOT:
            stopped.add(conversation_id)
            continue
        turns = examples.setdefault(conversation_id, [])
        model_role = ROLE_FOR_MODEL[role]
        if turns and turns[-1]["role"] == model_role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": model_role, "content": text})
    result = []
    for conversation_id, turns in examples.items():
        while turns and turns[-1]["role"] != "assistant":
            turns.pop()
        if turns and turns[0]["role"] == "user":
            result.append(
                {
                    "id": f"conversation:{conversation_id}",
                    "conversation_id": conversation_id,
                    "source": "agent",
                    "messages": turns,
                }
            )
    return result


def preference_pairs() -> list[dict]:
    export = _feedback_export("preference_pairs")
    if export is None:
        return []
    return [
        {
            "conversation_id": str(row["conversation_id"]),
            "prompt": row["prompt"],
            "chosen": row["chosen"],
            "rejected": row["rejected"],
        }
        for row in export()
    ]
