"""Cleaning rules for chat examples; each returns what it kept and counts what it dropped.

An example is `{"id", "conversation_id", "source", "messages": [{"role", "content"}]}` with
roles "user" and "assistant" only (the system prompt is added at training time).
"""

import hashlib
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable

from chatbot.pii import pii_mask
from training.data.profanity import text_censor, text_is_abusive
from training.data.slots import slots_rewrite

ARTEFACTS = re.compile(r"as an ai language model|\[continue answering|\[insert ", re.I)
MOJIBAKE = re.compile("[\u00c3\u00c2][\u0080-\u00bf]|\u00e2\u20ac|\ufffd")


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


__all__ = ["text_censor", "text_is_abusive"]  # re-exported: evaluation checks replies too


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
    protected: Callable[[dict], bool] = lambda example: False,
) -> tuple[list[dict], dict]:
    """Apply every rule in order; return (kept examples, report).

    Dropped: empty turns, garbled turns, turns over `max_turn_chars`, abusive assistant
    turns, exact duplicates, near duplicates (word 3-shingle Jaccard >= threshold). Changed, not
    dropped: line breaks normalised, PII masked, template slots rewritten, profanity in
    customer turns censored (the bot should still learn to answer a rude customer politely).
    `protected` examples (corrections, evaluation rows) obey the content rules but are never
    dropped as duplicates; an unprotected example duplicating one of them is.
    """
    dropped: Counter = Counter()
    by_source: Counter = Counter()
    changed: Counter = Counter()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    kept = []
    for example in examples:
        cleaned, rule = example_clean(example, max_turn_chars=max_turn_chars, changed=changed)
        if cleaned is None:
            dropped[rule] += 1
            by_source[(rule, example.get("source", ""))] += 1
        else:
            kept.append(cleaned)
    seconds["rules"] = time.perf_counter() - started

    started = time.perf_counter()
    order = sorted(range(len(kept)), key=lambda i: not protected(kept[i]))
    unique, seen = [], set()
    for i in order:
        example = kept[i]
        key = example_key(example)
        if key in seen and not protected(example):
            dropped["duplicate"] += 1
            by_source[("duplicate", example.get("source", ""))] += 1
            continue
        seen.add(key)
        unique.append({**example, "key": key})
    seconds["duplicates"] = time.perf_counter() - started

    started = time.perf_counter()
    result = near_duplicates_drop(
        unique, threshold=near_duplicate_threshold, protected=[protected(e) for e in unique]
    )
    kept_ids = {id(e) for e in result}
    for example in unique:
        if id(example) not in kept_ids:
            dropped["near_duplicate"] += 1
            by_source[("near_duplicate", example.get("source", ""))] += 1
    seconds["near_duplicates"] = time.perf_counter() - started
    report = {
        "rows_in": len(examples),
        "dropped": {rule: dropped[rule] for rule in DROP_RULES},
        "dropped_by_source": {
            rule: {src: n for (r, src), n in sorted(by_source.items()) if r == rule}
            for rule in DROP_RULES
            if dropped[rule]
        },
        "changed": dict(changed),
        "rows_out": len(result),
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }
    return result, report


def example_clean(
    example: dict, *, max_turn_chars: int, changed: Counter | None = None
) -> tuple[dict | None, str]:
    """One example through the content rules: (cleaned example, "") or (None, rule)."""
    changed = Counter() if changed is None else changed
    messages = [
        {"role": m["role"], "content": text_normalize(m.get("content") or "")}
        for m in example["messages"]
    ]
    if not messages or not any(m["role"] == "assistant" for m in messages):
        return None, "empty"
    if any(not m["content"] for m in messages):
        return None, "empty"
    if any(text_is_garbled(m["content"]) for m in messages):
        return None, "garbled"
    if any(len(m["content"]) > max_turn_chars for m in messages):
        return None, "too_long"
    if any(m["role"] == "assistant" and text_is_abusive(m["content"]) for m in messages):
        return None, "abusive"
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
    return {**example, "messages": cleaned}, ""


DROP_RULES = ("empty", "garbled", "too_long", "abusive", "duplicate", "near_duplicate")


def near_duplicates_drop(
    examples: list[dict], *, threshold: float, protected: list[bool] | None = None
) -> list[dict]:
    """Drop every example whose word 3-shingle Jaccard similarity to an example kept before it
    is >= threshold; `protected` ones (same order) are kept first and always, so they win
    their groups."""
    protected = protected or [False] * len(examples)
    if len(examples) < 2 or all(protected):
        return examples
    from training.data.near_duplicates import near_duplicate_neighbours

    neighbours = near_duplicate_neighbours([example_text(e) for e in examples], threshold=threshold)
    order = sorted(range(len(examples)), key=lambda i: not protected[i])
    kept: set[int] = set()
    for i in order:
        if protected[i] or not neighbours[i] & kept:
            kept.add(i)
    return [e for i, e in enumerate(examples) if i in kept]
