"""Personal data leaves every store: dataset snapshots on disk, regression cases past
retention, expired sessions."""

import json
from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from chatbot.models import Conversation
from feedback import services
from feedback.models import RegressionCase
from training.models import DatasetSnapshot

pytestmark = pytest.mark.django_db


def snapshot_with(tmp_path, rows: dict[str, list[dict]]) -> DatasetSnapshot:
    folder = tmp_path / "datasets" / "s1"
    folder.mkdir(parents=True)
    for name, lines in rows.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    return DatasetSnapshot.objects.create(name="s1", path=str(folder))


def test_deleting_a_customer_removes_their_rows_from_every_dataset_snapshot(
    tmp_path, agent, make_conversation
):
    mine, (_, bot) = make_conversation(
        [("customer", "mail me at jane@example.com"), ("bot", "ok")], session_key="k1"
    )
    other, _ = make_conversation([("customer", "someone else")], session_key="k2")
    correction = services.correction_submit(message_id=bot.id, agent=agent, text="Sure, Jane.")
    mine_row = {"conversation_id": str(mine.id), "messages": [{"content": "jane@example.com"}]}
    other_row = {"conversation_id": str(other.id), "messages": [{"content": "someone else"}]}
    paraphrase = {"id": "p1", "correction_id": correction.id, "expected": "Sure, Jane."}
    seed = {"id": "seed:1", "correction_id": None, "expected": "Returns take 30 days."}
    snapshot = snapshot_with(
        tmp_path,
        {
            "train.jsonl": [mine_row, other_row, paraphrase],
            "validation.jsonl": [mine_row],
            "eval.jsonl": [seed, paraphrase],
        },
    )

    counts = services.customer_data_delete(session_key="k1", actor=agent)

    assert counts["snapshot_rows"] == 4
    folder = tmp_path / "datasets" / "s1"
    on_disk = "".join(p.read_text() for p in folder.glob("*"))
    assert "jane" not in on_disk.lower() and str(mine.id) not in on_disk
    assert [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()] == [
        other_row
    ]
    assert (folder / "eval.jsonl").read_text() == json.dumps(seed) + "\n"
    assert DatasetSnapshot.objects.get(pk=snapshot.pk)  # the snapshot itself stays usable


def test_deleting_a_customer_removes_the_cached_paraphrases_of_their_questions(
    tmp_path, agent, make_conversation, settings
):
    from training.data.paraphrase import _cache_path

    settings.DATA_DIR = tmp_path
    mine, (_, bot) = make_conversation(
        [("customer", "jane here, can I return boots?"), ("bot", "no")], session_key="k1"
    )
    correction = services.correction_submit(message_id=bot.id, agent=agent, text="Yes, 45 days.")
    question, other_question = "jane here, can I return boots?", "can I return a tent?"
    row = {
        "source": "correction",
        "correction_id": correction.id,
        "messages": [{"content": question}, {"content": "Yes, 45 days."}],
    }
    snapshot_with(tmp_path, {"train.jsonl": [row]})
    cached = [_cache_path(tmp_path / "models" / name, question) for name in ("base", "other")]
    kept = _cache_path(tmp_path / "models" / "base", other_question)
    for path in [*cached, kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"candidates": ["jane asks about boots?"]}))

    services.customer_data_delete(session_key="k1", actor=agent)

    assert not any(path.exists() for path in cached)
    assert kept.exists()


def test_retention_leaves_no_personal_data_in_regression_cases(agent, make_conversation, settings):
    old, (_, bot) = make_conversation(
        [
            ("customer", "I'm jane@example.com, call +44 20 7946 0958"),
            ("bot", "Hi jane@example.com"),
        ]
    )
    services.correction_submit(message_id=bot.id, agent=agent, text="Hello! Mail jane@example.com")
    case = services.regression_case_add(message_id=bot.id, agent=agent)
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=400))

    assert services.conversations_purge(older_than_days=365) == 1
    case.refresh_from_db()
    kept = json.dumps(case.prompt) + case.expected
    assert "jane@example.com" not in kept and "7946" not in kept
    assert case.expected.startswith("Hello! Mail ")  # still a usable evaluation case
    assert RegressionCase.objects.count() == 1


def test_beat_clears_expired_sessions():
    from chatbot.schedule import DEFAULT_JOBS
    from chatbot.tasks import sessions_clear

    expired, live = SessionStore(), SessionStore()
    expired.set_expiry(-60)
    expired.create()
    live.create()
    assert "chatbot.tasks.sessions_clear" in {task for _, task, _ in DEFAULT_JOBS}
    sessions_clear()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_deleting_a_customer_also_rewrites_the_artifact_store_copy(
    tmp_path, settings, agent, make_conversation
):
    """A snapshot made on the trainer host lives in the artifact store too: other hosts read
    it from there, and deleting a customer removes their rows there, old blobs included."""
    import shutil

    from chatbot.artifacts import artifact_push
    from training.data.snapshot import snapshot_artifact_name, snapshot_rows

    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    mine, _ = make_conversation([("customer", "mail me at jane@example.com")], session_key="k1")
    mine_row = {"conversation_id": str(mine.id), "messages": [{"content": "jane@example.com"}]}
    other_row = {"conversation_id": "someone-else", "messages": [{"content": "hello"}]}
    seed = {"id": "seed:1", "correction_id": None, "expected": "Returns take 30 days."}
    snapshot = snapshot_with(
        tmp_path,
        {"train.jsonl": [mine_row, other_row], "eval.jsonl": [seed]},
    )
    artifact_push(tmp_path / "datasets" / "s1", name=snapshot_artifact_name("s1"))
    shutil.rmtree(tmp_path / "datasets")  # this host never had the trainer's folder
    assert snapshot_rows(snapshot, "train") == [mine_row, other_row]  # read from the store

    counts = services.customer_data_delete(session_key="k1", actor=agent)

    assert counts["snapshot_rows"] == 1
    stored = "".join(p.read_text() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert "jane" not in stored.lower() and str(mine.id) not in stored
    cached = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert "jane" not in cached.lower()
    assert snapshot_rows(snapshot, "train") == [other_row]
    assert snapshot_rows(snapshot, "eval") == [seed]


def test_deleting_a_customer_removes_their_rows_from_exports_on_disk(
    tmp_path, settings, agent, make_conversation
):
    from django.core.management import call_command

    settings.FEEDBACK_EXPORT_DIR = tmp_path / "exports"
    mine, (_, bot) = make_conversation(
        [("customer", "jane@example.com here, where is my parcel?"), ("bot", "No idea.")],
        session_key="k1",
    )
    other, (_, other_bot) = make_conversation(
        [("customer", "can I pay by card?"), ("bot", "Maybe.")], session_key="k2"
    )
    for reply, text in ((bot, "Sorry Jane, it ships today."), (other_bot, "Yes, all cards.")):
        services.correction_submit(message_id=reply.id, agent=agent, text=text)
        services.regression_case_add(message_id=reply.id, agent=agent)
    for format in ("sft", "corrections", "dpo", "regression"):
        call_command("export_feedback", "--format", format, "--output", f"{format}.jsonl")
    call_command("export_feedback", "--format", "sft", "-o", "weekly/sft.jsonl")
    files = sorted((tmp_path / "exports").rglob("*.jsonl"))
    assert len(files) == 5 and all("jane" in f.read_text().lower() for f in files)

    counts = services.customer_data_delete(session_key="k1", actor=agent)

    assert counts["export_rows"] == 5
    for path in files:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert "jane" not in path.read_text().lower() and str(mine.id) not in path.read_text()
        assert [row["conversation_id"] for row in rows] == [str(other.id)]


def test_exports_to_disk_go_only_where_deletion_finds_them(tmp_path, settings):
    from django.core.management import CommandError, call_command

    settings.FEEDBACK_EXPORT_DIR = tmp_path / "exports"
    for outside in (str(tmp_path / "sft.jsonl"), "../sft.jsonl"):
        with pytest.raises(CommandError, match="FEEDBACK_EXPORT_DIR"):
            call_command("export_feedback", "--format", "sft", "--output", outside)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_deleting_a_customer_takes_their_corrections_out_of_the_approved_answer_memory(
    agent, make_conversation
):
    from chatbot.approved.models import ApprovedAnswer
    from chatbot.approved.store import answer_index_clear, answer_match
    from chatbot.knowledge.embedding import texts_embed

    question = "How many days do I have to return an item?"
    other_question = "Do you sell gift cards?"
    _, (_, mine) = make_conversation([("customer", question), ("bot", "?")], session_key="k1")
    _, (_, theirs) = make_conversation(
        [("customer", other_question), ("bot", "?")], session_key="k2"
    )
    services.correction_submit(message_id=mine.id, agent=agent, text="45 days from delivery.")
    services.correction_submit(message_id=theirs.id, agent=agent, text="Yes, from 10 euros.")
    answer_index_clear()
    found = answer_match(texts_embed([question]))
    assert found is not None and found.answer == "45 days from delivery."  # index built

    services.customer_data_delete(session_key="k1", actor=agent)

    # The same process's index (built before the deletion) no longer finds it.
    assert answer_match(texts_embed([question])) is None
    assert list(ApprovedAnswer.objects.values_list("question", flat=True)) == [other_question]
    kept = answer_match(texts_embed([other_question]))
    assert kept is not None and kept.answer == "Yes, from 10 euros."
    answer_index_clear()


def test_deleting_a_customer_removes_their_cases_from_versions_evaluation_samples(
    agent, make_conversation
):
    from training.models import ModelVersion

    _, (_, bot) = make_conversation(
        [("customer", "jane@example.com: refund?"), ("bot", "no")], session_key="k1"
    )
    correction = services.correction_submit(message_id=bot.id, agent=agent, text="Yes, Jane.")
    case = services.regression_case_add(message_id=bot.id, agent=agent)

    def sample(case_id, correction_id=None, text="a question"):
        return {"id": case_id, "correction_id": correction_id, "prompt": text, "reply": "r"}

    seed = sample("seed:1", text="Where is my parcel?")
    samples = [
        sample(f"correction:{correction.id}:ab", correction.id, "jane@example.com: refund?"),
        sample(f"paraphrase:{correction.id}:cd", correction.id, "jane wants a refund?"),
        sample(f"regression:{case.pk}", text="jane@example.com: refund?"),
        {"prompt": "jane@example.com: refund?", "reference": "Yes, Jane.", "reply": "r"},
        seed,
    ]
    version = ModelVersion.objects.create(
        number=2,
        status="rejected",
        artifact_path="",
        metrics={
            "training": {"steps": 3},
            "evaluation": {"cases": 5, "samples": samples},
            "compared_with": {"version": 1, "evaluation": {"samples": samples}},
        },
    )

    counts = services.customer_data_delete(session_key="k1", actor=agent)

    assert counts["evaluation_samples"] == 8
    version.refresh_from_db()
    assert "jane" not in json.dumps(version.metrics).lower()
    assert version.metrics["evaluation"] == {"cases": 5, "samples": [seed]}
    assert version.metrics["compared_with"]["evaluation"]["samples"] == [seed]
    assert version.metrics["training"] == {"steps": 3}
