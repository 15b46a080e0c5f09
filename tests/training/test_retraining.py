"""Retraining runs end to end: data -> LoRA -> evaluation -> gate, inline and on real workers."""

import os
import signal
import time
from pathlib import Path

import pytest

from training.models import ModelVersion, TrainingRun
from training.registry import base_version_ensure
from training.runs import TrainingBusy, run_execute, run_request

TINY_TRAINING_ENV = {
    "TRAINING_LEARNING_RATE": "5e-3",
    "TRAINING_BATCH_SIZE": "4",
    "TRAINING_EPOCHS": "2",
    "TRAINING_MAX_LENGTH": "512",
    "TRAINING_LORA_R": "8",
    "TRAINING_LORA_ALPHA": "16",
    "TRAINING_LORA_DROPOUT": "0.0",
    "TRAINING_EVAL_STEPS": "5",
    "TRAINING_VALIDATION_SHARE": "0.25",
    "TRAINING_NEAR_DUPLICATE_THRESHOLD": "0.999",
    "TRAINING_WARMUP_RATIO": "0.0",
    "TRAINING_BF16": "false",
    "TRAINING_MAX_EVAL_EXAMPLES": "4",
    "TRAINING_MIN_EXAMPLES": "10",
    "TRAINING_EVAL_CASES": "6",
    "TRAINING_EVAL_MAX_NEW_TOKENS": "6",
    "SHOP_POLICIES": "Returns within 30 days.",
}


@pytest.fixture
def tiny_training(settings, monkeypatch, tiny_model, data_dir):
    for key, value in TINY_TRAINING_ENV.items():
        monkeypatch.setenv(key, value)
    settings.TRAINING_ENV = {
        k[len("TRAINING_") :].lower(): v
        for k, v in TINY_TRAINING_ENV.items()
        if k.startswith("TRAINING_")
    }
    settings.TRAINING_MIN_EXAMPLES = 10
    settings.TRAINING_EVAL_CASES = 6
    settings.TRAINING_EVAL_MAX_NEW_TOKENS = 6
    return settings


def queued_run(**kwargs) -> TrainingRun:
    base_version_ensure()
    return TrainingRun.objects.create(requested_by="test", **kwargs)


@pytest.mark.django_db
def test_a_candidate_that_passes_the_gate_is_promoted(tiny_training, seed_corpus):
    tiny_training.TRAINING_GATE_MIN_IMPROVEMENT = -1.0  # any quality passes; safety still checked
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded", run.error
    candidate = run.candidate
    assert candidate.status == "active" and candidate.parent.number == 1
    assert (Path(candidate.artifact_path) / "adapter_config.json").exists()
    assert candidate.metrics["evaluation"]["cases"] > 0
    assert candidate.metrics["compared_with"]["version"] == 1
    assert run.loss_history and run.progress == 1.0
    assert ModelVersion.objects.get(number=1).status == "retired"


@pytest.mark.django_db
def test_a_candidate_below_the_margin_is_rejected_with_the_reason(tiny_training, seed_corpus):
    tiny_training.TRAINING_GATE_MIN_IMPROVEMENT = 10.0
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded"
    candidate = run.candidate
    assert candidate.status == "rejected"
    assert "does not beat the active version by the margin 10.0" in candidate.status_reason
    assert ModelVersion.objects.get(number=1).status == "active"


@pytest.mark.django_db
def test_a_training_set_too_small_fails_the_run_clearly(tiny_training, seed_corpus):
    tiny_training.TRAINING_MIN_EXAMPLES = 1000
    run = run_execute(queued_run().pk)
    assert run.status == "failed"
    assert "Training set too small" in run.error and "at least 1000" in run.error
    assert list(ModelVersion.objects.values_list("number", "status")) == [(1, "active")]


@pytest.mark.django_db
def test_a_cancel_request_stops_a_running_run(tiny_training, seed_corpus):
    run = queued_run(cancel_requested=True)
    result = run_execute(run.pk)
    assert result.status == "cancelled"
    assert ModelVersion.objects.get(status="active").number == 1


@pytest.mark.django_db
def test_run_execute_is_idempotent(tiny_training, seed_corpus):
    run = queued_run(status="failed")
    assert run_execute(run.pk) is None
    run.refresh_from_db()
    assert run.status == "failed"


@pytest.mark.django_db(transaction=True)
def test_only_one_run_at_a_time():
    base_version_ensure()
    TrainingRun.objects.create(requested_by="first", status="running")
    with pytest.raises(TrainingBusy, match="already running"):
        run_request(requested_by="second")
    assert TrainingRun.objects.count() == 1


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_real_worker_retrains_and_chat_serves_the_new_version(
    tiny_training, seed_corpus, celery_worker_proc, chat_socket, customer_session
):
    from channels.db import database_sync_to_async

    from tests.conftest import frames_until

    worker = await database_sync_to_async(celery_worker_proc)(
        **TINY_TRAINING_ENV, TRAINING_GATE_MIN_IMPROVEMENT="-1"
    )
    run = await database_sync_to_async(run_request)(requested_by="test")

    def finished():
        run.refresh_from_db()
        return run.status not in TrainingRun.ACTIVE_STATES

    await database_sync_to_async(wait_for)(finished, 240, "the run to finish")
    assert run.status == "succeeded", run.error + worker.log_path.read_text()[-2000:]
    new_version = await database_sync_to_async(lambda: run.candidate.number)()
    active = await database_sync_to_async(ModelVersion.objects.get)(status="active")
    assert active.number == new_version == 2

    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": "Where is my parcel?"})
    reply = (await frames_until(ws, "bot_message", timeout=60))[-1]
    assert reply["model_version"] == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_leaves_the_run_failed_and_the_active_version_untouched(
    tiny_training, seed_corpus, celery_worker_proc, tmp_path
):
    slow = {**TINY_TRAINING_ENV, "TRAINING_EPOCHS": "500", "TRAINING_EVAL_STEPS": "1000"}
    worker = celery_worker_proc(**slow)
    run = run_request(requested_by="test")

    def training_started():
        run.refresh_from_db()
        return run.status == "running" and run.step >= 1

    wait_for(training_started, 120, "training to start")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    run.refresh_from_db()
    assert run.status == "running"  # nobody has noticed yet

    celery_worker_proc(**slow)  # the next worker start settles it

    def settled():
        run.refresh_from_db()
        return run.status == "failed"

    wait_for(settled, 60, "the run to be marked failed")
    assert "Worker lost" in run.error
    assert ModelVersion.objects.get(status="active").number == 1
    candidate = run.candidate
    assert candidate.status == "rejected"
    # Nothing half-written can be served: no finished artifact folder appeared.
    assert not candidate.artifact_path
    worker_artifacts = tmp_path / "artifacts"  # the worker's ARTIFACTS_DIR
    assert not list(worker_artifacts.glob("*/adapter_config.json"))
