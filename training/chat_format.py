"""Chat examples as token ids with labels on the assistant's tokens only, and their batching."""

IGNORE = -100


def _template_ids(tokenizer, messages: list[dict], *, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True
    )
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def chat_tokenize(tokenizer, messages: list[dict], *, system: str, max_length: int) -> dict | None:
    """Apply the chat template; labels are -100 except on assistant turns (their text and the
    end-of-turn token). Returns None for an example longer than `max_length` tokens, which is
    dropped rather than cut (a cut reply would teach the model to stop mid-sentence)."""
    full = [{"role": "system", "content": system}, *messages]
    input_ids = _template_ids(tokenizer, full, generation_prompt=False)
    if len(input_ids) > max_length:
        return None
    labels = [IGNORE] * len(input_ids)
    for i, message in enumerate(full):
        if message["role"] != "assistant":
            continue
        start = len(_template_ids(tokenizer, full[:i], generation_prompt=True))
        end = len(_template_ids(tokenizer, full[: i + 1], generation_prompt=False))
        labels[start:end] = input_ids[start:end]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": input_ids, "labels": labels, "length": len(input_ids)}


def examples_tokenize(
    tokenizer, rows: list[dict], *, system: str, max_length: int
) -> tuple[list[dict], int]:
    """Tokenize snapshot rows; return (features, number dropped as too long)."""
    features = []
    for row in rows:
        feature = chat_tokenize(tokenizer, row["messages"], system=system, max_length=max_length)
        if feature is not None:
            features.append(feature)
    return features, len(rows) - len(features)


class ChatCollator:
    """Right-pad a batch to its longest sequence (length-bucketed batches keep that short)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        input_ids, labels, attention = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE] * pad)
            attention.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(input_ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(attention),
        }
