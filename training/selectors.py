"""Reads for the training dashboard and commands."""

from django.utils import timezone

from training.gate import QUALITY_DIRECTIONS, SAFETY_METRICS
from training.models import ModelVersion, TrainingRun

STAGES = ("data", "train", "evaluate_candidate", "evaluate_active", "gate")

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


def eta_estimate(
    *, stage: str, elapsed: float, done: int, total: int, timings: dict, previous: dict
) -> dict:
    """Seconds left in the current stage and in the whole run.

    The current stage extrapolates its rate so far (training steps/s, evaluated cases/s);
    without progress yet it takes the previous run's duration of that stage. Later stages
    take the previous run's durations, except the active version's evaluation, which scores
    the same cases as the candidate's and is expected to take as long. `eta_seconds` is None
    while some remaining stage has no estimate yet.
    """
    if stage not in STAGES:
        return {"stage_eta_seconds": None, "eta_seconds": None}

    def duration(name: str) -> float | None:
        if name == "evaluate_active" and "evaluate_candidate" in timings:
            return timings["evaluate_candidate"]
        if name == "gate":
            return previous.get(name, 0.0)  # arithmetic over stored scores
        return previous.get(name)

    left: float | None
    if done > 0 and total >= done:
        left = elapsed / done * (total - done)
    else:
        expected = duration(stage)
        left = None if expected is None else max(0.0, expected - elapsed)
    later = [duration(name) for name in STAGES[STAGES.index(stage) + 1 :]]
    known = [seconds for seconds in later if seconds is not None]
    left_total = None if left is None or len(known) < len(later) else left + sum(known)
    return {
        "stage_eta_seconds": None if left is None else round(left),
        "eta_seconds": None if left_total is None else round(left_total),
    }


def run_eta(run: TrainingRun) -> dict:
    """eta_estimate for a running run, from the last finished run's stage timings."""
    if run.status != TrainingRun.Status.RUNNING or not run.stage_started_at:
        return {"stage_eta_seconds": None, "eta_seconds": None}
    previous = (
        TrainingRun.objects.filter(status=TrainingRun.Status.SUCCEEDED)
        .exclude(pk=run.pk)
        .values_list("stage_timings", flat=True)
        .first()
    )
    return eta_estimate(
        stage=run.stage,
        elapsed=(timezone.now() - run.stage_started_at).total_seconds(),
        done=run.step,
        total=run.total_steps,
        timings=run.stage_timings or {},
        previous=previous or {},
    )


def run_status_data(run: TrainingRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "stage": run.stage,
        "stage_number": STAGES.index(run.stage) + 1 if run.stage in STAGES else None,
        "stages": len(STAGES),
        "progress": round(run.progress, 4),
        **run_eta(run),
        "stage_timings": run.stage_timings,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "step": run.step,
        "total_steps": run.total_steps,
        "loss_points": len(run.loss_history),
        "outcome": run.outcome,
        "error": run.error,
        "candidate": run.candidate.number if run.candidate else None,
    }


def snapshot_versions(snapshot_name: str) -> list[ModelVersion]:
    """The versions fine-tuned on a dataset snapshot, newest first."""
    return list(ModelVersion.objects.filter(data_snapshot=snapshot_name).order_by("-number"))


def version_training_rows(version: ModelVersion) -> tuple[list[dict], dict]:
    """The rows `version` was fine-tuned on (before weighting) and the new/replay mix, chosen
    again the way its run chose them (same snapshot, parent, seed and replay size).

    Raises DatasetError when it was not fine-tuned on a snapshot or the snapshot's files are gone.
    """
    import dataclasses

    from training.config import TrainConfig
    from training.data.snapshot import DatasetError, snapshot_get
    from training.train import train_rows_choose

    if not version.data_snapshot:
        raise DatasetError(f"v{version.number} was not fine-tuned on a dataset snapshot.")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in (version.config or {}).items() if k in known})
    parent = version.parent.artifact_path if version.parent and cfg.incremental else None
    return train_rows_choose(snapshot_get(version.data_snapshot), cfg=cfg, parent_artifact=parent)
