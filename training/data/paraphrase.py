"""Question paraphrases made by the base model itself, cached on disk, filtered by meaning.

A corrected customer question is asked again in other words so the fine-tuned model learns
the corrected answer for the question, not for one wording. The base model writes `count`
candidates per question (seeded sampling, all candidates of one question in one batch, bf16
where available); raw candidates are cached under DATA_DIR/cache/paraphrases/<model>/<sha1 of
the question>.json so rebuilds are fast and give the same rows. Candidates are then kept only
if they read like a question of sensible length and their MiniLM cosine to the original lies
in [min_similarity, max_similarity]: a tiny or confused model's garbage is dropped, and so are
copies of the original. Measured on SmolLM2-135M-Instruct (4 questions x 8 candidates, judged
by hand): every candidate at cosine >= 0.82 kept the question's meaning, drifting ones
("Are you shipping with a courier?" for "Which courier do you ship with?") scored <= 0.80;
>= 0.985 were copies with one word changed. On 4 other questions, 6 of 32 passed and 5 kept
the meaning; the sixth was a statement plus a question, which the one-sentence rule now drops.
"""

import hashlib
import json
import re
from pathlib import Path

from django.conf import settings

PROMPT_VERSION = 2
ASK = "Ask this customer question in other words: {question}"
# Few-shot turns: with them the 135M model answers with a question far more often.
SHOTS = (
    ("Where is my order?", "Can you tell me where my order is right now?"),
    (
        "How do I get a refund for a broken lamp?",
        "The lamp I got is broken, how can I get my money back?",
    ),
    ("do you have this coat in blue", "Is this coat also available in blue?"),
)
# "Rewrite:", "Sender:", "Re: " and the like in front of a candidate.
LABEL = re.compile(r"^\s*(?:[A-Za-z][\w-]*\s?){1,2}:\s+")
# Questions generated together (x count sequences). One: a question's candidates then depend
# on it alone (seeded by its text), the same whether the trainer wrote them when the correction
# was saved or a retrain wrote them with others; 4 at a time was ~1.5x faster but depended on
# the neighbours in the batch.
QUESTION_GROUP = 1


def prompt_messages(question: str) -> list[dict]:
    messages = []
    for asked, reworded in SHOTS:
        messages += [
            {"role": "user", "content": ASK.format(question=asked)},
            {"role": "assistant", "content": reworded},
        ]
    return [*messages, {"role": "user", "content": ASK.format(question=question)}]


def _cache_path(model_path: Path, question: str) -> Path:
    digest = hashlib.sha1(question.encode()).hexdigest()
    return Path(settings.DATA_DIR) / "cache" / "paraphrases" / model_path.name / f"{digest}.json"


def paraphrases_forget(question: str) -> int:
    """Delete the cached paraphrases of `question` made with any model (customer-data
    deletion); returns how many cache files went."""
    digest = hashlib.sha1(question.encode()).hexdigest()
    files = list((Path(settings.DATA_DIR) / "cache" / "paraphrases").glob(f"*/{digest}.json"))
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def candidate_clean(text: str) -> str:
    """The first non-empty line of a generation, without labels, quotes and list marks."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    line = LABEL.sub("", line.strip())
    line = re.sub(r"^(?:[-*•]|\d+[.)])\s+", "", line)
    return line.strip().strip("\"'“”‘’").strip()


def paraphrases_generate(
    questions: list[str], *, count: int, seed: int, model_path: Path, max_new_tokens: int = 40
) -> tuple[dict[str, list[str]], int]:
    """Raw (cleaned, unfiltered) candidates per question, and how many questions had to be
    generated now; cached ones are not regenerated.

    Questions are generated `QUESTION_GROUP` at a time (left-padded batch of
    group x count sequences), seeded by the group's first question; the cache keeps the
    result stable."""
    result: dict[str, list[str]] = {}
    missing = []
    for question in dict.fromkeys(questions):
        path = _cache_path(model_path, question)
        try:
            stored = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            stored = {}  # a damaged cache entry is regenerated
        if (stored.get("count"), stored.get("prompt_version")) == (count, PROMPT_VERSION):
            result[question] = stored["candidates"]
            continue
        missing.append(question)
    if not missing:
        return result, 0
    import torch

    from chatbot.serving.loading import model_load
    from training.data.embed import bf16_usable

    loaded = model_load(model_path, dtype="bfloat16" if bf16_usable() else "float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    for start in range(0, len(missing), QUESTION_GROUP):
        group = missing[start : start + QUESTION_GROUP]
        texts = [
            tokenizer.apply_chat_template(
                prompt_messages(question), add_generation_prompt=True, tokenize=False
            )
            for question in group
        ]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + int(hashlib.sha1(group[0].encode()).hexdigest()[:8], 16))
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                num_return_sequences=count,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        decoded = tokenizer.batch_decode(
            output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for i, question in enumerate(group):
            candidates = [candidate_clean(t) for t in decoded[i * count : (i + 1) * count]]
            result[question] = candidates
            path = _cache_path(model_path, question)
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"question": question, "count": count, "seed": seed}
            record.update(prompt_version=PROMPT_VERSION, candidates=candidates)
            path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return result, len(missing)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def paraphrases_filter(
    question: str, candidates: list[str], *, min_similarity: float, max_similarity: float
) -> list[tuple[str, float]]:
    """Candidates fit to stand for `question`, with their MiniLM cosine to it: one sentence
    ending with "?", 2+ words, 0.4x to 2.5x its length (at least 8 characters), not a copy,
    cosine in [min_similarity, max_similarity]."""
    from training.data.embed import texts_embed_cached

    low, high = max(8, 0.4 * len(question)), max(40, 2.5 * len(question))
    seen = {_norm(question)}
    fit = []
    for candidate in candidates:
        norm = _norm(candidate)
        if norm in seen or len(norm.split()) < 2 or not low <= len(candidate) <= high:
            continue
        if not candidate.endswith("?") or re.search(r"[.!?]\s", candidate):
            continue
        seen.add(norm)
        fit.append(candidate)
    if not fit:
        return []
    vectors = texts_embed_cached([question, *fit])
    similarities = vectors[1:] @ vectors[0]
    return [
        (candidate, float(similarity))
        for candidate, similarity in zip(fit, similarities, strict=True)
        if min_similarity <= similarity <= max_similarity
    ]
