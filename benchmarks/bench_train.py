"""Training throughput: our SFT pipeline vs a plain transformers.Trainer, same data, same run.

Both runs train the same LoRA adapter on the real base model over the same fixed slice (the
first 500 rows of the dev corpus, cleaned and tokenized the same way, loss on assistant tokens
only). "plain" is transformers.Trainer with a random sampler, batches padded to their longest
sequence, fp32. "ours" is `training.train.sft_trainer_build`: length-bucketed batches, and bf16
autocast when TrainConfig.bf16 is on (the default; TRAINING_BF16=0 turns it off) and the CPU
has bf16 instructions. Both use the same collator, so the difference is what the pipeline adds.
Steps are capped (BENCH_STEPS, default 12) to keep the run a few minutes; the first
BENCH_SKIP (2) steps are warm-up and not timed. Time per epoch is estimated as the slice's
useful tokens / measured useful tokens per second. Each run is a subprocess so peak memory
(max RSS) is its own.

    make bench-train          # or: python benchmarks/bench_train.py
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SLICE = 500
DATA = Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data" / "dev.jsonl"))
STEPS = int(os.environ.get("BENCH_STEPS", "12"))
SKIP = int(os.environ.get("BENCH_SKIP", "2"))
BATCH = int(os.environ.get("BENCH_BATCH", "8"))
MAX_LENGTH = int(os.environ.get("BENCH_MAX_LENGTH", "384"))


def features_build(tokenizer) -> list[dict]:
    from chatbot.pii import pii_mask
    from training.chat_format import examples_tokenize
    from training.data.cleaning import text_normalize
    from training.data.slots import slots_rewrite
    from training.train import system_prompt_for_training

    rows = []
    with DATA.open() as stream:
        for line in list(stream)[:SLICE]:
            row = json.loads(line)
            rows.append(
                {
                    "messages": [
                        {"role": role, "content": slots_rewrite(pii_mask(text_normalize(row[k])))}
                        for role, k in (("user", "customer"), ("assistant", "agent"))
                    ]
                }
            )
    features, _ = examples_tokenize(
        tokenizer, rows, system=system_prompt_for_training(), max_length=MAX_LENGTH
    )
    return features


class Counting:
    """Wrap a collator; count real and padded tokens of each batch it makes."""

    def __init__(self, collate):
        self.collate, self.real, self.total = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        self.real += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


def run(mode: str) -> dict:
    import django

    django.setup()
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from chatbot.serving.versions import base_model_path
    from training.chat_format import ChatCollator
    from training.config import train_config
    from training.train import base_model_load, bf16_usable, sft_trainer_build

    base = str(base_model_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    features = features_build(tokenizer)
    cfg = train_config(
        batch_size=BATCH,
        max_steps=STEPS,
        eval_steps=10**6,
        early_stopping_patience=0,
        max_length=MAX_LENGTH,
    )
    set_seed(cfg.seed)
    model = base_model_load(base)
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    marks: list[tuple[float, int]] = []
    counter = Counting(ChatCollator(tokenizer.pad_token_id))

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), counter.real, counter.total))

        def on_train_begin(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), 0, 0))

    work = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    if mode == "ours":
        bf16 = cfg.bf16 and bf16_usable()
        trainer = sft_trainer_build(
            cfg,
            model=model,
            tokenizer=tokenizer,
            train_features=features,
            val_features=[],
            checkpoints_dir=work,
            bf16=bf16,
            callbacks=[Clock()],
        )
    else:
        bf16 = False
        args = TrainingArguments(
            output_dir=str(work),
            per_device_train_batch_size=BATCH,
            max_steps=STEPS,
            learning_rate=cfg.learning_rate,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            remove_unused_columns=False,
            seed=cfg.seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            callbacks=[Clock()],
            train_dataset=[{k: f[k] for k in ("input_ids", "labels")} for f in features],
        )
    trainer.data_collator = counter
    trainer.train()
    # marks[0] = train begin, marks[i] = end of step i; time steps SKIP+1 .. STEPS.
    (t0, real0, total0), (t1, real1, total1) = marks[SKIP], marks[-1]
    useful_per_s = (real1 - real0) / (t1 - t0)
    epoch_tokens = sum(len(f["input_ids"]) for f in features)
    return {
        "mode": mode,
        "examples": len(features),
        "timed_steps": len(marks) - 1 - SKIP,
        "useful_tokens_per_s": round(useful_per_s, 1),
        "all_tokens_per_s": round((total1 - total0) / (t1 - t0), 1),
        "padding_share": round(1 - (real1 - real0) / max(total1 - total0, 1), 3),
        "epoch_seconds_est": round(epoch_tokens / useful_per_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "bf16": bf16,
    }


def main() -> None:
    if len(sys.argv) > 1:
        print("RESULT " + json.dumps(run(sys.argv[1])), flush=True)
        return
    results = []
    for mode in ("plain", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, mode], capture_output=True, text=True, check=False
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(line[0][7:]))
    print(json.dumps(results, indent=2))
    plain, ours = results
    print(
        f"\nFixed slice: first {SLICE} rows of {DATA.name} ({ours['examples']} fit "
        f"max_length={MAX_LENGTH}); {STEPS} steps of batch {BATCH}, first {SKIP} untimed."
    )
    print(f"{'':28}{'plain Trainer':>16}{'ours':>12}")
    for key, label in (
        ("useful_tokens_per_s", "useful tokens/s"),
        ("all_tokens_per_s", "tokens/s incl. padding"),
        ("padding_share", "padding share"),
        ("epoch_seconds_est", "time per epoch (s, est.)"),
        ("peak_rss_mb", "peak memory (MB RSS)"),
        ("bf16", "bf16 autocast"),
    ):
        print(f"{label:28}{plain[key]!s:>16}{ours[key]!s:>12}")
    speedup = ours["useful_tokens_per_s"] / plain["useful_tokens_per_s"]
    print(f"\nspeed-up (useful tokens/s): {speedup:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    main()
