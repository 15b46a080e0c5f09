"""Build a versioned training snapshot: clean, split by conversation, shuffle, write files."""

import hashlib
import json
import random
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from training.config import TrainConfig
from training.data import sources
from training.data.cleaning import examples_clean, text_normalize
from training.data.pii import pii_mask
from training.data.slots import slots_rewrite
from training.models import DatasetSnapshot

SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
PREFERENCES_FILE = "preferences.jsonl"


class DatasetError(Exception):
    """The data cannot make a usable snapshot (e.g. nothing left after cleaning)."""


def datasets_dir() -> Path:
    return Path(settings.DATA_DIR) / "datasets"


def conversations_split(
    examples: list[dict], *, validation_share: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Split by conversation (never one conversation on both sides), then shuffle each side.

    At least one conversation goes to validation when there are two or more.
    """
    conversation_ids = sorted({e["conversation_id"] for e in examples})
    random.Random(seed).shuffle(conversation_ids)
    count = round(len(conversation_ids) * validation_share)
    if len(conversation_ids) >= 2:
        count = min(max(count, 1), len(conversation_ids) - 1)
    held_out = set(conversation_ids[:count])
    train = [e for e in examples if e["conversation_id"] not in held_out]
    validation = [e for e in examples if e["conversation_id"] in held_out]
    rng = random.Random(seed + 1)
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


def pairs_clean(pairs: list[dict]) -> list[dict]:
    def clean(messages: list[dict]) -> list[dict]:
        return [
            {"role": m["role"], "content": slots_rewrite(pii_mask(text_normalize(m["content"])))}
            for m in messages
        ]

    result = []
    for pair in pairs:
        chosen, rejected = clean(pair["chosen"]), clean(pair["rejected"])
        if not pair["prompt"] or not chosen[0]["content"] or not rejected[0]["content"]:
            continue
        if chosen[0]["content"] == rejected[0]["content"]:
            continue
        result.append(
            {**pair, "prompt": clean(pair["prompt"]), "chosen": chosen, "rejected": rejected}
        )
    return result


def _jsonl_write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


def dataset_build(*, cfg: TrainConfig, name: str = "") -> DatasetSnapshot:
    """Gather everything the app knows, clean it, split it and store it as a snapshot.

    Files go to DATA_DIR/datasets/<name>/ (written to a temporary folder, renamed at the end):
    train.jsonl, validation.jsonl, preferences.jsonl, report.json. Raises DatasetError when
    nothing usable is left.
    """
    seed_rows = sources.seed_examples()
    conversation_rows = sources.conversation_examples()
    raw_pairs = sources.preference_pairs()
    examples = seed_rows + conversation_rows
    kept, cleaning = examples_clean(
        examples,
        max_turn_chars=cfg.max_turn_chars,
        near_duplicate_threshold=cfg.near_duplicate_threshold,
    )
    if not kept:
        raise DatasetError(f"No usable examples: {len(examples)} in, none left after cleaning.")
    train, validation = conversations_split(
        kept, validation_share=cfg.validation_share, seed=cfg.seed
    )
    held_out = {e["conversation_id"] for e in validation}
    pairs = [p for p in pairs_clean(raw_pairs) if p["conversation_id"] not in held_out]
    report = {
        "sources": {
            "seed": len(seed_rows),
            "conversations": len(conversation_rows),
            "preference_pairs": len(raw_pairs),
        },
        **cleaning,
        "by_source_out": dict(Counter(e["source"] for e in kept)),
        "split": {
            "train": len(train),
            "validation": len(validation),
            "train_conversations": len({e["conversation_id"] for e in train}),
            "validation_conversations": len(held_out),
        },
        "preference_pairs_out": len(pairs),
    }
    digest = hashlib.sha1("".join(sorted(e["key"] for e in kept)).encode()).hexdigest()[:8]
    name = name or f"ds-{datetime.now(UTC):%Y%m%d-%H%M%S}-{digest}"
    target = datasets_dir() / name
    if target.exists() or DatasetSnapshot.objects.filter(name=name).exists():
        raise DatasetError(f"Snapshot {name} already exists.")
    partial = target.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _jsonl_write(partial / SPLIT_FILES["train"], train)
    _jsonl_write(partial / SPLIT_FILES["validation"], validation)
    _jsonl_write(partial / PREFERENCES_FILE, pairs)
    data_config = {
        "seed": cfg.seed,
        "validation_share": cfg.validation_share,
        "max_turn_chars": cfg.max_turn_chars,
        "near_duplicate_threshold": cfg.near_duplicate_threshold,
    }
    (partial / "report.json").write_text(json.dumps({"config": data_config, **report}, indent=2))
    partial.rename(target)
    return DatasetSnapshot.objects.create(
        name=name,
        path=str(target),
        config=data_config,
        report=report,
        train_count=len(train),
        validation_count=len(validation),
        preference_count=len(pairs),
    )


def snapshot_get(snapshot_id: str | int | None = None) -> DatasetSnapshot:
    """A snapshot by name or primary key; the newest one when `snapshot_id` is empty."""
    if not snapshot_id:
        snapshot = DatasetSnapshot.objects.first()
        if snapshot is None:
            raise DatasetError("No dataset snapshot yet: run `manage.py build_dataset` first.")
        return snapshot
    query = DatasetSnapshot.objects.filter(name=str(snapshot_id))
    if str(snapshot_id).isdigit():
        query = query | DatasetSnapshot.objects.filter(pk=int(snapshot_id))
    snapshot = query.first()
    if snapshot is None:
        raise DatasetError(f"Unknown dataset snapshot {snapshot_id!r}.")
    return snapshot


def snapshot_rows(snapshot: DatasetSnapshot, split: str) -> list[dict]:
    """Rows of a split ("train", "validation") or "preferences"."""
    filename = PREFERENCES_FILE if split == "preferences" else SPLIT_FILES[split]
    path = Path(snapshot.path) / filename
    if not path.exists():
        raise DatasetError(f"Snapshot {snapshot.name} is missing {path}.")
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
