"""The one door from chat code to model serving.

One engine per loaded checkpoint, created on first use. When the active version changes,
new replies go to the new engine while replies already streaming finish on the old one,
which then stops. Nothing here runs model code on the event loop.
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from chatbot.serving.engine import Engine, EngineClosed, Event, GenerationParams
from chatbot.serving.loading import model_load
from chatbot.serving.versions import ServingTarget

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def default_params() -> GenerationParams:
    return GenerationParams(
        max_new_tokens=settings.SERVING_MAX_NEW_TOKENS,
        context_tokens=settings.SERVING_CONTEXT_TOKENS,
        temperature=settings.SERVING_TEMPERATURE,
        repetition_penalty=settings.SERVING_REPETITION_PENALTY,
    )


def engine_for(target: ServingTarget) -> Engine:
    """The engine serving `target`, loading it if needed (blocking: call off the loop).

    Raises ModelLoadError for a corrupt or missing checkpoint; engines already running
    are left untouched in that case.
    """
    with _lock:
        engine = _engines.get(target.artifact_path)
        if engine:
            return engine
        loaded = model_load(
            target.artifact_path, base_path=target.base_path, dtype=settings.SERVING_DTYPE
        )
        engine = Engine(
            loaded, max_batch=settings.SERVING_MAX_BATCH, threads=settings.SERVING_THREADS
        )
        for path, old in list(_engines.items()):
            old.stop()  # drains: replies in flight finish on the old model
            del _engines[path]
        _engines[target.artifact_path] = engine
        return engine


def engines_shutdown() -> None:
    with _lock:
        for engine in _engines.values():
            engine.stop()
        _engines.clear()


async def reply_stream(
    messages: list[dict], target: ServingTarget, params: GenerationParams | None = None
) -> AsyncIterator[Event]:
    """Yield token events, then one done (or error) event, for one chat.

    With MODEL_SERVER_URL set the model server generates; otherwise an engine in this process.
    """
    params = params or default_params()
    if settings.MODEL_SERVER_URL:
        from chatbot.serving.remote import remote_reply_stream

        async for event in remote_reply_stream(messages, target, params):
            yield event
        return
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    for _attempt in range(3):
        engine = await sync_to_async(engine_for, thread_sensitive=False)(target)
        try:
            cancel = engine.submit(messages, params, emit)
            break
        except EngineClosed:
            continue
    else:
        raise RuntimeError("No engine accepted the request")
    finished = False
    try:
        while True:
            event = await events.get()
            if event.kind != "token":
                finished = True
            yield event
            if finished:
                return
    finally:
        if not finished:
            cancel.set()
