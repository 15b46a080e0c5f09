"""The learning loop end to end, on a real Celery worker: an agent's console correction
answers the next customer from memory at once; a retrain trains on it (weighted, with
paraphrases the trainer wrote when the correction was saved) and the gate promotes the
model that learned; a retrain on scrambled answers is rejected with its reason. Tiny models,
real PostgreSQL, Redis and worker."""

import json
import os
import random
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import reverse

from chatbot.approved.store import answer_index_clear
from tests.helpers import frames_until
from tests.training.test_retraining import (  # noqa: F401 - fixtures
    TINY_TRAINING_ENV,
    learnable_model_dir,
    tiny_training,
)
from training.config import train_config
from training.data.snapshot import snapshot_get, snapshot_rows
from training.models import ModelVersion, SeedExample, TrainingRun
from training.runs import run_request

QUESTION = "How long is the warranty on a jacket?"
PARAPHRASE = "How long is the warranty for a jacket?"
POLICY = "Every jacket has a three year warranty."

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def new_session() -> str:
    store = SessionStore()
    store["customer"] = True
    store.create()
    return store.session_key


async def ask(question: str) -> dict:
    """A new customer asks once; the finished reply frame. The socket is closed before the
    long waits below (an idle test socket's Redis reads would time out)."""
    from channels.testing import WebsocketCommunicator

    from chatbot.asgi import application
    from tests.helpers import ws_headers

    session_key = await database_sync_to_async(new_session)()
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(session_key))
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_json_from(timeout=10)
    await communicator.send_json_to({"type": "customer_message", "text": question})
    frame = (await frames_until(communicator, "bot_message", timeout=60))[-1]
    await communicator.disconnect()
    return frame


def run_to_end(timeout: float = 900) -> TrainingRun:
    """Queue a run and wait for it (a bound for a loaded CI host, not a speed check)."""
    run = run_request(requested_by="test")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status not in TrainingRun.ACTIVE_STATES:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run.pk} did not finish: {run.status} {run.stage}")


async def test_correction_memory_retrain_and_gate(
    tiny_training,  # noqa: F811
    wide_seed_corpus,
    celery_worker_proc,
    settings,
):
    from feedback.agents import agent_create

    answer_index_clear()
    settings.KNOWLEDGE_RETRIEVAL = False
    agent = await database_sync_to_async(agent_create)(
        username="alice", password="s3cret-Agent-pass", first_name="Alice"
    )

    # 1. A customer asks; the bot (tiny model) answers something useless.
    reply = await ask(QUESTION)
    assert reply["reply_kind"] == "model"

    # 2. The agent corrects it in the console and adds it to the regression set.
    def console_correct() -> None:
        client = Client()
        client.force_login(agent)
        for action, data in (("correct", {"text": POLICY}), ("regression", {})):
            url = reverse("feedback:message_action", args=[reply["message_id"], action])
            assert client.post(url, data).status_code == 302

    await database_sync_to_async(console_correct)()

    # 3. The next customer, in other words, gets the corrected answer at once.
    remembered = await ask(PARAPHRASE)
    assert remembered["text"] == POLICY and remembered["reply_kind"] == "approved"
    assert remembered["sources"][0]["title"] == "Approved answer, corrected by Alice"

    # 4. A retrain on a real worker trains on the correction and the gate promotes it.
    worker_env = {
        **TINY_TRAINING_ENV,
        "CHAT_BASE_MODEL_PATH": settings.CHAT_BASE_MODEL_PATH,
        # A quarter of the 72-row test corpus is the frozen evaluation set (12 % by default).
        "TRAINING_EVAL_SEED_SHARE": "0.25",
        "TRAINING_VALIDATION_SHARE": "0.1",
        # 20 epochs learned too little on another CPU (gain +0.038, 95 % CI from -0.005);
        # 40 give +0.125 (CI +0.059..+0.189).
        "TRAINING_EPOCHS": "40",
        "TRAINING_EARLY_STOPPING_PATIENCE": "0",
    }
    worker = await database_sync_to_async(celery_worker_proc)(**worker_env)
    run = await database_sync_to_async(run_to_end)()
    log = await database_sync_to_async(lambda: run.error)()
    assert run.status == "succeeded", log
    # The trainer ran in the background CPU class: every one of its threads (torch's too).
    tids = os.listdir(f"/proc/{worker.pid}/task")
    assert {os.sched_getscheduler(int(tid)) for tid in tids} == {os.SCHED_IDLE}
    # ... and its torch threads sleep while they wait (set before torch loaded).
    assert "torch loaded before the worker started" not in Path(worker.log_path).read_text()

    def trained_rows() -> tuple[list[dict], dict, ModelVersion]:
        candidate = ModelVersion.objects.get(pk=run.candidate_id)
        snapshot = snapshot_get(candidate.data_snapshot)
        return snapshot_rows(snapshot, "train"), snapshot.report, candidate

    rows, report, candidate = await database_sync_to_async(trained_rows)()
    corrections = [r for r in rows if r["source"] == "correction"]
    assert [r["messages"][-1]["content"] for r in corrections] == [POLICY]
    assert corrections[0]["weight"] == train_config().correction_weight > 1
    assert report["paraphrases"]["questions"] == 1  # augmentation ran (tiny-model garbage
    # is filtered out by meaning, so no paraphrase rows here; the data tests cover the rows)
    # ... from the cache: the worker wrote them when the correction was saved (its task was
    # queued before the run's).
    assert report["paraphrases"]["generated"] == 0
    assert candidate.status == "active", candidate.status_reason
    assert candidate.metrics["gate"]["interval"]["low"] > 0

    # 5. Scrambled answers in every training row (the frozen evaluation rows keep the true
    # answers): the next candidate learns them and is rejected; the active version stays.
    held_out = {case["id"] for case in candidate.metrics["evaluation"]["per_case"]}

    def scramble() -> None:
        seeds = [
            s
            for s in SeedExample.objects.all()
            if f"seed:{s.source}:{s.external_id}" not in held_out
        ]
        answers = [s.agent for s in seeds]
        random.Random(0).shuffle(answers)
        for seed, answer in zip(seeds, answers, strict=True):
            seed.agent = answer
        SeedExample.objects.bulk_update(seeds, ["agent"])

    await database_sync_to_async(scramble)()
    scrambled = await database_sync_to_async(run_to_end)()
    assert scrambled.status == "succeeded", scrambled.error
    rejected = await database_sync_to_async(ModelVersion.objects.get)(pk=scrambled.candidate_id)
    assert rejected.status == "rejected"
    assert rejected.status_reason, "the reason is recorded"
    active = await database_sync_to_async(ModelVersion.objects.get)(status="active")
    assert active.pk == candidate.pk
    assert json.dumps(rejected.metrics["gate"])  # the checks are stored with the version
    assert Path(candidate.artifact_path).exists()
