import json
from pathlib import Path

import pytest
from safetensors import safe_open

from chatbot.serving.loading import ModelLoadError, model_load
from training.data.snapshot import dataset_build
from training.evaluate import evaluate_artifact
from training.train import META_FILE, TrainingError, finetune


@pytest.fixture
def snapshot(data_dir, seed_corpus, tiny_cfg):
    return dataset_build(cfg=tiny_cfg, name="tiny")


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finetune_lowers_loss_and_writes_a_loadable_adapter(
    tiny_model_dir, snapshot, tiny_cfg, tmp_path
):
    import torch

    base_digest = _file_digest(tiny_model_dir / "model.safetensors")
    events = []
    output = tmp_path / "artifacts" / "run-1"
    result = finetune(
        tiny_cfg,
        snapshot_id=snapshot.name,
        base_path=tiny_model_dir,
        output_dir=output,
        progress=events.append,
    )

    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"]
    train_losses = [e["loss"] for e in result.loss_history if "loss" in e]
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3
    assert any(e.get("phase") == "sft" and "loss" in e for e in events)
    assert events[-1]["phase"] == "done"

    # The artifact holds LoRA weights only; they moved away from their zero init.
    with safe_open(str(output / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert names and all("lora_" in name for name in names)
        lora_b = [weights.get_tensor(n) for n in names if "lora_B" in n]
    assert all(t.abs().sum() > 0 for t in lora_b)
    # The base model was not touched.
    assert _file_digest(tiny_model_dir / "model.safetensors") == base_digest

    meta = json.loads((output / META_FILE).read_text())
    assert meta["data_snapshot"] == "tiny"
    assert meta["config"]["lora_r"] == 8
    assert meta["loss_history"]
    assert not output.with_name("run-1.partial").exists()

    # The chat side loads it (merged onto the base) and it answers differently from the base.
    tuned = model_load(output, base_path=tiny_model_dir)
    base = model_load(tiny_model_dir)
    ids = tuned.tokenizer("How can I track my order?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(tuned.model(ids).logits, base.model(ids).logits)


def test_interrupted_run_resumes_from_its_last_checkpoint(
    tiny_model_dir, snapshot, tiny_cfg, tmp_path
):
    tiny_cfg.max_steps = 12
    tiny_cfg.eval_steps = 4
    output = tmp_path / "run-resume"

    def crash_at_step_6(event):
        if event.get("step", 0) >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(
            tiny_cfg,
            snapshot_id="tiny",
            base_path=tiny_model_dir,
            output_dir=output,
            progress=crash_at_step_6,
        )
    assert not output.exists()
    assert (output.with_name("run-resume.partial") / "checkpoints" / "checkpoint-4").is_dir()

    steps = []
    result = finetune(
        tiny_cfg,
        snapshot_id="tiny",
        base_path=tiny_model_dir,
        output_dir=output,
        progress=lambda e: steps.append(e.get("step")),
    )
    assert result.steps == 12
    assert min(s for s in steps if s) > 4  # started after checkpoint-4, not from scratch
    assert (output / "adapter_model.safetensors").exists()


def test_a_continual_run_with_no_new_rows_is_refused(tiny_model_dir, snapshot, tiny_cfg, tmp_path):
    """(A continual run that does train from its parent's adapter: test_retraining.py,
    test_an_incremental_run_trains_on_new_rows_and_a_replay_sample.)"""
    tiny_cfg.max_steps = 4
    first = finetune(
        tiny_cfg, snapshot_id="tiny", base_path=tiny_model_dir, output_dir=tmp_path / "v1"
    )
    # Same snapshot as the parent: every row is earlier data, nothing new to learn from.
    with pytest.raises(TrainingError, match="No new training data"):
        finetune(
            tiny_cfg,
            snapshot_id="tiny",
            base_path=tiny_model_dir,
            output_dir=tmp_path / "v2",
            parent_artifact=first.artifact_path,
        )
    assert not (tmp_path / "v2").exists()


def test_corrupt_or_missing_artifacts_are_refused(tiny_model_dir, snapshot, tiny_cfg, tmp_path):
    cases = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    ]
    with pytest.raises(ModelLoadError, match="does not exist"):
        evaluate_artifact(tmp_path / "nowhere", base_path=tiny_model_dir, cases=cases)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text("{not json")
    (corrupt / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="unreadable"):
        model_load(corrupt, base_path=tiny_model_dir)
    (corrupt / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(ModelLoadError):
        model_load(corrupt, base_path=tiny_model_dir)
    with pytest.raises(TrainingError, match="Parent artifact refused"):
        finetune(
            tiny_cfg,
            snapshot_id="tiny",
            base_path=tiny_model_dir,
            output_dir=tmp_path / "child",
            parent_artifact=tmp_path / "nowhere",
        )
    assert not (tmp_path / "child").exists()


def test_dpo_stage_follows_sft_when_there_are_enough_pairs(
    tiny_model_dir, data_dir, seed_corpus, tiny_cfg, tmp_path, monkeypatch
):
    from training.data import sources

    pairs = [
        {
            "conversation_id": f"fb-{i}",
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": "Happy to help: " + answer}],
            "rejected": [{"role": "assistant", "content": "No idea, ask someone else."}],
        }
        for i, (question, answer) in enumerate(
            [("Where is my parcel?", "it ships in two days."), ("Refund?", "five days.")] * 2
        )
    ]
    monkeypatch.setattr(sources, "preference_pairs", lambda: pairs)
    snapshot = dataset_build(cfg=tiny_cfg, name="with-pairs")
    assert snapshot.preference_count == 4
    tiny_cfg.max_steps = 4
    tiny_cfg.dpo_min_pairs = 4
    events = []
    result = finetune(
        tiny_cfg,
        snapshot_id=snapshot.name,
        base_path=tiny_model_dir,
        output_dir=tmp_path / "dpo",
        progress=events.append,
    )
    assert result.metrics["dpo"]["pairs"] == 4
    assert result.metrics["dpo"]["steps"] >= 1
    assert any(e.get("phase") == "dpo" for e in events)
    assert any(e.get("phase") == "dpo" for e in result.loss_history)
    model_load(tmp_path / "dpo", base_path=tiny_model_dir)

    tiny_cfg.dpo_min_pairs = 5
    skipped = finetune(
        tiny_cfg,
        snapshot_id=snapshot.name,
        base_path=tiny_model_dir,
        output_dir=tmp_path / "no-dpo",
    )
    assert "skipped" in skipped.metrics["dpo"]


def test_an_incremental_candidate_keeps_its_share_of_the_change(
    tiny_model_dir, snapshot, tiny_cfg, tmp_path
):
    """adapter_blend: parent + keep x (trained - parent), every LoRA tensor."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    from training.train import adapter_blend, base_model_load

    tiny_cfg.max_steps = 4
    parent = finetune(
        tiny_cfg, snapshot_id="tiny", base_path=tiny_model_dir, output_dir=tmp_path / "v1"
    ).artifact_path
    saved = load_file(str(Path(parent) / "adapter_model.safetensors"))

    def trained_model():
        model = PeftModel.from_pretrained(
            base_model_load(str(tiny_model_dir)), parent, is_trainable=True
        )
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if "lora_" in name:
                    weight.add_(1.0)  # what training changed: +1 everywhere
        return model

    for keep in (0.0, 0.5, 1.0):
        model = trained_model()
        assert adapter_blend(model, parent, keep=keep) == keep
        blended = get_peft_model_state_dict(model)
        assert set(blended) == set(saved)
        for key, value in blended.items():
            assert torch.allclose(value.float(), saved[key].float() + keep, atol=1e-2), key
    with pytest.raises(TrainingError, match="between 0 and 1"):
        adapter_blend(trained_model(), parent, keep=1.5)


def test_mixed_batches_draw_each_step_at_random_and_split_it_by_length(
    tiny_model_dir, tiny_cfg, tmp_path
):
    """Incremental runs: every optimizer step is a random draw of rows (new and replayed
    mixed, as with random batches), its micro-batches cut by length so they pad less."""
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.train import sft_trainer_build

    tiny_cfg.grad_accum, tiny_cfg.epochs = 2, 1
    rng = random.Random(3)
    short = [rng.randint(20, 40) for _ in range(40)]  # corrections and their paraphrases
    long = [rng.randint(200, 300) for _ in range(40)]  # replayed corpus rows
    features = [
        {"input_ids": [1] * n, "labels": [1] * n, "length": n, "kind": kind}
        for kind, lengths in (("short", short), ("long", long))
        for n in lengths
    ]

    def steps(grouped: bool) -> list[list[list[dict]]]:
        trainer = sft_trainer_build(
            tiny_cfg,
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
            train_features=features,
            val_features=[],
            checkpoints_dir=tmp_path / f"checkpoints-{grouped}",
            bf16=False,
            callbacks=[],
            grouped=grouped,
        )
        by_length = {}
        for f in features:
            by_length.setdefault(f["length"], []).append(f)
        micro = [
            [by_length[int(n)][0] for n in batch["attention_mask"].sum(dim=1)]
            for batch in trainer.get_train_dataloader()
        ]
        return [micro[i : i + 2] for i in range(0, len(micro), 2)]

    mixed = steps(grouped=False)
    rows = [f for step in mixed for batch in step for f in batch]
    assert len(rows) == len(features) and all(len(step) == 2 for step in mixed)
    assert sum(len(b) for b in mixed[0]) == 8  # batch_size 4 x grad_accum 2 rows per step
    # Each step's micro-batches are cut by length: one holds its shortest rows.
    for first, second in mixed:
        shorter, longer = sorted((first, second), key=lambda b: max(f["length"] for f in b))
        assert max(f["length"] for f in shorter) <= min(f["length"] for f in longer)
    # The steps mix kinds: length-grouped batches keep them apart.
    kinds_per_step = [{f["kind"] for batch in step for f in batch} for step in mixed]
    assert sum(len(k) == 2 for k in kinds_per_step) >= 7
    grouped = steps(grouped=True)
    assert sum(len({f["kind"] for b in s for f in b}) == 2 for s in grouped) <= 3

    def padded(all_steps):
        return sum(len(b) * max(f["length"] for f in b) for s in all_steps for b in s)

    # Less padding than the same steps cut into 4-row batches at random.
    random_split = []
    for step in mixed:
        step_rows = [f for batch in step for f in batch]
        rng.shuffle(step_rows)
        random_split.append([step_rows[:4], step_rows[4:]])
    assert padded(mixed) < 0.9 * padded(random_split)


def test_the_shared_system_prompt_runs_once_with_the_same_loss_and_gradients(monkeypatch):
    """assistant_loss runs the prefix every row shares (the system prompt) once per batch:
    on the real model with a LoRA adapter, the loss and every adapter gradient are those of
    running each row whole."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatbot.serving.versions import base_model_path
    from training import train
    from training.chat_format import ChatCollator, examples_tokenize

    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    system = train.system_prompt_for_training()
    exchanges = [
        ("How long do I have to return a jacket?", "You can return it within 45 days."),
        ("Which carrier delivers my parcel?", "GLS delivers in 3 to 5 business days."),
        ("Is there a warranty on headphones?", "Every product has a 3-year warranty."),
        ("hi", "Hello! How can I help you today?"),
    ]
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in exchanges
    ]
    features, _ = examples_tokenize(tokenizer, rows, system=system, max_length=384)
    batch = ChatCollator(tokenizer.pad_token_id)(features)
    shared = train.shared_prefix_length(
        batch["input_ids"], batch["attention_mask"], batch["labels"]
    )
    system_tokens = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}], return_dict=False
    )
    assert len(system_tokens) > 100
    assert shared >= len(system_tokens)  # the whole system turn (and "<|im_start|>user")
    assert shared < min(len(f["input_ids"]) for f in features)

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )

    def loss_and_gradients():
        model.zero_grad()
        loss = train.assistant_loss(model, batch)
        loss.backward()
        named = model.named_parameters()
        return loss.item(), {n: p.grad.clone() for n, p in named if p.requires_grad}

    once_loss, once = loss_and_gradients()
    monkeypatch.setattr(train, "SHARED_PREFIX_MIN_TOKENS", 10**6)  # every row whole
    whole_loss, whole = loss_and_gradients()
    assert once_loss == pytest.approx(whole_loss, rel=1e-4)
    assert once.keys() == whole.keys() and len(whole) == 3 * 2 * 30
    for name, gradient in whole.items():
        assert gradient.abs().sum() > 0, name
        assert torch.allclose(once[name], gradient, rtol=1e-3, atol=1e-6), name
