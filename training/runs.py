"""Retraining runs: request, execute, cancel, reap.

`run_execute` is what the Celery task calls; it is idempotent (a run that is no longer
queued is left alone) and never touches the active version unless the gate says promote.
A run goes through the stages in `training.selectors.STAGES`; each records its progress
(steps or cases), a heartbeat every TRAINING_HEARTBEAT_SECONDS (also while a stage reports
nothing) and its duration in `stage_timings`, from which the dashboard estimates the ETA.
"""

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from training import pipeline
from training.gate import GatePolicy, gate_decide
from training.models import ModelVersion, TrainingRun
from training.registry import (
    base_version_ensure,
    version_create,
    version_promote,
    version_reject,
)

log = logging.getLogger(__name__)

# training/tasks.py registers the training task under this name; runs are sent to it by name
# because tasks.py calls into this module (no import circle).
RETRAIN_TASK = "training.tasks.retrain"
PARAPHRASE_TASK = "training.tasks.correction_paraphrases_prepare"


class TrainingBusy(Exception):
    """Another run is queued or running; only one at a time."""

    def __init__(self, run: TrainingRun | None):
        self.run = run
        super().__init__(
            f"Training run {run.pk} is already {run.status}; wait for it or cancel it."
            if run
            else "Another training run is already queued or running."
        )


class RunCancelled(Exception):
    pass


class RunAbandoned(Exception):
    """The run is no longer `running` in this worker (the reaper failed it): it must not
    create, promote or reject any version."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_unfinished() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE_STATES).first()


def run_request(
    *,
    requested_by: str,
    trigger: str = "manual",
    config: dict | None = None,
    enqueue: bool = True,
) -> TrainingRun:
    """Queue a retraining run, refusing while another is queued or running. With
    `enqueue=False` nothing is sent to the trainer: the caller runs it (`retrain --inline`)."""
    busy = run_unfinished()
    if busy:
        raise TrainingBusy(busy)
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                requested_by=requested_by, trigger=trigger, config=config or {}
            )
    except IntegrityError as exc:  # lost a race with a concurrent request
        raise TrainingBusy(run_unfinished()) from exc

    def enqueue_on_commit() -> None:
        try:
            result = current_app.send_task(RETRAIN_TASK, args=[run.pk], queue="training")
        except Exception as exc:  # noqa: BLE001 - a broker outage must not block retraining
            log.exception("Could not queue training run %s", run.pk)
            TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
                status=TrainingRun.Status.FAILED,
                error=f"Could not queue the run (broker unreachable?): {exc}",
                finished_at=timezone.now(),
            )
            return
        TrainingRun.objects.filter(pk=run.pk).update(task_id=result.id or "")

    if enqueue:
        transaction.on_commit(enqueue_on_commit)
    return run


def paraphrases_prepare_request(conversation_id) -> None:
    """Once the transaction commits, ask the trainer to paraphrase this conversation's
    corrected questions ahead of the next retrain. Best effort: without a broker or a trainer
    the retrain generates them itself."""

    def enqueue() -> None:
        try:
            current_app.send_task(PARAPHRASE_TASK, args=[str(conversation_id)], queue="training")
        except Exception:  # noqa: BLE001 - saving a correction never fails on the broker
            log.warning("Could not queue paraphrases for conversation %s", conversation_id)

    transaction.on_commit(enqueue)


def run_cancel(*, run_id: int, actor: str) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop at its next step."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status == TrainingRun.Status.QUEUED:
            _finish(run, TrainingRun.Status.CANCELLED, outcome=f"cancelled by {actor}")
        elif run.status == TrainingRun.Status.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
    return run


def _finish(run: TrainingRun, status: str, *, outcome: str = "", error: str = "") -> None:
    run.status = status
    run.outcome = outcome or run.outcome
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "outcome", "error", "finished_at"])


def _claim(run_id: int) -> TrainingRun | None:
    """queued -> running, exactly once (redelivered tasks find nothing to do)."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=worker_name(),
        stage="data",
    )
    return TrainingRun.objects.get(pk=run_id) if claimed else None


def _progress_recorder(run_id: int):
    def record(report: dict) -> None:
        """Store a progress report (training steps or evaluated cases); stop the run if
        cancel was asked."""
        update = {"heartbeat_at": timezone.now()}
        if "done" in report:
            report = {"step": report["done"], "total_steps": report["total"], **report}
            report["progress"] = report["done"] / max(1, report["total"])
        for key in ("step", "total_steps", "progress"):
            if key in report:
                update[key] = report[key]
        if not TrainingRun.objects.filter(
            pk=run_id, status=TrainingRun.Status.RUNNING, worker=worker_name()
        ).update(**update):
            raise RunAbandoned(f"run {run_id} is no longer running here")
        if "loss" in report or "val_loss" in report:
            point = {k: report[k] for k in ("step", "epoch", "loss", "val_loss") if k in report}
            run = TrainingRun.objects.get(pk=run_id)
            run.loss_history = [*run.loss_history, point]
            run.save(update_fields=["loss_history"])
        if TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists():
            raise RunCancelled()

    return record


def _heartbeat(run_id: int, stop: threading.Event, every: float) -> None:
    try:
        while not stop.wait(every):
            TrainingRun.objects.filter(pk=run_id).update(heartbeat_at=timezone.now())
    finally:
        connection.close()  # this thread's own database connection


@contextmanager
def _while_running(run_id: int):
    """A transaction holding the run's row, entered only while the run is still running in
    this worker; the reaper (which locks the same row) cannot fail it half-way through."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status != TrainingRun.Status.RUNNING or run.worker != worker_name():
            raise RunAbandoned(f"run {run_id} is {run.status}, no longer running here")
        yield run


@contextmanager
def run_stage(run_id: int, stage: str):
    """Enter a stage: progress reset, heartbeats from a side thread until it ends (a stage
    like the data build reports no progress of its own), its duration recorded."""
    started, now = time.monotonic(), timezone.now()
    TrainingRun.objects.filter(pk=run_id).update(
        stage=stage, stage_started_at=now, heartbeat_at=now, step=0, total_steps=0, progress=0.0
    )
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat,
        args=(run_id, stop, settings.TRAINING_HEARTBEAT_SECONDS),
        name=f"run-{run_id}-heartbeat",
        daemon=True,
    )
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        run = TrainingRun.objects.get(pk=run_id)
        run.stage_timings = {**run.stage_timings, stage: round(time.monotonic() - started, 1)}
        run.save(update_fields=["stage_timings"])


def gate_policy() -> GatePolicy:
    return GatePolicy(
        primary_metric=settings.TRAINING_GATE_PRIMARY_METRIC,
        primary_weighting=settings.TRAINING_GATE_PRIMARY_WEIGHTING,
        min_improvement=settings.TRAINING_GATE_MIN_IMPROVEMENT,
        max_quality_drop=settings.TRAINING_GATE_MAX_QUALITY_DROP,
        safety_tolerance=settings.TRAINING_GATE_SAFETY_TOLERANCE,
        safety_extra_cases=settings.TRAINING_GATE_SAFETY_EXTRA_CASES,
        safety_alpha=settings.TRAINING_GATE_SAFETY_ALPHA,
        corrections_min_similarity=settings.TRAINING_CORRECTIONS_MIN_SIMILARITY,
        forgetting_tolerance=settings.TRAINING_GATE_FORGETTING_TOLERANCE,
        bootstrap_resamples=settings.TRAINING_GATE_BOOTSTRAP_RESAMPLES,
    )


def run_execute(run_id: int) -> TrainingRun | None:
    """Carry a queued run through data, training, evaluation and the promotion gate."""
    run = _claim(run_id)
    if run is None:
        log.info("Run %s is not queued any more; nothing to do", run_id)
        return None
    candidate = None
    record = _progress_recorder(run.pk)
    try:
        active = base_version_ensure()
        with run_stage(run.pk, "data"):
            snapshot = pipeline.snapshot_build()
        with _while_running(run.pk):
            candidate = version_create(
                parent=active,
                data_snapshot=snapshot.name,
                config=run.config,
                created_by=f"training run {run.pk} ({run.requested_by})",
            )
            TrainingRun.objects.filter(pk=run.pk).update(candidate=candidate)
        with run_stage(run.pk, "train"):
            trained = pipeline.train(
                snapshot=snapshot,
                parent=active,
                version_number=candidate.number,
                overrides=run.config,
                progress=record,
            )
            # The model server's format (merged GGUF) is made before the gate and every file
            # goes to the artifact store, so a promotion is served within seconds on every
            # host, and a version that cannot be converted fails here, leaving the active one.
            from chatbot.serving.model_server import version_files_publish
            from chatbot.serving.versions import ServingTarget

            version_files_publish(
                ServingTarget(
                    version_id=candidate.pk,
                    version_number=candidate.number,
                    artifact_path=trained.artifact_path,
                    base_path=trained.base_path,
                )
            )
        with _while_running(run.pk):
            candidate.artifact_path = trained.artifact_path
            candidate.base_path = trained.base_path
            candidate.config = trained.config
            candidate.status = ModelVersion.Status.CANDIDATE
            candidate.metrics = {"training": trained.metrics}
            candidate.save()

        cases = pipeline.evaluation_set(snapshot)
        with run_stage(run.pk, "evaluate_candidate"):
            candidate_metrics = pipeline.version_evaluate(candidate, cases=cases, progress=record)
        with run_stage(run.pk, "evaluate_active"):
            active_metrics = pipeline.version_evaluate(active, cases=cases, progress=record)
        with run_stage(run.pk, "gate"):
            decision = gate_decide(
                candidate=candidate_metrics,
                active=active_metrics,
                policy=gate_policy(),
                new_correction_ids=trained.metrics.get("replay", {}).get("new_correction_ids", []),
            )
            with _while_running(run.pk):
                candidate.metrics = {
                    **candidate.metrics,
                    "evaluation": candidate_metrics,
                    "compared_with": {"version": active.number, "evaluation": active_metrics},
                    "gate": asdict(decision),
                }
                candidate.save(update_fields=["metrics"])
                actor = f"gate (run {run.pk})"
                if decision.promote:
                    version_promote(version_id=candidate.pk, actor=actor, reason=decision.summary)
                else:
                    version_reject(version_id=candidate.pk, actor=actor, reason=decision.summary)
        run.refresh_from_db()
        run.progress = 1.0
        run.stage = "done"
        run.save(update_fields=["progress", "stage"])
        _finish(
            run, TrainingRun.Status.SUCCEEDED, outcome=f"v{candidate.number}: {decision.summary}"
        )
    except RunAbandoned as exc:
        # Reaped while it worked: the reaper settled the run and its candidate already.
        log.warning("Training run %s stopped: %s", run.pk, exc)
    except RunCancelled:
        _abandon(candidate, "cancelled")
        run.refresh_from_db()
        _finish(run, TrainingRun.Status.CANCELLED, outcome="cancelled while running")
    except Exception as exc:  # noqa: BLE001 - any failure ends the run, shown with its error
        log.exception("Training run %s failed", run.pk)
        _abandon(candidate, f"training failed: {exc}")
        run.refresh_from_db()
        _finish(run, TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    return TrainingRun.objects.get(pk=run.pk)


def _abandon(candidate: ModelVersion | None, reason: str) -> None:
    if candidate is None:
        return
    candidate.refresh_from_db()
    if candidate.status in (ModelVersion.Status.TRAINING, ModelVersion.Status.CANDIDATE):
        version_reject(version_id=candidate.pk, actor="training run", reason=reason)


def runs_reap_stale(*, stale_after_seconds: int | None = None) -> list[int]:
    """Mark as failed the running runs whose worker is gone.

    A run is stale when its worker process on this host no longer exists, or when it has
    sent no heartbeat for `stale_after_seconds` (workers on other hosts). Called when a
    worker starts and periodically by beat.
    """
    stale_after = stale_after_seconds or settings.TRAINING_STALE_AFTER_SECONDS
    host = socket.gethostname()
    now = timezone.now()
    reaped = []
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING):
        run_host, _, pid = run.worker.rpartition(":")
        gone = run_host == host and pid.isdigit() and not _process_alive(int(pid))
        silent = run.heartbeat_at and (now - run.heartbeat_at).total_seconds() > stale_after
        if gone or silent:
            why = "its worker process died" if gone else f"no heartbeat for {stale_after} s"
            with transaction.atomic():
                locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
                if locked.status != TrainingRun.Status.RUNNING:
                    continue
                _abandon(locked.candidate, f"worker lost: {why}")
                _finish(locked, TrainingRun.Status.FAILED, error=f"Worker lost: {why}.")
            reaped.append(run.pk)
    return reaped


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:\tZ") for line in status)
    except OSError:
        return False


def feedback_since(moment) -> int:
    """New agent corrections and rated replies since `moment` (what makes a retrain due)."""
    return pipeline.feedback_count_since(moment)


def retrain_if_due(*, min_feedback: int | None = None) -> TrainingRun | None:
    """Queue a run when enough new feedback arrived since the last run started."""
    needed = settings.TRAINING_MIN_NEW_FEEDBACK if min_feedback is None else min_feedback
    last = TrainingRun.objects.exclude(status=TrainingRun.Status.CANCELLED).first()
    since = last.created_at if last else None
    new = feedback_since(since)
    if new < needed or run_unfinished():
        log.info("Retrain not due: %s new feedback items (need %s)", new, needed)
        return None
    return run_request(requested_by="schedule", trigger="schedule")
