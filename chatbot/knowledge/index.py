"""The faiss index: built by size, saved atomically in one checksummed file.

Small collections use exact search (`IndexFlatIP` under an id map); from
`settings.KNOWLEDGE_FLAT_MAX` vectors on, an inverted-file index (`IndexIVFFlat`, inner
product) trades a little recall for much less work per query. Both take passage ids
directly and support removal, so article changes update the index in place. Vectors are
L2-normalised: scores are cosine similarities.

The file is a NumPy `.npz` (a zip: a corrupt or truncated file fails its CRC check on
load) holding the index bytes, the passage ids it contains and a small metadata record.
"""

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from chatbot.knowledge.embedding import DIMENSION, MODEL_NAME

FORMAT = 1


class IndexUnreadable(Exception):
    """The index file is missing, corrupt or from another format/model: rebuild it."""


@dataclass
class KnowledgeIndex:
    index: faiss.Index
    ids: np.ndarray  # int64, sorted: the passage ids in the index
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def __len__(self) -> int:
        return len(self.ids)


def index_kind_for(count: int, *, flat_max: int) -> str:
    return "flat" if count < flat_max else "ivf"


def ivf_lists_for(count: int) -> int:
    # faiss' rule of thumb: about 4*sqrt(n) lists, each trained on >= 39 points.
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def index_build(
    vectors: np.ndarray, ids: np.ndarray, *, flat_max: int, nprobe: int
) -> KnowledgeIndex:
    """A new index over `vectors` (n, 384) float32 with passage `ids` (n,) int64."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, DIMENSION)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    kind = index_kind_for(len(ids), flat_max=flat_max)
    meta = {"format": FORMAT, "model": MODEL_NAME, "kind": kind, "trained_on": len(ids)}
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMENSION))
    else:
        lists = ivf_lists_for(len(ids))
        ivf = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(DIMENSION), DIMENSION, lists, faiss.METRIC_INNER_PRODUCT
        )
        ivf.train(vectors)
        ivf.nprobe = min(nprobe, lists)
        meta.update(lists=lists, nprobe=ivf.nprobe)
        index = ivf
    if len(ids):
        index.add_with_ids(vectors, ids)
    order = np.sort(ids)
    return KnowledgeIndex(index=index, ids=order, meta=meta)


def index_needs_rebuild(current: KnowledgeIndex, count: int, *, flat_max: int) -> bool:
    """Whether `count` vectors call for a fresh index rather than an update in place."""
    wanted = index_kind_for(count, flat_max=flat_max)
    if wanted != current.kind:
        return True
    # IVF centroids trained on far fewer (or more) vectors than it now holds balance badly.
    trained = current.meta.get("trained_on", 0)
    return wanted == "ivf" and not (trained / 2 <= count <= trained * 2)


def index_update(current: KnowledgeIndex, *, remove: np.ndarray, add_vectors, add_ids) -> None:
    """Remove passage ids and add new vectors in place."""
    if len(remove):
        # faiss's Python wrapper takes an id array here (its stubs know only IDSelector).
        current.index.remove_ids(np.ascontiguousarray(remove, dtype=np.int64))  # type: ignore[arg-type]
    if len(add_ids):
        current.index.add_with_ids(
            np.ascontiguousarray(add_vectors, dtype=np.float32).reshape(-1, DIMENSION),
            np.ascontiguousarray(add_ids, dtype=np.int64),
        )
    kept = np.setdiff1d(current.ids, remove, assume_unique=True)
    current.ids = np.union1d(kept, np.asarray(add_ids, dtype=np.int64))


def index_search(current: KnowledgeIndex, queries: np.ndarray, k: int):
    """(scores, ids), each (len(queries), k); missing results have id -1."""
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, DIMENSION)
    k = max(1, min(k, len(current.ids))) if len(current.ids) else 1
    if not len(current.ids):
        n = len(queries)
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    return current.index.search(queries, k)


def ids_fingerprint(ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def index_save(current: KnowledgeIndex, path: Path) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**current.meta, "count": len(current.ids), "fingerprint": ids_fingerprint(current.ids)}
    current.meta = meta
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            index=faiss.serialize_index(current.index),
            ids=current.ids,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def index_load(path: Path) -> KnowledgeIndex:
    """Read an index file; raise IndexUnreadable if it is missing, corrupt or foreign."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            ids = data["ids"].astype(np.int64)
            raw = data["index"]
        index = faiss.deserialize_index(raw)
    except FileNotFoundError as exc:
        raise IndexUnreadable(f"no index file at {path}") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise IndexUnreadable(f"corrupt index file {path}: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("model") != MODEL_NAME:
        raise IndexUnreadable(f"index file {path} is from another format or model")
    if index.ntotal != len(ids) or meta.get("fingerprint") != ids_fingerprint(ids):
        raise IndexUnreadable(f"index file {path} is inconsistent")
    if meta.get("kind") == "ivf":
        faiss.extract_index_ivf(index).nprobe = meta["nprobe"]
    return KnowledgeIndex(index=index, ids=ids, meta=meta)
