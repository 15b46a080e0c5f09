"""Load the active model when the server starts, so the first customer does not wait."""

import logging
import threading

log = logging.getLogger(__name__)


def warmup() -> None:
    from django.db import close_old_connections

    from chatbot.serving import gateway
    from chatbot.serving.engine import GenerationParams, engine_timing_probe
    from chatbot.serving.versions import active_serving_target

    try:
        target = active_serving_target()
        engine = gateway.engine_for(target)
        probe = engine_timing_probe(
            engine, [{"role": "user", "content": "Hello"}], GenerationParams(max_new_tokens=2)
        )
        log.info("Model v%s warm (probe %.2f s)", target.version_number, probe["total"])
    except Exception:  # noqa: BLE001 - the server still starts; replies report the error
        log.exception("Model warm-up failed")
    finally:
        close_old_connections()


def warmup_all() -> None:
    """One after the other: loading models in parallel threads races inside transformers."""
    from chatbot.knowledge.services import knowledge_warmup

    warmup()
    knowledge_warmup()


def warmup_in_background() -> None:
    threading.Thread(target=warmup_all, name="warmup", daemon=True).start()
