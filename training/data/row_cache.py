"""An on-disk cache of one fixed-size numeric row per text (MiniLM embeddings, MinHash
signatures), keyed by a sha1 of the text, so a rebuild computes only the texts it has not seen.
"""

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def rows_cached(
    texts: list[str],
    *,
    path: Path,
    compute: Callable[[list[str]], np.ndarray],
    cache: bool = True,
) -> np.ndarray:
    """One row per text (same order), `compute`d only for texts missing from the npz at `path`,
    which is then rewritten atomically. A damaged cache file is ignored and replaced.
    `texts` must not be empty."""
    known: dict[str, np.ndarray] = {}
    if cache and path.exists():
        try:
            with np.load(path) as stored:
                known = dict(zip(stored["keys"].tolist(), stored["rows"], strict=True))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("Cache %s unreadable (%s): starting a new one.", path, exc)
    keys = [text_hash(text) for text in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        rows = compute([text for _, text in missing])
        known.update(zip([k for k, _ in missing], rows, strict=True))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
            np.savez(partial, keys=np.array(list(known)), rows=np.stack(list(known.values())))
            partial.replace(path)
    return np.stack([known[k] for k in keys])
