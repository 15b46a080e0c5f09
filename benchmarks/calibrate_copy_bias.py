"""Calibrate the copy bias of looser approved-answer matches on data the app was not tuned on.

Between `APPROVED_MATCH_MIN_SCORE` and `APPROVED_VERBATIM_MIN_SCORE` the model answers with
the approved answer in its prompt, and the small model mostly ignores it. The copy bias adds
`APPROVED_COPY_BIAS` to the logits of the approved answer's tokens at every step, and
`APPROVED_COPY_FOLLOW_BIAS` more to those continuing the reply in its order. This script
plays the seed corpus (Bitext, 27 intents) as calibrate_memory.py does: a third of the intents
get approved answers (each a corpus answer's first two sentences, about the length of an
agent's correction), every other corpus question whose best match falls in the looser band
is asked through the in-process engine as the app asks it (same prompt, greedy, the serving
repetition penalty), once per bias and follow bias. Per pair it prints the replies' MiniLM
similarity to the approved answer when the match is the right intent (higher: the shop's
answer is given) and when it is not (higher: the wrong answer is pushed), their similarity
to the corpus answer of the asker's own intent, and how many replies degenerate (a 3-gram
repeated 3+ times).

    .venv/bin/python benchmarks/calibrate_copy_bias.py [--cases 48] [--biases 0 1 2 3]
        [--follow-biases 0 3]

About 5 minutes per pair on 2 busy cores (48 replies of up to 96 tokens each).
"""

import argparse
import json
import random
import re
import sys
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "training" / "seed_data" / "bitext-cs-2000.jsonl"


def first_sentences(text: str, count: int = 2) -> str:
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(parts[:count])


def degenerate(text: str) -> bool:
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return any(grams.count(g) >= 3 for g in set(grams))


def replies(engine, prompts: list[list[dict]], params: list) -> list[str]:
    """Every prompt through the engine at once (it batches them), in order."""
    done = threading.Semaphore(0)
    texts = [""] * len(prompts)

    def collect(i):
        def emit(event):
            if event.kind == "token":
                texts[i] += event.text
            else:
                done.release()

        return emit

    for i, messages in enumerate(prompts):
        engine.submit(messages, params[i], collect(i))
    for _ in prompts:
        done.acquire()
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--biases", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--follow-biases", type=float, nargs="+", default=[0.0])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()

    from dataclasses import replace

    from django.conf import settings

    from chatbot.knowledge.embedding import texts_embed
    from chatbot.prompting import chat_messages, system_prompt
    from chatbot.serving.engine import Engine
    from chatbot.serving.gateway import default_params
    from chatbot.serving.loading import model_load
    from chatbot.serving.versions import base_model_path
    from training.data.slots import slots_rewrite

    rows = [json.loads(line) for line in CORPUS.open(encoding="utf-8") if line.strip()]
    for row in rows:
        row["answer"] = slots_rewrite(row["agent"])
    questions = [r["customer"] for r in rows]
    intents = np.array([r["intent"] for r in rows])
    vectors = texts_embed(questions)
    low, high = settings.APPROVED_MATCH_MIN_SCORE, settings.APPROVED_VERBATIM_MIN_SCORE
    rng = random.Random(0)
    all_intents = sorted(set(intents))
    covered = set(rng.sample(all_intents, len(all_intents) // 3))
    memory = [
        i
        for intent in sorted(covered)
        for i in rng.sample([j for j in range(len(rows)) if intents[j] == intent], 7)
    ]
    cases = []
    for i in rng.sample(range(len(rows)), len(rows)):
        if i in memory:
            continue
        scores = vectors[memory] @ vectors[i]
        best = int(scores.argmax())
        if low <= scores[best] < high:
            cases.append((i, memory[best]))
        if len(cases) >= args.cases:
            break
    prompts, approved_texts = [], []
    for asked, matched in cases:
        approved = first_sentences(rows[matched]["answer"])
        approved_texts.append(approved)
        system = system_prompt(None, approved=approved)
        example = (rows[matched]["customer"], approved)
        history = [("customer", questions[asked])]
        prompts.append(chat_messages(history, system=system, example=example))
    right = np.array([intents[a] == intents[m] for a, m in cases])
    print(
        f"{len(cases)} questions in the looser band [{low}, {high}) of {len(memory)} approved "
        f"answers ({len(covered)} intents); {int(right.sum())} matched their own intent"
    )
    engine = Engine(model_load(base_model_path(), dtype=settings.SERVING_DTYPE))
    approved_v = texts_embed(approved_texts)
    own_v = texts_embed([rows[a]["answer"] for a, _ in cases])
    print(
        "bias | follow | similarity to the approved answer: right intent / wrong intent | "
        "similarity to the asker's own answer | degenerate replies"
    )
    base = replace(default_params(), max_new_tokens=args.max_new_tokens, temperature=0.0)
    pairs = [(b, f) for b in args.biases for f in args.follow_biases if b or not f]
    for bias, follow in pairs:
        params = [
            replace(base, copy_text=a, copy_bias=bias, copy_follow_bias=follow)
            for a in approved_texts
        ]
        texts = replies(engine, prompts, params)
        v = texts_embed(texts)
        to_approved = (v * approved_v).sum(1)
        to_own = (v * own_v).sum(1)
        wrong = to_approved[~right].mean() if (~right).any() else float("nan")
        print(
            f"{bias:.1f} | {follow:.1f} | {to_approved[right].mean():.3f} / {wrong:.3f} | "
            f"{to_own.mean():.3f} | {sum(map(degenerate, texts))}",
            flush=True,
        )
    engine.stop()


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    main()
