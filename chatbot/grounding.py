"""What a reply is grounded in: the agents' approved answer, then knowledge-base passages.

One embedding of the customer's last message serves both searches. Blocking (model and
database): the reply path calls `grounding_find` in a pool thread. A failure in either
search is logged and the reply goes ahead without it.
"""

import logging
from dataclasses import dataclass, replace

from django.conf import settings

from chatbot.approved.store import AnswerMatch, answer_match
from chatbot.knowledge.selectors import Hit, hits_sources, passages_for_vector
from chatbot.prompting import chat_messages, system_prompt
from chatbot.serving.engine import GenerationParams
from chatbot.serving.gateway import default_params

log = logging.getLogger(__name__)


@dataclass
class Grounding:
    approved: AnswerMatch | None = None
    hits: list[Hit] | None = None  # None: retrieval off or failed (the prompt says nothing)

    @property
    def verbatim(self) -> bool:
        """The approved text itself is the reply (a very close match)."""
        return self.approved is not None and self.approved.verbatim

    def system(self) -> str:
        approved = self.approved.answer if self.approved else None
        return system_prompt(self.hits, approved=approved)

    def messages(self, history: list[tuple[str, str]]) -> list[dict]:
        """The model's prompt: system prompt, the approved exchange, the conversation."""
        example = (self.approved.question, self.approved.answer) if self.approved else None
        return chat_messages(history, system=self.system(), example=example)

    def params(self) -> GenerationParams:
        """How the model writes this reply: the serving defaults, and with an approved answer
        in the prompt its tokens favoured by APPROVED_COPY_BIAS, those continuing it in order
        by APPROVED_COPY_FOLLOW_BIAS more (the small model otherwise mostly ignores it;
        benchmarks/calibrate_copy_bias.py)."""
        params = default_params()
        if self.approved and not self.approved.verbatim and settings.APPROVED_COPY_BIAS:
            params = replace(
                params,
                copy_text=self.approved.answer,
                copy_bias=settings.APPROVED_COPY_BIAS,
                copy_follow_bias=settings.APPROVED_COPY_FOLLOW_BIAS,
            )
        return params

    def sources(self) -> list[dict]:
        cited = [self.approved.source()] if self.approved else []
        return cited + hits_sources(self.hits or [])


def grounding_find(question: str | None) -> Grounding:
    memory, retrieval = settings.APPROVED_ANSWERS, settings.KNOWLEDGE_RETRIEVAL
    if not question or not (memory or retrieval):
        return Grounding()
    from chatbot.knowledge.embedding import texts_embed

    try:
        vector = texts_embed([question])
    except Exception:  # noqa: BLE001 - a broken embedding model must not stop the chat
        log.exception("Embedding the question failed; answering without grounding")
        return Grounding()
    grounding = Grounding()
    if memory:
        try:
            grounding.approved = answer_match(vector)
        except Exception:  # noqa: BLE001
            log.exception("Approved-answer search failed; answering without it")
    if retrieval and not grounding.verbatim:
        try:
            grounding.hits = passages_for_vector(
                vector, k=settings.KNOWLEDGE_TOP_K, min_score=settings.KNOWLEDGE_MIN_SCORE
            )
        except Exception:  # noqa: BLE001
            log.exception("Knowledge retrieval failed; answering without it")
    return grounding
