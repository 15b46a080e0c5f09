import json

import pytest

from training.chat_format import IGNORE, ChatCollator, chat_tokenize
from training.config import TrainConfig, config_from_options, train_config
from training.data.snapshot import dataset_build, snapshot_rows, stable_split
from training.train import TrainingError, replay_mix, rows_weighted


def rows_for(conversations: int, per_conversation: int) -> list[dict]:
    return [
        {"id": f"{c}-{i}", "key": f"{c}-{i}", "conversation_id": f"c{c}", "messages": []}
        for c in range(conversations)
        for i in range(per_conversation)
    ]


def test_split_keeps_each_conversation_on_one_side_and_is_stable_under_additions():
    rows = rows_for(200, 3)
    train, validation = stable_split(rows, validation_share=0.2)
    train_ids = {r["conversation_id"] for r in train}
    validation_ids = {r["conversation_id"] for r in validation}
    assert not train_ids & validation_ids
    assert 20 <= len(validation_ids) <= 60 and len(train) + len(validation) == 600
    # Adding conversations (or reordering) never moves an old one to the other side.
    more = list(reversed(rows_for(400, 3)))
    _, validation_more = stable_split(more, validation_share=0.2)
    assert {r["conversation_id"] for r in validation_more} & train_ids == set()
    assert validation_ids <= {r["conversation_id"] for r in validation_more}
    # Rows that must train (corrections) keep their whole conversation in train.
    _, validation = stable_split(rows, validation_share=0.2, always_train=lambda r: True)
    assert validation == []
    # Tiny data still gets one validation conversation for early stopping.
    assert (
        len({r["conversation_id"] for r in stable_split(rows[:6], validation_share=0.01)[1]}) == 1
    )


def test_loss_mask_covers_only_assistant_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "Shipping takes two days."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "Happy to help!"},
    ]
    feature = chat_tokenize(tokenizer, messages, system="Be brief.", max_length=512)
    labelled = [
        t
        for t, label in zip(feature["input_ids"], feature["labels"], strict=True)
        if label != IGNORE
    ]
    assert all(
        label in (IGNORE, t)
        for t, label in zip(feature["input_ids"], feature["labels"], strict=True)
    )
    assert tokenizer.decode(labelled) == (
        "Shipping takes two days.<|im_end|>\nHappy to help!<|im_end|>\n"
    )
    assert chat_tokenize(tokenizer, messages, system="Be brief.", max_length=20) is None

    batch = ChatCollator(tokenizer.pad_token_id)(
        [
            feature,
            {**feature, "input_ids": feature["input_ids"][:5], "labels": feature["labels"][:5]},
        ]
    )
    assert batch["input_ids"].shape == batch["labels"].shape
    assert (batch["labels"][1, 5:] == IGNORE).all()
    assert batch["attention_mask"][1].sum() == 5


def test_config_defaults_settings_and_overrides(settings):
    assert train_config().learning_rate == TrainConfig().learning_rate
    settings.TRAINING_ENV = {"learning_rate": "1e-3", "bf16": "0", "unrelated": "x"}
    cfg = train_config(batch_size="2")
    assert (cfg.learning_rate, cfg.bf16, cfg.batch_size) == (1e-3, False, 2)
    cfg = config_from_options({"learning_rate": "5e-5", "epochs": None, "verbosity": 1})
    assert cfg.learning_rate == 5e-5 and cfg.epochs == TrainConfig().epochs
    with pytest.raises(TypeError):
        train_config(no_such_field=1)


def test_replay_mix_keeps_all_new_rows_and_a_sample_of_old_ones():
    rows = [{"key": f"old{i}"} for i in range(100)] + [
        {"key": f"new{i}", "correction_id": i % 3 or None} for i in range(30)
    ]
    previous = {f"old{i}" for i in range(100)}
    mixed, mix = replay_mix(rows, previous_keys=previous, replay_examples=12, seed=1)
    assert mix == {
        "mode": "incremental",
        "new": 30,
        "replayed": 12,
        "replay_neighbours": 0,
        "replay_pool": 100,
        "new_correction_ids": [1, 2],
    }
    assert len(mixed) == 42 and {r["key"] for r in mixed} >= {f"new{i}" for i in range(30)}
    assert mixed == replay_mix(rows, previous_keys=previous, replay_examples=12, seed=1)[0]
    full, mix = replay_mix(rows, previous_keys=set(), replay_examples=12, seed=1)
    assert full == rows and mix["mode"] == "full"
    with pytest.raises(TrainingError):
        replay_mix(rows[:100], previous_keys=previous, replay_examples=12, seed=1)


def test_replay_neighbours_are_the_earlier_questions_nearest_to_the_new_ones(data_dir):
    def row(key: str, question: str) -> dict:
        return {"key": key, "messages": [{"role": "user", "content": question}]}

    old = [
        row("o0", "Can I pay with PayPal?"),
        row("o1", "Which courier delivers my parcel?"),
        row("o2", "How do I reset my password?"),
        row("o3", "How long does shipping to Spain take?"),
        row("o4", "Do you sell gift cards?"),
        row("o5", "Where can I see my invoice?"),
    ]
    new = [row("n0", "How many days does delivery take?")]
    previous = {r["key"] for r in old}
    mixed, mix = replay_mix(
        old + new, previous_keys=previous, replay_examples=4, seed=1, neighbour_share=0.5
    )
    assert (mix["replayed"], mix["replay_neighbours"]) == (4, 2)
    replayed = {r["key"] for r in mixed} - {"n0"}
    assert {"o1", "o3"} <= replayed  # the two delivery questions, whatever the seed
    assert (
        mixed
        == replay_mix(
            old + new, previous_keys=previous, replay_examples=4, seed=1, neighbour_share=0.5
        )[0]
    )


def test_rows_are_repeated_by_their_weight():
    rows = [{"key": "a", "weight": 3}, {"key": "b"}, {"key": "c", "weight": 0}]
    assert [r["key"] for r in rows_weighted(rows)] == ["a", "a", "a", "b", "c"]


def test_snapshot_files_report_and_feedback_sources(data_dir, seed_corpus, tiny_cfg, monkeypatch):
    from training.data import sources

    pair = {
        "conversation_id": "fb-1",
        "prompt": [{"role": "user", "content": "Refund? mail me at x@y.com"}],
        "chosen": [{"role": "assistant", "content": "Refunds take 5-7 days."}],
        "rejected": [{"role": "assistant", "content": "Your refund #123456 is done."}],
    }
    monkeypatch.setattr(
        sources, "preference_pairs", lambda: [pair, {**pair, "chosen": pair["rejected"]}]
    )
    snapshot = dataset_build(cfg=tiny_cfg, name="snap")
    report = snapshot.report
    assert report["rows_in"] == 36
    evaluation = snapshot_rows(snapshot, "eval")
    assert report["rows_out"] == snapshot.train_count + snapshot.validation_count + len(evaluation)
    assert set(report["seconds"]) >= {"gather", "clean", "split", "write", "total"}
    assert set(report["dropped"]) >= {"empty", "garbled", "duplicate", "near_duplicate"}
    train = snapshot_rows(snapshot, "train")
    validation = snapshot_rows(snapshot, "validation")
    assert not {r["conversation_id"] for r in train} & {r["conversation_id"] for r in validation}
    pairs = snapshot_rows(snapshot, "preferences")
    assert len(pairs) == 1 and "[email]" in pairs[0]["prompt"][0]["content"]
    on_disk = json.loads((data_dir / "datasets" / "snap" / "report.json").read_text())
    assert on_disk["rows_out"] == report["rows_out"]
