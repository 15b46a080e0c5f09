"""Where training examples come from: the seed corpus, logged conversations, agent feedback.

Feedback comes through `feedback.exports`: `sft_examples(include_thumbs_up=...)` ->
[{"conversation_id", "messages": [{"role": "user" | "assistant", "content"}], "source", ...}]
(reviewed text only, corrected replies already substituted), `correction_examples()` ->
single-turn [{"conversation_id", "correction_id", "messages": [question, correction]}] and
`preference_pairs()` -> [{"conversation_id", "prompt": [messages], "chosen": [assistant
message], "rejected": [assistant message]}] (TRL's conversational format).
"""

import json
import logging
from pathlib import Path

from django.db import transaction

from feedback import exports
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


def conversation_examples(*, include_thumbs_up: bool = False) -> list[dict]:
    """Logged conversations as chat examples of reviewed text; `source` is "correction",
    "approved", "agent" or "thumbs_up"."""
    return [
        {
            "id": f"conversation:{row['conversation_id']}",
            "conversation_id": str(row["conversation_id"]),
            "source": row.get("source", "agent"),
            "messages": row["messages"],
        }
        for row in exports.sft_examples(include_thumbs_up=include_thumbs_up)
    ]


def correction_examples(*, conversation_ids: list[str] | None = None) -> list[dict]:
    """One single-turn example per corrected reply: customer question -> newest correction
    (of every conversation, or of `conversation_ids`)."""
    return [
        {
            "id": f"correction:{row['correction_id']}",
            "conversation_id": str(row["conversation_id"]),
            "source": "correction",
            "correction_id": row["correction_id"],
            "messages": row["messages"],
        }
        for row in exports.correction_examples(conversation_ids=conversation_ids)
    ]


def preference_pairs() -> list[dict]:
    return [
        {
            "conversation_id": str(row["conversation_id"]),
            "prompt": row["prompt"],
            "chosen": row["chosen"],
            "rejected": row["rejected"],
        }
        for row in exports.preference_pairs()
    ]
