"""Calibrate the approved-answer match thresholds on data the app was not tuned on.

The seed corpus (Bitext, 27 intents) stands in for a shop's customers: a third of the
intents get approved answers (`--per-intent` questions each, as if agents corrected that
many replies), and every other question of the corpus is asked. A match is right when the
nearest approved question has the asker's intent; questions of intents with no approved
answer must not match at all. For each threshold the script prints how many questions
match (coverage of answerable ones) and how many matches are right (precision), from which
`APPROVED_MATCH_MIN_SCORE` (the answer goes to the model) and `APPROVED_VERBATIM_MIN_SCORE`
(the approved text is the reply) are chosen.

    .venv/bin/python benchmarks/calibrate_memory.py [--per-intent 5] [--repeats 5]
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "training" / "seed_data" / "bitext-cs-2000.jsonl"
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-intent", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from chatbot.knowledge.embedding import texts_embed

    rows = [json.loads(line) for line in CORPUS.open(encoding="utf-8") if line.strip()]
    questions = [r["customer"] for r in rows]
    intents = np.array([r["intent"] for r in rows])
    category_of = {r["intent"]: r["category"] for r in rows}
    vectors = texts_embed(questions)
    all_intents = sorted(set(intents))
    totals = {
        t: dict.fromkeys(
            ("answerable", "matched", "right", "same_category", "false_unanswerable"), 0
        )
        for t in THRESHOLDS
    }
    unanswerable_total = 0
    for repeat in range(args.repeats):
        rng = random.Random(repeat)
        covered = set(rng.sample(all_intents, len(all_intents) // 3))
        memory = []
        for intent in covered:
            idx = [i for i in range(len(rows)) if intents[i] == intent]
            memory += rng.sample(idx, args.per_intent)
        memory_set = set(memory)
        asked = [i for i in range(len(rows)) if i not in memory_set]
        scores = vectors[asked] @ vectors[memory].T
        best = scores.argmax(1)
        best_score = scores.max(1)
        matched_intent = intents[memory][best]
        answerable = np.array([intents[i] in covered for i in asked])
        right = matched_intent == intents[asked]
        near = np.array(
            [
                category_of[a] == category_of[b]
                for a, b in zip(matched_intent, intents[asked], strict=True)
            ]
        )
        unanswerable_total += int((~answerable).sum())
        for t in THRESHOLDS:
            hit = best_score >= t
            totals[t]["answerable"] += int(answerable.sum())
            totals[t]["matched"] += int(hit.sum())
            totals[t]["right"] += int((hit & right).sum())
            totals[t]["same_category"] += int((hit & near).sum())
            totals[t]["false_unanswerable"] += int((hit & ~answerable).sum())
    print(
        f"{len(rows)} questions, {len(all_intents)} intents; {len(all_intents) // 3} intents "
        f"with {args.per_intent} approved answers each; {args.repeats} draws"
    )
    print(
        "threshold | answerable questions matched right | precision (same intent) | "
        "precision (same category) | unanswerable questions matched"
    )
    for t in THRESHOLDS:
        n = totals[t]
        coverage = n["right"] / max(1, n["answerable"])
        precision = n["right"] / max(1, n["matched"])
        category = n["same_category"] / max(1, n["matched"])
        false_rate = n["false_unanswerable"] / max(1, unanswerable_total)
        print(f"{t:.2f} | {coverage:.3f} | {precision:.3f} | {category:.3f} | {false_rate:.3f}")


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    main()
