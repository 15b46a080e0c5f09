"""Load the active model when the server starts, so the first customer does not wait."""

import logging
import threading

log = logging.getLogger(__name__)


def warmup() -> None:
    from django.db import close_old_connections

    from chatbot.serving import gateway
    from chatbot.serving.cluster import remote_serving
    from chatbot.serving.engine import GenerationParams, engine_timing_probe
    from chatbot.serving.versions import active_serving_target

    try:
        target = active_serving_target()
        if remote_serving():
            _remote_warmup(target)
            return
        engine = gateway.engine_for(target)
        probe = engine_timing_probe(
            engine, [{"role": "user", "content": "Hello"}], GenerationParams(max_new_tokens=2)
        )
        log.info("Model v%s warm (probe %.2f s)", target.version_number, probe["total"])
    except Exception:  # noqa: BLE001 - the server still starts; replies report the error
        log.exception("Model warm-up failed")
    finally:
        close_old_connections()


def _remote_warmup(target) -> None:
    """Load the tokenizer here and the version in the model server with a 2-token reply."""
    import asyncio

    from chatbot.serving.engine import GenerationParams
    from chatbot.serving.remote import remote_reply_stream

    async def probe() -> list:
        params = GenerationParams(max_new_tokens=2)
        messages = [{"role": "user", "content": "Hello"}]
        return [event async for event in remote_reply_stream(messages, target, params)]

    events = asyncio.run(probe())
    log.info("Model server warm for v%s: %s", target.version_number, events[-1].kind)


def warmup_all() -> None:
    """One after the other: loading models in parallel threads races inside transformers."""
    from chatbot.knowledge.store import knowledge_warmup

    warmup()
    knowledge_warmup()


def warmup_in_background() -> None:
    threading.Thread(target=warmup_all, name="warmup", daemon=True).start()
