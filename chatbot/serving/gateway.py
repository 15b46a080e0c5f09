"""The one door from chat code to model serving.

One engine per loaded checkpoint, created on first use. When the active version changes,
new replies go to the new engine while replies already streaming finish on the old one,
which then stops. Nothing here runs model code on the event loop.
"""

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from chatbot.artifacts import ArtifactError
from chatbot.serving.cluster import remote_serving
from chatbot.serving.engine import Engine, EngineClosed, Event, GenerationParams
from chatbot.serving.loading import ModelLoadError, model_load
from chatbot.serving.versions import ServingTarget, target_fetched

log = logging.getLogger(__name__)


class GenerationTimeout(RuntimeError):
    """The engine sent nothing for SERVING_EVENT_TIMEOUT_SECONDS; the request was cancelled."""


_engines: dict[str, Engine] = {}
# Versions served beside the active one (the staff playground), least recently used first.
_side_engines: dict[str, Engine] = {}
SIDE_ENGINES_MAX = 3
_lock = threading.Lock()
# Checkpoints that just failed to load: refused at once for a while rather than loaded again
# (under the lock) by every reply.
_load_failures: dict[str, tuple[float, ModelLoadError]] = {}
LOAD_FAILURE_MEMORY_SECONDS = 30.0


def default_params() -> GenerationParams:
    return GenerationParams(
        max_new_tokens=settings.SERVING_MAX_NEW_TOKENS,
        context_tokens=settings.SERVING_CONTEXT_TOKENS,
        temperature=settings.SERVING_TEMPERATURE,
        repetition_penalty=settings.SERVING_REPETITION_PENALTY,
    )


def _engine_start(target: ServingTarget) -> Engine:
    """Load `target` into a new engine; a checkpoint that just failed is refused at once."""
    failed = _load_failures.get(target.artifact_path)
    if failed and time.monotonic() - failed[0] < LOAD_FAILURE_MEMORY_SECONDS:
        raise failed[1]
    try:
        local = target_fetched(target)
        loaded = model_load(
            local.artifact_path, base_path=local.base_path, dtype=settings.SERVING_DTYPE
        )
    except ArtifactError as exc:
        error = ModelLoadError(str(exc))
        _load_failures[target.artifact_path] = (time.monotonic(), error)
        raise error from exc
    except ModelLoadError as exc:
        _load_failures[target.artifact_path] = (time.monotonic(), exc)
        raise
    _load_failures.pop(target.artifact_path, None)
    return Engine(loaded, max_batch=settings.SERVING_MAX_BATCH, threads=settings.SERVING_THREADS)


def engine_for(target: ServingTarget) -> Engine:
    """The engine serving `target`, loading it if needed (blocking: call off the loop).

    Raises ModelLoadError for a corrupt or missing checkpoint; engines already running
    are left untouched in that case.
    """
    with _lock:
        engine = _engines.get(target.artifact_path)
        if engine and engine.alive:
            return engine
        if engine:  # its thread died: say so loudly and load a fresh one
            log.error("The engine for %s had stopped; loading it again", target.artifact_path)
            del _engines[target.artifact_path]
        # A version staff tried out beside the active one is already loaded.
        side = _side_engines.pop(target.artifact_path, None)
        engine = side if side is not None and side.alive else _engine_start(target)
        for path, old in list(_engines.items()):
            old.stop()  # drains: replies in flight finish on the old model
            del _engines[path]
        _engines[target.artifact_path] = engine
        return engine


def side_engine_for(target: ServingTarget) -> Engine:
    """An engine for a version that is not (necessarily) the active one, for staff trying
    versions out: it never stops the engine customers are served by. At most
    SIDE_ENGINES_MAX are kept; the least recently used one stops (draining) first."""
    with _lock:
        if target.artifact_path in _engines:
            return _engines[target.artifact_path]
        engine = _side_engines.pop(target.artifact_path, None) or _engine_start(target)
        _side_engines[target.artifact_path] = engine
        while len(_side_engines) > SIDE_ENGINES_MAX:
            _side_engines.pop(next(iter(_side_engines))).stop()
        return engine


def engines_shutdown() -> None:
    with _lock:
        for engine in [*_engines.values(), *_side_engines.values()]:
            engine.stop()
        _engines.clear()
        _side_engines.clear()


async def reply_stream(
    messages: list[dict],
    target: ServingTarget,
    params: GenerationParams | None = None,
    *,
    side: bool = False,
) -> AsyncIterator[Event]:
    """Yield token events, then one done (or error) event, for one chat. `side`: serve
    `target` beside the active version (side_engine_for) instead of switching to it.

    With model servers configured (MODEL_SERVER_URL, MODEL_SERVER_DISCOVER) one of them
    generates (they serve any version they have, so `side` changes nothing there);
    otherwise an engine in this process.
    """
    params = params or default_params()
    if remote_serving():
        from chatbot.serving.remote import remote_reply_stream

        remote = remote_reply_stream(messages, target, params)
        try:
            async for event in remote:
                yield event
        finally:
            await remote.aclose()  # closing this stream stops the server's request at once
        return
    choose = side_engine_for if side else engine_for
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    for _attempt in range(3):
        engine = await sync_to_async(choose, thread_sensitive=False)(target)
        try:
            cancel = engine.submit(messages, params, emit)
            break
        except EngineClosed:
            continue
    else:
        raise RuntimeError("No engine accepted the request")
    finished = False
    timeout = settings.SERVING_EVENT_TIMEOUT_SECONDS
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout)
            except TimeoutError:
                raise GenerationTimeout(f"no answer from the engine in {timeout:.0f} s") from None
            if event.kind != "token":
                finished = True
            yield event
            if finished:
                return
    finally:
        if not finished:
            cancel.set()
