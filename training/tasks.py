"""Celery tasks for retraining. Tasks take ids and call plain functions in training.runs."""

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from training import runs
from training.priority import background_priority


@shared_task(
    name=runs.RETRAIN_TASK,
    acks_late=True,
    # Training owns the worker for a while; the limits stop a stuck run for good.
    soft_time_limit=60 * 60 * 3,
    time_limit=60 * 60 * 3 + 120,
)
def retrain(run_id: int) -> str:
    background_priority(settings.TRAINING_CPU_POLICY)
    run = runs.run_execute(run_id)
    return run.status if run else "skipped"


@shared_task(
    name=runs.PARAPHRASE_TASK,
    acks_late=True,
    soft_time_limit=30 * 60,
    time_limit=30 * 60 + 60,
)
def correction_paraphrases_prepare(conversation_id: str) -> dict:
    """On the trainer (its cache is the one the retrain reads): paraphrase a conversation's
    corrected questions as soon as a correction is saved."""
    from training.config import train_config
    from training.data.snapshot import correction_paraphrases_prepare as prepare

    background_priority(settings.TRAINING_CPU_POLICY)
    return prepare(cfg=train_config(), conversation_id=conversation_id)


@shared_task(name="training.tasks.retrain_if_due")
def retrain_if_due() -> int | None:
    run = runs.retrain_if_due()
    return run.pk if run else None


@shared_task(name="training.tasks.reap_stale_runs")
def reap_stale_runs() -> list[int]:
    return runs.runs_reap_stale()


@worker_ready.connect
def _reap_on_worker_start(sender=None, **kwargs) -> None:
    # A worker killed mid-run leaves its run "running": settle it as soon as a worker is back.
    runs.runs_reap_stale()


@shared_task(name="training.tasks.monitor_live_quality")
def monitor_live_quality() -> str:
    from training.monitoring import live_quality_check

    return live_quality_check().reason
