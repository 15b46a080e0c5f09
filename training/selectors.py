"""Reads for the training dashboard and commands."""

from training.gate import QUALITY_DIRECTIONS, SAFETY_METRICS
from training.models import ModelVersion, TrainingRun

KEY_METRICS = (*QUALITY_DIRECTIONS, *SAFETY_METRICS)


def version_evaluation(version: ModelVersion) -> dict:
    return (version.metrics or {}).get("evaluation", {})


def versions_table() -> list[ModelVersion]:
    return list(ModelVersion.objects.select_related("parent").order_by("-number"))


def runs_recent(limit: int = 20) -> list[TrainingRun]:
    return list(TrainingRun.objects.select_related("candidate")[:limit])


def metrics_side_by_side(candidate: ModelVersion) -> list[dict]:
    """Rows of (metric, candidate value, value of the version it was compared with)."""
    evaluation = version_evaluation(candidate)
    compared = (candidate.metrics or {}).get("compared_with", {}).get("evaluation", {})
    return [
        {"metric": name, "candidate": evaluation.get(name), "active": compared.get(name)}
        for name in KEY_METRICS
        if name in evaluation or name in compared
    ]


def run_status_data(run: TrainingRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "stage": run.stage,
        "progress": round(run.progress, 4),
        "step": run.step,
        "total_steps": run.total_steps,
        "loss_points": len(run.loss_history),
        "outcome": run.outcome,
        "error": run.error,
        "candidate": run.candidate.number if run.candidate_id else None,
    }
