"""Build a versioned training snapshot: gather reviewed text, clean it, weight and augment
corrections, split it by stable hashes, write files.

Splits never depend on a seed or on what else is in the data: a seed row is in the frozen
evaluation set when a hash of its id falls under `eval_seed_share`, a conversation is in
validation when a hash of its id falls under `validation_share`, a correction paraphrase is
held out when a hash of its text falls under `paraphrase_eval_share`. So the same rows are
evaluation rows in every snapshot, whatever is added later, and never train.
"""

import hashlib
import json
import logging
import random
import re
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from chatbot.artifacts import ArtifactError, artifact_pull, artifact_push, artifact_rewrite
from chatbot.pii import pii_mask
from feedback.exports import jsonl_rows_remove, row_drawn_from
from training.config import TrainConfig
from training.data import sources
from training.data.cleaning import examples_clean, text_normalize
from training.data.slots import slots_rewrite
from training.models import DatasetSnapshot

log = logging.getLogger(__name__)
SPLIT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "eval": "eval.jsonl"}
PREFERENCES_FILE = "preferences.jsonl"
CORRECTION_SOURCES = ("correction", "correction_paraphrase", "correction_nearest")


class DatasetError(Exception):
    """The data cannot make a usable snapshot (e.g. nothing left after cleaning)."""


def datasets_dir() -> Path:
    return Path(settings.DATA_DIR) / "datasets"


def snapshot_artifact_name(name: str) -> str:
    """The snapshot's name in the artifact store (chatbot/artifacts.py)."""
    return f"datasets/{name}"


def stable_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) fixed by `text` alone (sha1), for splits that never move."""
    return int(hashlib.sha1(f"{salt}:{text}".encode()).hexdigest()[:13], 16) / 16**13


def question_norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def correction_topic(answer: str) -> str:
    """Corrections with the same answer text are one topic (20 corrections, one policy)."""
    return "correction:" + hashlib.sha1(question_norm(answer).encode()).hexdigest()[:10]


def stable_split(
    examples: list[dict], *, validation_share: float, always_train=lambda e: False
) -> tuple[list[dict], list[dict]]:
    """(train, validation) by a hash of `conversation_id`: never one conversation on both
    sides, the same conversations whatever else is added. `always_train` rows stay in train
    (corrections). With two or more candidate conversations and none drawn, the one with the
    lowest hash goes to validation, so early stopping always has rows."""
    candidates = {e["conversation_id"] for e in examples if not always_train(e)}
    candidates -= {e["conversation_id"] for e in examples if always_train(e)}
    held_out = {c for c in candidates if stable_fraction(c, "validation") < validation_share}
    if not held_out and len(candidates) >= 2 and validation_share > 0:
        held_out = {min(candidates, key=lambda c: stable_fraction(c, "validation"))}
    train = [e for e in examples if e["conversation_id"] not in held_out]
    validation = [e for e in examples if e["conversation_id"] in held_out]
    validation.sort(key=lambda e: (stable_fraction(e["conversation_id"], "validation"), e["key"]))
    return train, validation


def seed_eval_case(row: dict) -> dict:
    return {
        "id": row["id"],
        "kind": "seed",
        "prompt": row["messages"][:-1],
        "expected": row["messages"][-1]["content"],
        "correction_id": None,
        "topic": row.get("topic") or "",
    }


def question_scores(seed_rows: list[dict], corrections: list[dict]):
    """(seed rows x corrections) MiniLM cosines of their last customer questions."""
    from training.data.embed import texts_embed_cached

    asked = texts_embed_cached([row["messages"][-2]["content"] for row in corrections])
    questions = texts_embed_cached([row["messages"][-2]["content"] for row in seed_rows])
    return questions @ asked.T


def seed_superseded(
    seed_rows: list[dict], corrections: list[dict], *, min_similarity: float
) -> dict[str, int]:
    """{seed row id: correction id} for imported corpus rows whose customer question is at
    least `min_similarity` (MiniLM cosine) to a corrected question: the shop's agents answered
    that question differently, so the corpus's answer neither trains against the correction
    nor judges the model as a seed evaluation case. 0 or less turns this off."""
    if not seed_rows or not corrections or min_similarity <= 0:
        return {}
    scores = question_scores(seed_rows, corrections)
    best = scores.argmax(axis=1)
    return {
        row["id"]: corrections[int(j)]["correction_id"]
        for row, j, score in zip(seed_rows, best, scores.max(axis=1), strict=True)
        if score >= min_similarity
    }


def corrections_nearest(
    seed_rows: list[dict], corrections: list[dict], *, cfg: TrainConfig
) -> tuple[list[dict], list[dict], dict]:
    """(training rows, evaluation cases, report): imported corpus questions at least
    `nearest_min_similarity` (MiniLM cosine) to a corrected question and `nearest_margin`
    closer to it than to any question corrected with another answer, answered with that
    correction. Real customers' wordings of what the agents corrected, split into training
    and held-out cases by `nearest_eval_share`. 0 or less turns this off."""
    report = {"rows": 0, "train": 0, "eval": 0, "min_similarity": cfg.nearest_min_similarity}
    if not seed_rows or not corrections or cfg.nearest_min_similarity <= 0:
        return [], [], report
    answers = [row["messages"][-1]["content"] for row in corrections]
    rows, cases = [], []
    for row, scores in zip(seed_rows, question_scores(seed_rows, corrections), strict=True):
        best = int(scores.argmax())
        other = max(
            (
                float(x)
                for x, answer in zip(scores, answers, strict=True)
                if answer != answers[best]
            ),
            default=-1.0,
        )
        if scores[best] < cfg.nearest_min_similarity or scores[best] - other < cfg.nearest_margin:
            continue
        correction = corrections[best]
        text = slots_rewrite(row["messages"][-2]["content"])
        norm = question_norm(text)
        digest = hashlib.sha1(norm.encode()).hexdigest()[:10]
        if stable_fraction(norm, "paraphrase") < cfg.nearest_eval_share:
            cases.append(
                {
                    "id": f"nearest:{correction['correction_id']}:{digest}",
                    "kind": "correction",
                    "prompt": [{"role": "user", "content": text}],
                    "expected": answers[best],
                    "correction_id": correction["correction_id"],
                    "topic": correction_topic(answers[best]),
                    "answers_seed_row": row["id"],
                }
            )
            continue
        rows.append(
            {
                "id": f"nearest:{row['id']}",
                "conversation_id": correction["conversation_id"],
                "source": "correction_nearest",
                "correction_id": correction["correction_id"],
                "weight": max(1, cfg.paraphrase_weight),
                "messages": [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answers[best]},
                ],
                "answers_seed_row": row["id"],
            }
        )
    report.update(rows=len(rows) + len(cases), train=len(rows), eval=len(cases))
    return rows, cases, report


def correction_paraphrases(
    corrections: list[dict], *, cfg: TrainConfig
) -> tuple[list[dict], list[dict], dict]:
    """(training rows, evaluation cases, report) from the base model's paraphrases of each
    cleaned correction row's question (see training/data/paraphrase.py)."""
    report = {"questions": 0, "generated": 0, "candidates": 0, "fit": 0, "train": 0, "eval": 0}
    if not corrections or cfg.paraphrases_per_correction <= 0:
        return [], [], report
    from chatbot.serving.loading import ModelLoadError
    from chatbot.serving.versions import base_model_path
    from training.data.paraphrase import paraphrases_filter, paraphrases_generate

    questions = [row["messages"][0]["content"] for row in corrections]
    try:
        raw, report["generated"] = paraphrases_generate(
            questions,
            count=cfg.paraphrases_per_correction,
            seed=cfg.seed,
            model_path=Path(base_model_path()),
        )
    except ModelLoadError as exc:  # corrections still train, just without paraphrases
        log.warning("No correction paraphrases: %s", exc)
        return [], [], {**report, "error": str(exc)}
    report["questions"] = len(raw)
    trained_questions = {question_norm(q) for q in questions}
    rows, cases = [], {}
    for row, question in zip(corrections, questions, strict=True):
        answer = row["messages"][1]["content"]
        report["candidates"] += len(raw[question])
        fit = paraphrases_filter(
            question,
            raw[question],
            min_similarity=cfg.paraphrase_min_similarity,
            max_similarity=cfg.paraphrase_max_similarity,
        )
        report["fit"] += len(fit)
        for text, _ in fit:
            norm = question_norm(text)
            digest = hashlib.sha1(norm.encode()).hexdigest()[:10]
            if stable_fraction(norm, "paraphrase") < cfg.paraphrase_eval_share:
                if norm not in trained_questions:  # a real customer asked it: that trains
                    cases[(norm, row["correction_id"])] = {
                        "id": f"correction:{row['correction_id']}:{digest}",
                        "kind": "correction",
                        "prompt": [{"role": "user", "content": text}],
                        "expected": answer,
                        "correction_id": row["correction_id"],
                        "topic": correction_topic(answer),
                    }
                continue
            rows.append(
                {
                    "id": f"paraphrase:{row['correction_id']}:{digest}",
                    "conversation_id": row["conversation_id"],
                    "source": "correction_paraphrase",
                    "correction_id": row["correction_id"],
                    "weight": max(1, cfg.paraphrase_weight),
                    "messages": [
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": answer},
                    ],
                }
            )
    report["train"], report["eval"] = len(rows), len(cases)
    return rows, list(cases.values()), report


def corrections_clean(correction_rows: list[dict], *, cfg: TrainConfig) -> list[dict]:
    """Correction rows cleaned as every build cleans them, none dropped as a near duplicate
    of another: their cleaned questions are what gets paraphrased."""
    kept, _ = examples_clean(
        correction_rows,
        max_turn_chars=cfg.max_turn_chars,
        near_duplicate_threshold=cfg.near_duplicate_threshold,
        protected=lambda e: True,
    )
    return kept


def correction_paraphrases_prepare(*, cfg: TrainConfig, conversation_id: str) -> dict:
    """Write the paraphrases of a conversation's corrected questions into the cache now (the
    trainer's task when a correction is saved), so the next retrain's data stage finds them
    ready instead of generating them. Returns the paraphrase report."""
    corrections = corrections_clean(
        sources.correction_examples(conversation_ids=[conversation_id]), cfg=cfg
    )
    return correction_paraphrases(corrections, cfg=cfg)[2]


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
    """Gather reviewed text, clean it, weight and augment corrections, split and store it.

    Files go to DATA_DIR/datasets/<name>/ (written to a temporary folder, renamed at the end):
    train.jsonl, validation.jsonl, eval.jsonl (the frozen evaluation set), preferences.jsonl,
    report.json. Raises DatasetError when nothing usable is left.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now

    seed_rows = sources.seed_examples()
    conversation_rows = sources.conversation_examples(include_thumbs_up=cfg.include_thumbs_up)
    correction_rows = sources.correction_examples()
    raw_pairs = sources.preference_pairs()
    for row in correction_rows:
        row["weight"] = max(1, cfg.correction_weight)
    lap("gather")

    corrections = corrections_clean(correction_rows, cfg=cfg)
    paraphrase_rows, correction_cases, paraphrase_report = correction_paraphrases(
        corrections, cfg=cfg
    )
    lap("paraphrases")

    superseded = seed_superseded(
        seed_rows, corrections, min_similarity=cfg.supersede_min_similarity
    )
    nearest_rows, nearest_cases, nearest_report = corrections_nearest(
        seed_rows, corrections, cfg=cfg
    )
    # A corpus row a correction answers now never also trains with its old answer.
    for row in nearest_rows + nearest_cases:
        superseded.setdefault(row.pop("answers_seed_row"), row["correction_id"])
    eval_superseded = sum(
        1 for pk in superseded if stable_fraction(pk, "eval") < cfg.eval_seed_share
    )
    seed_rows = [row for row in seed_rows if row["id"] not in superseded]
    correction_cases += nearest_cases
    lap("supersede")

    eval_ids = {
        row["id"] for row in seed_rows if stable_fraction(row["id"], "eval") < cfg.eval_seed_share
    }
    examples = correction_rows + paraphrase_rows + nearest_rows + seed_rows + conversation_rows
    kept, cleaning = examples_clean(
        examples,
        max_turn_chars=cfg.max_turn_chars,
        near_duplicate_threshold=cfg.near_duplicate_threshold,
        # Correction and paraphrase rows (they carry their correction's id) and evaluation rows.
        protected=lambda e: e.get("correction_id") is not None or e["id"] in eval_ids,
    )
    lap("clean")
    if not kept:
        raise DatasetError(f"No usable examples: {len(examples)} in, none left after cleaning.")
    for row in kept:
        row.setdefault("weight", 1)
        row.setdefault("correction_id", None)
    eval_cases = [seed_eval_case(e) for e in kept if e["id"] in eval_ids]
    eval_cases.sort(key=lambda case: stable_fraction(case["id"], "eval"))
    eval_cases += sorted(correction_cases, key=lambda case: case["id"])
    trainable = [
        {k: v for k, v in e.items() if k != "topic"} for e in kept if e["id"] not in eval_ids
    ]
    train, validation = stable_split(
        trainable,
        validation_share=cfg.validation_share,
        always_train=lambda e: e["source"] in CORRECTION_SOURCES,
    )
    train.sort(key=lambda e: (e["key"], e["id"]))
    random.Random(cfg.seed).shuffle(train)
    held_out = {e["conversation_id"] for e in validation}
    pairs = [p for p in pairs_clean(raw_pairs) if p["conversation_id"] not in held_out]
    lap("split")
    report = {
        "sources": {
            "seed": len(seed_rows),
            "conversations": len(conversation_rows),
            "conversations_by_source": dict(Counter(e["source"] for e in conversation_rows)),
            "corrections": len(correction_rows),
            "preference_pairs": len(raw_pairs),
        },
        "paraphrases": paraphrase_report,
        "nearest_questions": nearest_report,
        # Corpus rows a correction answers differently: left out of training and evaluation.
        "superseded": {
            "seed_rows": len(superseded),
            "eval_cases": eval_superseded,
            "min_similarity": cfg.supersede_min_similarity,
        },
        **cleaning,
        "by_source_out": dict(Counter(e["source"] for e in kept)),
        "split": {
            "train": len(train),
            "validation": len(validation),
            "eval": len(eval_cases),
            "train_by_source": dict(Counter(e["source"] for e in train)),
            "train_weighted": sum(e["weight"] for e in train),
            "eval_by_kind": dict(Counter(c["kind"] for c in eval_cases)),
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
    _jsonl_write(partial / SPLIT_FILES["eval"], eval_cases)
    _jsonl_write(partial / PREFERENCES_FILE, pairs)
    lap("write")
    report["seconds"] = {
        **timings,
        "total": round(sum(timings.values()), 2),
        "clean_detail": cleaning.pop("seconds"),
    }
    data_config = {
        name: getattr(cfg, name)
        for name in (
            "validation_share",
            "max_turn_chars",
            "near_duplicate_threshold",
            "include_thumbs_up",
            "correction_weight",
            "paraphrase_weight",
            "paraphrases_per_correction",
            "paraphrase_min_similarity",
            "paraphrase_max_similarity",
            "paraphrase_eval_share",
            "eval_seed_share",
            "supersede_min_similarity",
            "nearest_min_similarity",
            "nearest_margin",
            "nearest_eval_share",
            "seed",
        )
    }
    (partial / "report.json").write_text(json.dumps({"config": data_config, **report}, indent=2))
    partial.rename(target)
    artifact_push(target, name=snapshot_artifact_name(name))  # for every other host
    return DatasetSnapshot.objects.create(
        name=name,
        path=str(target),
        config=data_config,
        report=report,
        train_count=len(train),
        validation_count=len(validation),
        preference_count=len(pairs),
    )


def snapshots_forget(*, conversation_ids: set[str], correction_ids: set[int]) -> int:
    """Remove from every snapshot on disk each row drawn from these conversations or their
    corrections (customer-data deletion); returns how many rows went."""
    from training.data.paraphrase import paraphrases_forget

    removed = 0

    def forget(folder: Path) -> int:
        count = 0
        for path in folder.glob("*.jsonl"):
            gone = jsonl_rows_remove(
                path, lambda row: row_drawn_from(row, conversation_ids, correction_ids)
            )
            for row in gone:
                if row.get("source") == "correction":
                    # The customer's question also names a cache file of its paraphrases.
                    paraphrases_forget(row["messages"][0]["content"])
            count += len(gone)
        return count

    for snapshot in DatasetSnapshot.objects.all():
        here = forget(Path(snapshot.path))
        # The artifact store's copy too (old blobs deleted), wherever the snapshot was made.
        stored = artifact_rewrite(snapshot_artifact_name(snapshot.name), forget)
        removed += here or stored
    return removed


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
    """Rows of a split ("train", "validation"), the evaluation cases ("eval") or
    "preferences"."""
    filename = PREFERENCES_FILE if split == "preferences" else SPLIT_FILES[split]
    folder = Path(snapshot.path)
    if not folder.is_dir():  # made on another host: this host's copy from the store
        try:
            folder = artifact_pull(snapshot_artifact_name(snapshot.name))
        except ArtifactError as exc:
            raise DatasetError(f"Snapshot {snapshot.name} is not on this host: {exc}") from exc
    path = folder / filename
    if not path.exists():
        raise DatasetError(f"Snapshot {snapshot.name} is missing {path}.")
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
