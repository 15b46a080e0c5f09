"""Cleaning rules for chat examples; each returns what it kept and counts what it dropped.

An example is `{"id", "conversation_id", "source", "messages": [{"role", "content"}]}` with
roles "user" and "assistant" only (the system prompt is added at training time).
"""

import hashlib
import re
import unicodedata
from collections import Counter

from training.data.pii import pii_mask
from training.data.slots import slots_rewrite

ARTEFACTS = re.compile(r"as an ai language model|\[continue answering|\[insert ", re.I)
MOJIBAKE = re.compile("[\u00c3\u00c2][\u0080-\u00bf]|\u00e2\u20ac|\ufffd")
LIST_NUMBER = re.compile(r"\b\d+[.)]\s")


def text_normalize(text: str) -> str:
    """Unix line breaks, NFC, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def text_is_garbled(text: str) -> bool:
    """Mojibake, control characters, generation artefacts, 60+ characters without a space
    (hashes, raw dumps), or too few letters and digits to be prose."""
    if MOJIBAKE.search(text) or ARTEFACTS.search(text):
        return True
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        return True
    if re.search(r"\S{60,}", text) and not re.search(r"https?://\S{60,}", text):
        return True
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    # Mostly symbols, or no letters at all: not prose. Digits count as ordinary (order ids).
    return letters == 0 or sum(c.isalnum() for c in visible) < 0.6 * len(visible)


def _profanity():
    from better_profanity import profanity

    if not profanity.CENSOR_WORDSET:
        profanity.load_censor_words()
    return profanity


def text_is_abusive(text: str) -> bool:
    # better_profanity reads digits as leetspeak ("5. Hit" -> "shit"): drop list numbers first.
    return _profanity().contains_profanity(LIST_NUMBER.sub(" ", text))


def text_censor(text: str) -> str:
    return _profanity().censor(text) if text_is_abusive(text) else text


def example_key(example: dict) -> str:
    """Exact-duplicate key: the turns, lowercased, whitespace collapsed."""
    flat = "\n".join(
        f"{m['role']}:{' '.join(m['content'].lower().split())}" for m in example["messages"]
    )
    return hashlib.sha1(flat.encode()).hexdigest()


def example_text(example: dict) -> str:
    return "\n".join(m["content"] for m in example["messages"])


def examples_clean(
    examples: list[dict],
    *,
    max_turn_chars: int,
    near_duplicate_threshold: float,
) -> tuple[list[dict], dict]:
    """Apply every rule in order; return (kept examples, report).

    Dropped: empty turns, garbled turns, turns over `max_turn_chars`, abusive assistant
    turns, exact duplicates, near duplicates (MiniLM cosine >= threshold). Changed, not
    dropped: line breaks normalised, PII masked, template slots rewritten, profanity in
    customer turns censored (the bot should still learn to answer a rude customer politely).
    """
    dropped: Counter = Counter()
    changed: Counter = Counter()
    kept = []
    for example in examples:
        messages = [
            {"role": m["role"], "content": text_normalize(m.get("content") or "")}
            for m in example["messages"]
        ]
        if not messages or not any(m["role"] == "assistant" for m in messages):
            dropped["empty"] += 1
            continue
        if any(not m["content"] for m in messages):
            dropped["empty"] += 1
            continue
        if any(text_is_garbled(m["content"]) for m in messages):
            dropped["garbled"] += 1
            continue
        if any(len(m["content"]) > max_turn_chars for m in messages):
            dropped["too_long"] += 1
            continue
        if any(m["role"] == "assistant" and text_is_abusive(m["content"]) for m in messages):
            dropped["abusive"] += 1
            continue
        cleaned = []
        for m in messages:
            text = pii_mask(m["content"])
            if text != m["content"]:
                changed["pii_masked"] += 1
            if m["role"] == "user":
                censored = text_censor(text)
                changed["profanity_censored"] += censored != text
                text = censored
            slotted = slots_rewrite(text)
            changed["slots_rewritten"] += slotted != text
            cleaned.append({"role": m["role"], "content": slotted})
        kept.append({**example, "messages": cleaned})

    unique, seen = [], set()
    for example in kept:
        key = example_key(example)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        unique.append({**example, "key": key})

    result = near_duplicates_drop(unique, threshold=near_duplicate_threshold)
    dropped["near_duplicate"] += len(unique) - len(result)
    report = {
        "rows_in": len(examples),
        "dropped": {rule: dropped[rule] for rule in DROP_RULES},
        "changed": dict(changed),
        "rows_out": len(result),
    }
    return result, report


DROP_RULES = ("empty", "garbled", "too_long", "abusive", "duplicate", "near_duplicate")


def near_duplicates_drop(examples: list[dict], *, threshold: float) -> list[dict]:
    """Keep the first of every group of examples whose embeddings are >= threshold alike."""
    if len(examples) < 2:
        return examples
    import faiss

    from chatbot.knowledge.embedding import texts_embed

    vectors = texts_embed([example_text(e) for e in examples])
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    lims, _, ids = index.range_search(vectors, threshold)
    dropped: set[int] = set()
    for i in range(len(examples)):
        if i in dropped:
            continue
        for j in ids[lims[i] : lims[i + 1]]:
            if j > i:
                dropped.add(int(j))
    return [e for i, e in enumerate(examples) if i not in dropped]
