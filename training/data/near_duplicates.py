"""Near-duplicate pairs by word 3-shingle Jaccard similarity: MinHash LSH (datasketch) finds
candidate pairs, the exact Jaccard of their shingle sets decides.

Lexical, on purpose: MiniLM cosines over the whole corpus cost ~70-140 CPU-seconds per 2,000
examples on two cores, this ~1 s (README "What trains" -> Speed). A pair's verdict depends on
the two texts alone, never on the rest of the corpus. MinHash signatures are cached on disk by
text hash, so a rebuild hashes only new texts.
"""

import re
from pathlib import Path

import numpy as np
from django.conf import settings

from training.data.row_cache import rows_cached

SHINGLE_WORDS = 3
NUM_PERM = 128
SCHEME = "affine32"
SEED = 1
# LSH finds a pair at its own threshold only about half the time, so it looks lower and the
# exact Jaccard of each candidate pair keeps the real threshold.
CANDIDATE_MARGIN = 0.2
CACHE_FILE = f"minhash-w{SHINGLE_WORDS}-p{NUM_PERM}-{SCHEME}-s{SEED}.npz"


def text_shingles(text: str) -> set[str]:
    """Runs of SHINGLE_WORDS lowercased words (punctuation ignored); a shorter text is one."""
    words = re.findall(r"\w+", text.lower())
    starts = range(max(1, len(words) - SHINGLE_WORDS + 1))
    return {" ".join(words[i : i + SHINGLE_WORDS]) for i in starts}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _signatures(texts: list[str]) -> np.ndarray:
    from datasketch import MinHash

    minhashes = MinHash.bulk(
        ([s.encode() for s in text_shingles(text)] for text in texts),
        num_perm=NUM_PERM,
        seed=SEED,
        scheme=SCHEME,
    )
    return np.stack([m.hashvalues for m in minhashes])


def near_duplicate_neighbours(texts: list[str], *, threshold: float) -> list[set[int]]:
    """For each text, the indices of the other texts whose word 3-shingle Jaccard similarity
    to it is >= threshold (symmetric). Pairs under the LSH's reach (far below threshold) are
    never compared."""
    from datasketch import LeanMinHash, MinHashLSH

    neighbours: list[set[int]] = [set() for _ in texts]
    if len(texts) < 2:
        return neighbours
    path = Path(settings.DATA_DIR) / "cache" / CACHE_FILE
    signatures = rows_cached(texts, path=path, compute=_signatures)
    lsh = MinHashLSH(threshold=max(0.05, threshold - CANDIDATE_MARGIN), num_perm=NUM_PERM)
    minhashes = [LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME) for row in signatures]
    with lsh.insertion_session() as session:
        for i, minhash in enumerate(minhashes):
            session.insert(i, minhash, check_duplication=False)
    shingles = [text_shingles(text) for text in texts]
    for i, minhash in enumerate(minhashes):
        for j in lsh.query(minhash):
            if j > i and jaccard(shingles[i], shingles[j]) >= threshold:
                neighbours[i].add(j)
                neighbours[j].add(i)
    return neighbours
