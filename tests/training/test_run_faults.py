"""Runs under faults: a reaped run never touches the registry, monitoring and reaping never
wait behind training, and a broker outage never leaves a run queued for ever."""

import subprocess
import sys
import time

import pytest
from kombu.exceptions import OperationalError

# The retraining tests' fixtures: a learnable tiny model and short training settings.
from tests.training.test_retraining import (  # noqa: F401
    learnable_model_dir,
    queued_run,
    tiny_training,
)
from training import pipeline, runs
from training.models import ModelVersion, TrainingRun
from training.registry import base_version_ensure

pytestmark = pytest.mark.django_db(transaction=True)


def reap(run_id: int) -> None:
    """What the reaper does to a run it believes dead (status failed, candidate rejected)."""
    run = TrainingRun.objects.get(pk=run_id)
    runs._abandon(run.candidate, "worker lost: test")
    runs._finish(run, TrainingRun.Status.FAILED, error="Worker lost: test.")


@pytest.mark.usefixtures("tiny_training", "seed_corpus")
def test_a_run_reaped_during_its_data_stage_creates_no_version(monkeypatch):
    build = pipeline.snapshot_build
    run = queued_run()

    def build_then_reaped():
        snapshot = build()
        reap(run.pk)
        return snapshot

    monkeypatch.setattr(pipeline, "snapshot_build", build_then_reaped)
    runs.run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.error == "Worker lost: test."
    assert list(ModelVersion.objects.values_list("number", "status")) == [(1, "active")]


@pytest.mark.usefixtures("tiny_training", "seed_corpus")
def test_a_run_reaped_while_training_stops_and_never_promotes(monkeypatch):
    train = pipeline.train
    run = queued_run()

    def reaped_then_train(**kwargs):
        reap(run.pk)
        return train(**kwargs)

    monkeypatch.setattr(pipeline, "train", reaped_then_train)
    runs.run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and run.error == "Worker lost: test."
    versions = dict(ModelVersion.objects.values_list("number", "status"))
    assert versions == {1: "active", 2: "rejected"}
    assert not ModelVersion.objects.get(number=2).artifact_path  # stopped before saving


def test_a_broker_error_fails_the_run_instead_of_leaving_it_queued(monkeypatch):
    from chatbot.celery import app

    def broker_down(*args, **kwargs):  # fault injection: Redis unreachable
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    base_version_ensure()
    monkeypatch.setattr(app, "send_task", broker_down)
    run = runs.run_request(requested_by="test")
    run.refresh_from_db()
    assert run.status == "failed" and "Could not queue" in run.error
    monkeypatch.undo()
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: type("R", (), {"id": "t1"}))
    again = runs.run_request(requested_by="test")  # not refused as busy
    again.refresh_from_db()
    assert again.status == "queued" and again.task_id == "t1"


def test_an_inline_run_is_not_also_sent_to_the_trainer(monkeypatch):
    from chatbot.celery import app

    sent = []

    def send_task(*args, **kwargs):  # records what would reach the broker
        sent.append(args)
        return type("R", (), {"id": "t1"})

    monkeypatch.setattr(app, "send_task", send_task)
    base_version_ensure()
    run = runs.run_request(requested_by="test", enqueue=False)  # what `retrain --inline` asks
    run.refresh_from_db()
    assert run.status == "queued" and sent == []
    run.delete()
    runs.run_request(requested_by="test")
    assert sent == [(runs.RETRAIN_TASK,)]


def test_monitoring_and_reaping_never_go_to_the_training_queue():
    from chatbot.celery import app

    app.loader.import_default_modules()
    route = app.amqp.router.route
    assert route({}, "training.tasks.retrain")["queue"].name == "training"
    # Paraphrases go where the retrain reads its cache: the trainer.
    assert route({}, "training.tasks.correction_paraphrases_prepare")["queue"].name == "training"
    for name in (
        "training.tasks.monitor_live_quality",
        "training.tasks.reap_stale_runs",
        "training.tasks.retrain_if_due",
    ):
        assert route({}, name)["queue"].name == "celery", name


@pytest.mark.slow
def test_the_short_jobs_worker_reaps_while_the_trainer_is_busy(celery_worker_proc):
    from training.tasks import reap_stale_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base_version_ensure()
    celery_worker_proc(queues="celery")  # no trainer listening: it would be busy training
    # Created after the worker's own start-up reaping, so only the queued task can reap it.
    run = queued_run(status="running", worker=f"{runs.socket.gethostname()}:{dead.pid}")
    reap_stale_runs.delay()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == "failed":
            break
        time.sleep(0.25)
    assert run.status == "failed" and "worker process died" in run.error
