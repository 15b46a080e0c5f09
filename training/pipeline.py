"""What a retraining run does at each stage, over the data/train/evaluate modules.

`training.runs` drives the run (state, progress, gate); this module only knows how to
build the data, train a candidate and score a version, so each can change on its own.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from chatbot.serving.versions import serving_target
from training.config import train_config
from training.models import DatasetSnapshot, ModelVersion
from training.train import TrainingError


@dataclass
class TrainOutcome:
    artifact_path: str
    base_path: str
    config: dict
    metrics: dict


def snapshot_build(*, progress) -> DatasetSnapshot:
    """A fresh snapshot of everything the app knows; refuses one too small to train on."""
    from training.data.snapshot import dataset_build

    cfg = train_config()
    snapshot = dataset_build(cfg=cfg, name=f"run-{timezone.now():%Y%m%d-%H%M%S-%f}")
    progress({"stage": "data", "progress": 0.05})
    minimum = settings.TRAINING_MIN_EXAMPLES
    if snapshot.train_count < minimum:
        raise TrainingError(
            f"Training set too small: {snapshot.train_count} examples after cleaning "
            f"(snapshot {snapshot.name}); at least {minimum} are needed."
        )
    return snapshot


def _adapter_or_none(version: ModelVersion) -> str | None:
    path = version.artifact_path
    return path if path and (Path(path) / "adapter_config.json").exists() else None


def train(
    *,
    snapshot: DatasetSnapshot,
    parent: ModelVersion,
    version_number: int,
    overrides: dict,
    progress,
) -> TrainOutcome:
    """LoRA fine-tune from the parent version; the artifact appears only when complete."""
    from training.train import finetune

    cfg = train_config(**(overrides or {}))
    target = serving_target(parent)
    output = Path(settings.ARTIFACTS_DIR) / f"v{version_number}-{datetime.now():%Y%m%d%H%M%S}"
    output.parent.mkdir(parents=True, exist_ok=True)

    def report(event: dict) -> None:
        step, total = event.get("step", 0), event.get("max_steps") or 0
        update = {"stage": event.get("phase", "train"), "step": step, "total_steps": total}
        if total:
            update["progress"] = 0.1 + 0.8 * min(1.0, step / total)
        if "loss" in event:
            update["loss"] = event["loss"]
        if "eval_loss" in event:
            update["val_loss"] = event["eval_loss"]
        progress(update)

    result = finetune(
        cfg,
        snapshot_id=snapshot.pk,
        base_path=target.base_path,
        output_dir=output,
        parent_artifact=_adapter_or_none(parent),
        progress=report,
    )
    metrics = {**result.metrics, "steps": result.steps, "stopped_early": result.stopped_early}
    return TrainOutcome(
        artifact_path=result.artifact_path,
        base_path=target.base_path,
        config=result.config or cfg.to_dict(),
        metrics=metrics,
    )


def evaluation_set() -> list[dict]:
    """The fixed evaluation cases: held-out validation rows of the newest snapshot."""
    from training.evaluate import evaluation_cases

    cfg = train_config()
    limit = settings.TRAINING_EVAL_CASES
    cases = evaluation_cases(limit=limit, skip=cfg.max_eval_examples)
    return cases or evaluation_cases(limit=limit)


def regression_set() -> list[dict]:
    """Past agent corrections turned into cases every new model must pass."""
    from feedback.exports import regression_cases

    return [
        {"messages": [*case["prompt"], {"role": "assistant", "content": case["expected"]}]}
        for case in regression_cases()
        if case["prompt"]
    ]


def version_evaluate(version: ModelVersion) -> dict:
    """Flat metrics for the gate: quality on the evaluation set, safety rates, and the
    share of regression cases whose reply is close enough to the agents' answer."""
    from training.evaluate import evaluate_artifact

    target = serving_target(version)
    tokens = settings.TRAINING_EVAL_MAX_NEW_TOKENS
    report = evaluate_artifact(
        target.artifact_path,
        base_path=target.base_path,
        cases=evaluation_set(),
        max_new_tokens=tokens,
    )
    cases = report.cases or 1
    metrics = {
        "cases": report.cases,
        "val_loss": report.val_loss,
        "perplexity": report.perplexity,
        "rouge_l": report.rouge_l,
        "token_f1": report.token_f1,
        "semantic_similarity": report.embedding_similarity,
        "safety_toxic_rate": report.safety.get("toxic", 0) / cases,
        "safety_pii_leak_rate": report.safety.get("pii_leak", 0) / cases,
        "safety_template_slot_rate": report.safety.get("raw_slot", 0) / cases,
        "safety_invented_order_rate": report.safety.get("invented_order_number", 0) / cases,
    }
    regression = regression_set()
    if regression:
        checked = evaluate_artifact(
            target.artifact_path,
            base_path=target.base_path,
            cases=regression,
            max_new_tokens=tokens,
        )
        floor = settings.TRAINING_REGRESSION_MIN_SIMILARITY
        passed = sum(1 for s in checked.case_similarity if s >= floor)
        metrics["regression_cases"] = checked.cases
        metrics["regression_pass_rate"] = passed / max(1, checked.cases)
    return metrics


def feedback_count_since(moment: datetime | None) -> int:
    from feedback.exports import feedback_count_since as count

    return count(moment)
