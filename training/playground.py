"""The staff playground: chat with any servable version (candidate, rejected, active, retired)
side by side before promoting one. Replies go through the serving gateway with an explicit
version, served beside the active one (customers' replies are never disturbed), and nothing
is stored: a playground chat is neither a customer conversation nor training data."""

import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from chatbot.grounding import grounding_find
from chatbot.prompting import system_prompt
from chatbot.serving import gateway
from chatbot.serving.loading import ModelLoadError
from chatbot.serving.versions import serving_target
from training.models import ModelVersion

PLAYABLE = (
    ModelVersion.Status.ACTIVE,
    ModelVersion.Status.CANDIDATE,
    ModelVersion.Status.REJECTED,
    ModelVersion.Status.RETIRED,
)
MAX_TURNS = 40


class PlaygroundError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def playground_versions() -> list[ModelVersion]:
    """Versions with a finished checkpoint, newest first."""
    return list(ModelVersion.objects.filter(status__in=PLAYABLE).order_by("-number"))


def playground_version(version_id) -> ModelVersion:
    version = None
    if isinstance(version_id, int) or (isinstance(version_id, str) and version_id.isdigit()):
        version = ModelVersion.objects.filter(pk=version_id, status__in=PLAYABLE).first()
    if version is None:
        raise PlaygroundError("unknown_version", "No finished model version with that id.")
    return version


def playground_messages_clean(raw) -> list[dict]:
    """The chat so far as {role: user|assistant, content} turns ending with the user's.

    Raises PlaygroundError with a clear reason for anything else."""
    if not isinstance(raw, list) or not raw:
        raise PlaygroundError("bad_messages", "Send the chat as a non-empty list of turns.")
    if len(raw) > MAX_TURNS:
        raise PlaygroundError("too_many_turns", f"At most {MAX_TURNS} turns; start over.")
    turns = []
    for turn in raw:
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise PlaygroundError(
                "bad_messages", 'Each turn is {"role": "user" | "assistant", "content": text}.'
            )
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise PlaygroundError(
                "message_too_long", f"Turns are at most {settings.CHAT_MAX_MESSAGE_CHARS} chars."
            )
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise PlaygroundError("empty_message", "The last turn must be your (non-empty) message.")
    return turns


def _system_for(question: str, *, grounded: bool) -> tuple[str, list[dict]]:
    """The system prompt customers' replies get (knowledge base and approved answers in the
    prompt; an approved answer is never given verbatim here, the model answers) or the plain
    one."""
    if not grounded:
        return system_prompt(), []
    grounding = grounding_find(question)
    return grounding.system(), grounding.sources()


async def playground_reply(
    *, version: ModelVersion, turns: list[dict], grounded: bool = True
) -> AsyncIterator[dict]:
    """Stream one version's reply: `sources`, then `token` events, then `done` (with token
    count and seconds) or `error`."""
    start = time.perf_counter()
    system, sources = await sync_to_async(_system_for, thread_sensitive=False)(
        turns[-1]["content"], grounded=grounded
    )
    yield {"type": "sources", "version": version.number, "sources": sources}
    messages = [{"role": "system", "content": system}, *turns]
    try:
        target = await sync_to_async(serving_target)(version)
        async for event in gateway.reply_stream(messages, target, side=True):
            if event.kind == "token":
                yield {"type": "token", "version": version.number, "text": event.text}
            elif event.kind == "done":
                yield {
                    "type": "done",
                    "version": version.number,
                    "token_count": event.token_count,
                    "seconds": round(time.perf_counter() - start, 2),
                }
            else:
                raise RuntimeError(event.text)
    except (ModelLoadError, RuntimeError) as exc:
        yield {"type": "error", "version": version.number, "detail": f"v{version.number}: {exc}"}
