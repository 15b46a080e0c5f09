"""The approved-answer index: nearest approved customer question to a new one.

Each process keeps a faiss flat inner-product index over the active approved answers'
question embeddings. The database is the truth: before every search one query reads the
table's signature (active count, newest change) and the index is rebuilt from the stored
vectors when it moved, so a correction saved by any process is used by every process's
next reply. Reads only; writes are in `chatbot.approved.services`.
"""

import threading
from dataclasses import dataclass

import faiss
import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Q

from chatbot.approved.models import ApprovedAnswer
from chatbot.knowledge.embedding import DIMENSION

# Among matches this close to the best one, the newest answer wins: a newer correction of
# the same question replaces an older one.
NEWEST_WINS_WITHIN = 0.05
SEARCH_K = 10

_lock = threading.Lock()
_state: dict = {"signature": None, "index": None, "updated": {}}


@dataclass(frozen=True)
class AnswerMatch:
    answer_id: int
    question: str
    answer: str
    author_name: str
    origin: str
    score: float
    verbatim: bool

    def source(self) -> dict:
        """How the reply cites it (customers and agents see the title)."""
        verb = "corrected" if self.origin == ApprovedAnswer.Origin.CORRECTION else "approved"
        by = f" by {self.author_name}" if self.author_name else ""
        return {
            "kind": "approved",
            "answer_id": self.answer_id,
            "title": f"Approved answer, {verb}{by}",
            "score": round(self.score, 4),
            "verbatim": self.verbatim,
        }


def _signature() -> tuple:
    agg = ApprovedAnswer.objects.aggregate(
        active=Count("id", filter=Q(active=True)), changed=Max("updated_at")
    )
    return (agg["active"], agg["changed"])


def answer_index() -> tuple[faiss.Index | None, dict[int, float]]:
    """(index, {answer id: last change as a timestamp}) of the active answers, current."""
    signature = _signature()
    with _lock:
        if _state["signature"] == signature:
            return _state["index"], _state["updated"]
        rows = list(
            ApprovedAnswer.objects.filter(active=True).values_list("id", "embedding", "updated_at")
        )
        index = None
        if rows:
            vectors = np.stack([np.frombuffer(bytes(v), dtype=np.float32) for _, v, _ in rows])
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMENSION))
            index.add_with_ids(vectors.reshape(-1, DIMENSION), np.array([r[0] for r in rows]))
        updated = {pk: changed.timestamp() for pk, _, changed in rows}
        _state.update(signature=signature, index=index, updated=updated)
        return index, updated


def answer_index_clear() -> None:
    with _lock:
        _state.update(signature=None, index=None, updated={})


def answer_match(
    vector: np.ndarray, *, min_score: float | None = None, verbatim_score: float | None = None
) -> AnswerMatch | None:
    """The approved answer for a question embedding, or None below `min_score`.

    `verbatim` is set when the match is close enough (`verbatim_score`) for the approved
    text itself to be the reply. How close is the best match's score: the newest answer
    within `NEWEST_WINS_WITHIN` of it is chosen as the same question's current answer, not
    as a weaker match. Blocking (database): call off the event loop.
    """
    if min_score is None:
        min_score = settings.APPROVED_MATCH_MIN_SCORE
    if verbatim_score is None:
        verbatim_score = settings.APPROVED_VERBATIM_MIN_SCORE
    index, updated = answer_index()
    if index is None:
        return None
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, DIMENSION)
    scores, ids = index.search(query, min(SEARCH_K, index.ntotal))
    ranked = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    ranked = [(s, i) for s, i in ranked if s >= min_score]
    if not ranked:
        return None
    best = ranked[0][0]
    near = [(s, i) for s, i in ranked if s >= best - NEWEST_WINS_WITHIN]
    score, answer_id = max(near, key=lambda pair: (updated.get(pair[1], 0.0), pair[0]))
    row = ApprovedAnswer.objects.filter(pk=answer_id, active=True).first()
    if row is None:  # revoked since the index was read
        return None
    return AnswerMatch(
        answer_id=row.pk,
        question=row.question,
        answer=row.answer,
        author_name=row.author_name,
        origin=row.origin,
        score=score,
        verbatim=best >= verbatim_score,
    )
