"""What a retraining run does at each stage, over the data/train/evaluate modules.

`training.runs` drives the run (state, progress, gate); this module only knows how to
build the data, train a candidate and score a version, so each can change on its own.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from chatbot.serving.versions import serving_target
from training.config import train_config
from training.gate import SAFETY_CASE_CHECKS
from training.models import DatasetSnapshot, ModelVersion
from training.train import TrainingError


@dataclass
class TrainOutcome:
    artifact_path: str
    base_path: str
    config: dict
    metrics: dict


def snapshot_build() -> DatasetSnapshot:
    """A fresh snapshot of everything the app knows; refuses one too small to train on."""
    from training.data.snapshot import dataset_build

    cfg = train_config()
    snapshot = dataset_build(cfg=cfg, name=f"run-{timezone.now():%Y%m%d-%H%M%S-%f}")
    minimum = settings.TRAINING_MIN_EXAMPLES
    if snapshot.train_count < minimum:
        raise TrainingError(
            f"Training set too small: {snapshot.train_count} examples after cleaning "
            f"(snapshot {snapshot.name}); at least {minimum} are needed."
        )
    return snapshot


def starting_point(parent: ModelVersion, *, incremental: bool) -> tuple[str | None, str]:
    """(parent adapter or None, base model folder) of a run from `parent`: its adapter when
    it has one and the run is `incremental`, else the base model alone. The `train` command
    and the retraining run both start here."""
    adapter: str | None = parent.artifact_path
    if not (incremental and adapter and (Path(adapter) / "adapter_config.json").exists()):
        adapter = None
    return adapter, serving_target(parent).base_path


def artifact_dir(name: str) -> Path:
    """A new artifact folder's path under ARTIFACTS_DIR: `<name>-<UTC time>`."""
    return Path(settings.ARTIFACTS_DIR) / f"{name}-{timezone.now():%Y%m%d-%H%M%S}"


def train(
    *,
    snapshot: DatasetSnapshot,
    parent: ModelVersion,
    version_number: int,
    overrides: dict,
    progress,
) -> TrainOutcome:
    """LoRA fine-tune: incremental from the parent's adapter (new rows + replay) when it has
    one and `incremental` is on, else a full run from the base model. The artifact appears
    only when complete."""
    from training.train import finetune

    cfg = train_config(**(overrides or {}))
    parent_artifact, base_path = starting_point(parent, incremental=cfg.incremental)
    output = artifact_dir(f"v{version_number}")
    output.parent.mkdir(parents=True, exist_ok=True)

    def report(event: dict) -> None:
        step, total = event.get("step", 0), event.get("max_steps") or 0
        update = {"step": step, "total_steps": total}
        if total:
            update["progress"] = min(1.0, step / total)
        if "loss" in event:
            update["loss"] = event["loss"]
        if "eval_loss" in event:
            update["val_loss"] = event["eval_loss"]
        progress(update)

    result = finetune(
        cfg,
        snapshot_id=snapshot.pk,
        base_path=base_path,
        output_dir=output,
        parent_artifact=parent_artifact,
        progress=report,
    )
    metrics = {**result.metrics, "steps": result.steps, "stopped_early": result.stopped_early}
    return TrainOutcome(
        artifact_path=result.artifact_path,
        base_path=base_path,
        config=result.config or cfg.to_dict(),
        metrics=metrics,
    )


def regression_set() -> list[dict]:
    """Agents' regression cases (past corrections every new model must keep passing)."""
    from feedback.exports import regression_cases

    return [
        {
            "id": f"regression:{case['id']}",
            "kind": "regression",
            "prompt": case["prompt"],
            "expected": case["expected"],
            "correction_id": None,
            "topic": "regression",
        }
        for case in regression_cases()
        if case["prompt"] and case["prompt"][-1]["role"] == "user"
    ]


def evaluation_set(snapshot: DatasetSnapshot) -> list[dict]:
    """The cases both versions are scored on: the snapshot's frozen evaluation set (every
    correction case and the first TRAINING_EVAL_CASES others) plus the regression cases."""
    from training.evaluate import evaluation_cases

    return evaluation_cases(snapshot.pk, limit=settings.TRAINING_EVAL_CASES) + regression_set()


def evaluation_metrics(per_case: list[dict], *, corrections_floor: float) -> dict:
    """Flat means and rates from per-case scores (see training.evaluate.EvalReport)."""

    def mean(records: list[dict], key: str) -> float:
        return round(sum(r[key] for r in records) / len(records), 4) if records else math.nan

    seed = [c for c in per_case if c["kind"] == "seed"]
    corrections = [c for c in per_case if c["kind"] in ("correction", "regression")]
    passed = sum(1 for c in corrections if c["semantic_similarity"] >= corrections_floor)
    return {
        "cases": len(per_case),
        "semantic_similarity": mean(per_case, "semantic_similarity"),
        "rouge_l": mean(per_case, "rouge_l"),
        "token_f1": mean(per_case, "token_f1"),
        "seed_cases": len(seed),
        "seed_semantic_similarity": mean(seed, "semantic_similarity"),
        "seed_rouge_l": mean(seed, "rouge_l"),
        "corrections_cases": len(corrections),
        "corrections_passed": passed,
        "corrections_score": round(passed / len(corrections), 4) if corrections else None,
        **{
            metric: sum(check in c["safety"] for c in per_case) / max(1, len(per_case))
            for metric, check in SAFETY_CASE_CHECKS.items()
        },
    }


def case_fingerprint(case: dict, *, system: str, max_new_tokens: int, engine: bool | str) -> str:
    """What a greedy reply and its scores depend on, besides the model's weights. `engine`:
    True / False for the in-process bf16 / float32 replies, else the served format's name."""
    material = [system, case["prompt"], case["expected"], max_new_tokens, engine]
    return hashlib.sha1(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def version_evaluate(version: ModelVersion, *, cases: list[dict], progress=None) -> dict:
    """Score a version on `cases`: flat metrics for the dashboard plus `per_case` scores
    for the gate. Where model servers serve the replies (and TRAINING_EVAL_SERVED), the
    version is scored as customers get it: its GGUF on a llama-server of the run's own
    (`evaluate_served`); otherwise by batched greedy replies in bf16 where the hardware has it.

    Greedy replies of fixed weights do not change, so a case this version was already scored
    on (same prompt, reference, system prompt and settings; kept in its
    `metrics["scored_cases"]`) is not generated again: the active version is mostly scored
    by its own run, and later runs only score it on cases added since.
    """
    from chatbot.serving.cluster import remote_serving
    from training.evaluate import engine_label, evaluate_artifact, evaluate_served
    from training.train import bf16_usable, system_prompt_for_training

    target = serving_target(version)
    served = remote_serving() and settings.TRAINING_EVAL_SERVED
    bf16 = not served and train_config().bf16 and bf16_usable()
    # In-process scores keep their old key material (True / False), so stored ones still match.
    engine: bool | str = engine_label(served=True, bf16=False) if served else bf16
    tokens = settings.TRAINING_EVAL_MAX_NEW_TOKENS
    system = system_prompt_for_training()
    keys = [case_fingerprint(c, system=system, max_new_tokens=tokens, engine=engine) for c in cases]
    known = dict((version.metrics or {}).get("scored_cases", {}))
    todo = [(key, case) for key, case in zip(keys, cases, strict=True) if key not in known]
    seconds, samples = 0.0, []
    if todo:
        if served:
            report = evaluate_served(
                target, cases=[case for _, case in todo], max_new_tokens=tokens, progress=progress
            )
        else:
            report = evaluate_artifact(
                target.artifact_path,
                base_path=target.base_path,
                cases=[case for _, case in todo],
                max_new_tokens=tokens,
                batch_size=settings.TRAINING_EVAL_BATCH_SIZE,
                bf16=bf16,
                loss=False,
                progress=progress,
            )
        known.update({key: record for (key, _), record in zip(todo, report.per_case, strict=True)})
        seconds, samples = report.seconds, report.samples
    elif progress:
        progress({"done": len(cases), "total": len(cases)})
    per_case = [
        {
            **known[key],
            "id": case["id"],
            "kind": case.get("kind", "seed"),
            "correction_id": case.get("correction_id"),
        }
        for key, case in zip(keys, cases, strict=True)
    ]
    version.metrics = {**(version.metrics or {}), "scored_cases": {k: known[k] for k in keys}}
    ModelVersion.objects.filter(pk=version.pk).update(metrics=version.metrics)
    return {
        **evaluation_metrics(
            per_case, corrections_floor=settings.TRAINING_CORRECTIONS_MIN_SIMILARITY
        ),
        "bf16": bf16,
        "engine": engine_label(served=served, bf16=bf16),
        "seconds": seconds,
        "generated": len(todo),
        "reused": len(cases) - len(todo),
        "samples": samples,
        "per_case": per_case,
    }


def evaluation_samples_forget(*, correction_ids: set[int], regression_case_ids: set[int]) -> int:
    """Drop from every version's stored evaluation samples (prompt, reference, reply in
    full) those of these corrections' and regression cases' evaluation cases, and samples
    with no case id (stored before samples named their case: they cannot be told apart);
    customer-data deletion. Returns how many went."""
    regression = {f"regression:{pk}" for pk in regression_case_ids}

    def drawn_from(sample: dict) -> bool:
        return (
            "id" not in sample
            or sample.get("correction_id") in correction_ids
            or sample["id"] in regression
        )

    removed = 0
    for version in ModelVersion.objects.filter(metrics__has_key="evaluation"):
        metrics = version.metrics
        changed = 0
        for evaluation in (
            metrics["evaluation"],
            metrics.get("compared_with", {}).get("evaluation"),
        ):
            samples = (evaluation or {}).get("samples") or []
            kept = [sample for sample in samples if not drawn_from(sample)]
            if len(kept) < len(samples):
                evaluation["samples"] = kept
                changed += len(samples) - len(kept)
        if changed:
            ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
            removed += changed
    return removed


def feedback_count_since(moment: datetime | None) -> int:
    from feedback.exports import feedback_count_since as count

    return count(moment)
