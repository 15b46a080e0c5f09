"""Retraining runs end to end: data -> LoRA -> evaluation -> gate, inline and on real workers."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.training.conftest import QUESTIONS
from training import pipeline
from training.data.snapshot import snapshot_get, snapshot_rows
from training.models import ModelVersion, SeedExample, TrainingRun
from training.registry import base_version_ensure, version_promote
from training.runs import TrainingBusy, run_cancel, run_execute, run_request

TINY_TRAINING_ENV = {
    "TRAINING_LEARNING_RATE": "3e-2",
    "TRAINING_BATCH_SIZE": "4",
    "TRAINING_GRAD_ACCUM": "1",
    "TRAINING_EPOCHS": "10",
    "TRAINING_INCREMENTAL_LEARNING_RATE": "3e-2",
    "TRAINING_INCREMENTAL_EPOCHS": "10",
    "TRAINING_REPLAY_EXAMPLES": "5",
    "TRAINING_MAX_LENGTH": "512",
    "TRAINING_LORA_R": "8",
    "TRAINING_LORA_ALPHA": "16",
    "TRAINING_LORA_DROPOUT": "0.0",
    "TRAINING_EVAL_STEPS": "50",
    # Validation rows are drawn by a hash of the conversation id: 0.25 drew 15 of these 36
    # rows, too few left to learn from; 0.1 leaves about 30.
    "TRAINING_VALIDATION_SHARE": "0.1",
    "TRAINING_NEAR_DUPLICATE_THRESHOLD": "0.999",
    "TRAINING_WARMUP_RATIO": "0.0",
    "TRAINING_BF16": "false",
    "TRAINING_MAX_EVAL_EXAMPLES": "4",
    "TRAINING_MIN_EXAMPLES": "10",
    # No seed rows drawn for the snapshot's own frozen set: these tests bring EVAL_CASES, and
    # the real-worker test scores on the validation rows (the fallback for an empty set).
    "TRAINING_EVAL_SEED_SHARE": "0",
    "TRAINING_EVAL_MAX_NEW_TOKENS": "12",
    "SHOP_POLICIES": "Returns within 30 days.",
}


# What the learnable tiny model needs to learn the wide corpus visibly (measured: 10 epochs
# with early stopping left the gain inside the bootstrap noise).
LEARN_ENV = {
    "TRAINING_EVAL_SEED_SHARE": "0.25",
    "TRAINING_VALIDATION_SHARE": "0.1",
    "TRAINING_EPOCHS": "20",
    "TRAINING_EARLY_STOPPING_PATIENCE": "0",
    # Rank 8 left the gain inside the noise on another CPU (train loss 9.3 -> 5.1 in 240
    # steps, gain +0.019, CI -0.013..+0.052); rank 32 learns the answers.
    "TRAINING_LORA_R": "32",
}


def learn_harder(settings) -> None:
    settings.TRAINING_ENV = {
        **settings.TRAINING_ENV,
        **{k[len("TRAINING_") :].lower(): v for k, v in LEARN_ENV.items()},
    }


@pytest.fixture(scope="module")
def learnable_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import tiny_model_build

    return tiny_model_build(tmp_path_factory.mktemp("learnable"), initializer_range=0.5)


@pytest.fixture
def tiny_training(settings, monkeypatch, tiny_model, learnable_model_dir, data_dir):
    settings.CHAT_BASE_MODEL_PATH = str(learnable_model_dir)
    for key, value in TINY_TRAINING_ENV.items():
        monkeypatch.setenv(key, value)
    settings.TRAINING_ENV = {
        k[len("TRAINING_") :].lower(): v
        for k, v in TINY_TRAINING_ENV.items()
        if k.startswith("TRAINING_")
    }
    settings.TRAINING_MIN_EXAMPLES = 10
    settings.TRAINING_EVAL_MAX_NEW_TOKENS = 12
    return settings


# The frozen evaluation set of these tests (the contract's eval.jsonl format): each seed
# question in a wording no snapshot trains on, with its true answer.
EVAL_CASES = [
    {
        "id": f"eval-{i}",
        "kind": "seed",
        "prompt": [{"role": "user", "content": f"Hi there, {question.lower()}"}],
        "expected": answer,
        "correction_id": None,
        "topic": "test",
    }
    for i, (question, answer) in enumerate(QUESTIONS)
]


@pytest.fixture
def frozen_eval(monkeypatch):
    """Every snapshot a run builds gets EVAL_CASES as its eval.jsonl."""
    build = pipeline.snapshot_build

    def build_with_eval():
        snapshot = build()
        path = Path(snapshot.path) / "eval.jsonl"
        path.write_text("".join(json.dumps(case) + "\n" for case in EVAL_CASES))
        return snapshot

    monkeypatch.setattr(pipeline, "snapshot_build", build_with_eval)
    return EVAL_CASES


def queued_run(**kwargs) -> TrainingRun:
    base_version_ensure()
    return TrainingRun.objects.create(requested_by="test", **kwargs)


@pytest.mark.django_db
def test_the_gate_promotes_a_learned_candidate_and_rejects_one_trained_on_scrambled_answers(
    tiny_training, wide_seed_corpus
):
    # The snapshot's own frozen evaluation set: a quarter of the 72 rows, drawn by hash.
    learn_harder(tiny_training)
    assert tiny_training.TRAINING_GATE_MIN_IMPROVEMENT > 0  # the default margin, not forced
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded", run.error
    candidate = run.candidate
    assert candidate.status == "active", candidate.status_reason
    assert candidate.parent.number == 1
    assert (Path(candidate.artifact_path) / "adapter_config.json").exists()
    evaluation = candidate.metrics["evaluation"]
    cases = len(evaluation["per_case"])
    assert evaluation["cases"] == cases >= 10
    assert candidate.metrics["compared_with"]["version"] == 1
    gate = candidate.metrics["gate"]
    assert gate["promote"] and gate["interval"]["low"] > 0 and gate["interval"]["cases"] == cases
    assert {c["name"] for c in gate["checks"]} >= {"primary", "corrections", "forgetting"}
    assert candidate.metrics["training"]["replay"]["mode"] == "full"
    assert run.loss_history and run.progress == 1.0 and run.stage == "done"
    assert set(run.stage_timings) == {
        "data",
        "train",
        "evaluate_candidate",
        "evaluate_active",
        "gate",
    }
    assert ModelVersion.objects.get(number=1).status == "retired"

    # Every training row's answer moved to another question (the frozen evaluation rows keep
    # theirs): the next run learns them (all rows new, from the active adapter) and the gate
    # refuses it, at the same positive margin.
    held_out = {case["id"] for case in evaluation["per_case"]}
    answers = [answer for _, answer in QUESTIONS]
    for seed in SeedExample.objects.all():
        if f"seed:{seed.source}:{seed.external_id}" in held_out:
            continue
        index = answers.index(seed.agent)
        seed.agent = answers[(index + 1) % len(answers)]
        seed.save()
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded", run.error
    scrambled = run.candidate
    assert scrambled.status == "rejected"
    assert scrambled.metrics["training"]["replay"]["mode"] == "incremental"
    assert scrambled.status_reason.startswith("reject: semantic_similarity gain ")
    assert "not above zero" in scrambled.status_reason
    assert scrambled.metrics["gate"]["interval"]["low"] <= 0
    # The active version was scored on these very cases by its own run: not generated again.
    judged_against = scrambled.metrics["compared_with"]["evaluation"]
    assert (judged_against["reused"], judged_against["generated"]) == (cases, 0)
    assert ModelVersion.objects.get(status="active") == candidate


@pytest.mark.django_db
def test_an_incremental_run_trains_on_new_rows_and_a_replay_sample(
    tiny_training, seed_corpus, frozen_eval
):
    first = run_execute(queued_run().pk).candidate
    assert first.metrics["training"]["replay"]["mode"] == "full"
    assert first.metrics["training"]["batches"] == "length-grouped"
    if first.status != "active":  # this test is about the data mix, not the gate
        version_promote(version_id=first.pk, actor="test", reason="setup", override=True)
    new_rows = [
        SeedExample(source="test", external_id=f"new-{i}", customer=q, agent=a)
        for i, (q, a) in enumerate(
            [
                ("Do you have a store in Oslo?", "Yes, our Oslo store is on Karl Johans gate."),
                ("Can I buy a gift wrap?", "Gift wrapping costs two euros per parcel."),
                ("Do you sell socks?", "Yes, socks come in packs of three."),
            ]
        )
    ]
    SeedExample.objects.bulk_create(new_rows)
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded", run.error
    training = run.candidate.metrics["training"]
    mix = training["replay"]
    new_keys = {r["key"] for r in snapshot_rows(snapshot_get(run.candidate.data_snapshot), "train")}
    old_keys = {r["key"] for r in snapshot_rows(snapshot_get(first.data_snapshot), "train")}
    assert mix["mode"] == "incremental"
    assert mix["new"] == len(new_keys - old_keys) >= 1
    assert mix["replayed"] == 5 and mix["replay_pool"] == len(new_keys & old_keys)
    assert training["train_examples"] == mix["new"] + mix["replayed"]
    # Batches drawn at random mix the new rows with replayed ones (length-grouped batches
    # put the short correction rows together).
    assert training["batches"] == "random, split by length within a step"
    # The candidate keeps 0.9 of its change over the parent (TRAINING_INCREMENTAL_KEEP).
    assert training["kept_of_change"] == 0.9
    assert run.candidate.parent == first


@pytest.mark.django_db
def test_a_candidate_below_the_margin_is_rejected_with_the_reason(tiny_training, wide_seed_corpus):
    learn_harder(tiny_training)
    tiny_training.TRAINING_GATE_MIN_IMPROVEMENT = 10.0
    run = run_execute(queued_run().pk)
    assert run.status == "succeeded"
    candidate = run.candidate
    assert candidate.status == "rejected"
    assert "below the margin 10.0" in candidate.status_reason
    assert ModelVersion.objects.get(number=1).status == "active"


@pytest.mark.django_db
def test_a_training_set_too_small_fails_the_run_clearly(tiny_training, seed_corpus):
    tiny_training.TRAINING_MIN_EXAMPLES = 1000
    run = run_execute(queued_run().pk)
    assert run.status == "failed"
    assert "Training set too small" in run.error and "at least 1000" in run.error
    assert list(ModelVersion.objects.values_list("number", "status")) == [(1, "active")]


@pytest.mark.django_db
def test_a_cancel_request_stops_a_running_run(tiny_training, seed_corpus, monkeypatch):
    run = queued_run()
    train = pipeline.train
    status_when_cancelled = []

    def train_cancelled_at_its_first_step(**kwargs):
        report = kwargs["progress"]

        def progress(update: dict) -> None:
            if not status_when_cancelled:  # the admin presses Cancel mid-training
                status_when_cancelled.append(TrainingRun.objects.get(pk=run.pk).status)
                run_cancel(run_id=run.pk, actor="admin")
            report(update)

        return train(**{**kwargs, "progress": progress})

    monkeypatch.setattr(pipeline, "train", train_cancelled_at_its_first_step)
    result = run_execute(run.pk)
    assert status_when_cancelled == ["running"]
    assert (result.status, result.outcome) == ("cancelled", "cancelled while running")
    assert ModelVersion.objects.get(status="active").number == 1
    assert not ModelVersion.objects.filter(status="candidate").exists()


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

    from tests.helpers import frames_until

    # The worker runs the whole loop at the default gate margin (nothing forced open). Its
    # snapshot's evaluation cases are whatever the data build holds out, so the verdict is
    # not fixed here (the gate's verdicts are tested inline above): when the gate rejects,
    # a reviewer's override (with a reason, audited) promotes it, as from the dashboard.
    env = {**TINY_TRAINING_ENV, "CHAT_BASE_MODEL_PATH": str(tiny_training.CHAT_BASE_MODEL_PATH)}
    worker = await database_sync_to_async(celery_worker_proc)(**env)
    run = await database_sync_to_async(run_request)(requested_by="test")

    def finished():
        run.refresh_from_db()
        return run.status not in TrainingRun.ACTIVE_STATES

    await database_sync_to_async(wait_for)(finished, 240, "the run to finish")
    assert run.status == "succeeded", run.error + worker.log_path.read_text()[-2000:]
    candidate = await database_sync_to_async(lambda: run.candidate)()
    assert candidate.number == 2 and candidate.metrics["gate"]["checks"]
    assert candidate.status_reason.startswith(("promote:", "reject:"))
    if candidate.status == "rejected":
        await database_sync_to_async(version_promote)(
            version_id=candidate.pk, actor="reviewer", reason="test: serve it", override=True
        )
    active = await database_sync_to_async(ModelVersion.objects.get)(status="active")
    assert active.number == 2

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


@pytest.mark.django_db(transaction=True)
def test_a_stage_beats_while_it_reports_nothing_and_records_its_duration(settings):
    from training.runs import run_stage

    settings.TRAINING_HEARTBEAT_SECONDS = 0.05
    run = queued_run(status="running")
    with run_stage(run.pk, "data"):
        run.refresh_from_db()
        started, first_beat = run.stage_started_at, run.heartbeat_at
        assert run.stage == "data" and first_beat == started
        time.sleep(0.5)  # a data build sends no progress of its own
        run.refresh_from_db()
        assert run.heartbeat_at > first_beat
    run.refresh_from_db()
    assert 0.4 <= run.stage_timings["data"] < 5
