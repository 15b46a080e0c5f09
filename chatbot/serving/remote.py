"""Stream a reply from the model server (llama.cpp's llama-server in router mode).

The prompt is rendered and fitted here with the version's own tokenizer, exactly as the
in-process engine does, and sent as token ids to `/completion`; the server streams the
reply back as server-sent events. Every failure (no server, a timeout, the server dying
mid-reply) ends the stream with one error event, never with silence.
"""

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from functools import lru_cache

from django.conf import settings

from chatbot.prompting import prompt_fit
from chatbot.serving.engine import Event, GenerationParams
from chatbot.serving.model_server import model_id, model_publish
from chatbot.serving.versions import ServingTarget

log = logging.getLogger(__name__)

_tokenizer_lock = threading.Lock()

# llama.cpp's suggested DRY strength (its README); 1.1x token penalty over the prompt's tail
# scored worse on the seed cases (README "Model server").
DRY_MULTIPLIER = 0.8


class ModelServerError(RuntimeError):
    """The model server could not be reached or answered with an error."""


def _tokenizer(path: str):
    # One lock around import and load: transformers' lazy imports race when many replies
    # start at once in pool threads.
    with _tokenizer_lock:
        return _tokenizer_load(path)


@lru_cache(maxsize=8)
def _tokenizer_load(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def prompt_ids(messages: list[dict], target: ServingTarget, params: GenerationParams) -> list[int]:
    """The chat as token ids, cut to the context budget (blocking: call off the loop)."""
    from pathlib import Path

    folder = Path(target.artifact_path)
    tokenizer = _tokenizer(
        str(folder if (folder / "tokenizer_config.json").exists() else target.base_path)
    )
    budget = max(16, params.context_tokens - params.max_new_tokens)
    fitted = prompt_fit(tokenizer, messages, budget)
    ids = tokenizer.apply_chat_template(fitted, add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def completion_request(ids: list[int], model: str, params: GenerationParams) -> dict:
    """The `/completion` body whose sampling matches the in-process engine's.

    Greedy at temperature 0; otherwise plain softmax sampling (no top-k/top-p/min-p).
    Repetition: our engine penalizes tokens of the reply only, llama.cpp's penalty also those
    of the prompt's tail (the end-of-turn token, the question's words), which cost 0.03-0.15
    of MiniLM similarity on seed cases; so where the engine would penalize repetition, the
    server uses llama.cpp's DRY sampler instead, which only penalizes repeated sequences
    (measured: README "Model server").
    """
    return {
        "model": model,
        "prompt": ids,
        "n_predict": params.max_new_tokens,
        "temperature": params.temperature,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "dry_multiplier": DRY_MULTIPLIER if params.repetition_penalty != 1.0 else 0.0,
        "stream": True,
        "cache_prompt": True,
    }


async def _sse_events(response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                yield json.loads(payload)


async def remote_reply_stream(
    messages: list[dict],
    target: ServingTarget,
    params: GenerationParams,
    *,
    url: str | None = None,
) -> AsyncIterator[Event]:
    """Yield token events, then one done or error event, streamed from the model server."""
    import httpx
    from asgiref.sync import sync_to_async

    url = (url or settings.MODEL_SERVER_URL).rstrip("/")
    ids = await sync_to_async(prompt_ids, thread_sensitive=False)(messages, target, params)
    body = completion_request(ids, model_id(target), params)
    # The read timeout also bounds the wait for the answer's headers, which _relay's token
    # timeouts do not cover: a server that accepts and never answers must not hang a reply.
    read = max(settings.MODEL_SERVER_FIRST_TOKEN_TIMEOUT, settings.MODEL_SERVER_TOKEN_TIMEOUT)
    timeout = httpx.Timeout(settings.MODEL_SERVER_CONNECT_TIMEOUT, read=read)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            for attempt in range(2):
                async with client.stream("POST", f"{url}/completion", json=body) as response:
                    if response.status_code in (400, 404) and attempt == 0:
                        detail = (await response.aread()).decode(errors="replace")
                        if "model" not in detail.lower():
                            raise ModelServerError(f"model server refused: {detail[:300]}")
                        # A version it has not seen yet: publish its GGUF, then retry once.
                        await sync_to_async(model_publish, thread_sensitive=False)(target, url)
                        continue
                    if response.status_code != 200:
                        detail = (await response.aread()).decode(errors="replace")
                        raise ModelServerError(
                            f"model server answered {response.status_code}: {detail[:300]}"
                        )
                    async for event in _relay(response, len(ids)):
                        yield event
                    return
    except (httpx.HTTPError, ModelServerError, TimeoutError, ValueError) as exc:
        log.error("Model server %s failed: %s", url, exc)
        yield Event("error", text=f"model server failed: {_describe(exc)}")


async def _relay(response, prompt_tokens: int) -> AsyncIterator[Event]:
    """Turn the server's events into ours, with a first-token and a next-token timeout."""
    events = _sse_events(response)
    wait = settings.MODEL_SERVER_FIRST_TOKEN_TIMEOUT
    count = 0
    while True:
        try:
            data = await asyncio.wait_for(anext(events), wait)
        except StopAsyncIteration:
            raise ModelServerError("the reply ended before it was complete") from None
        except TimeoutError:
            raise TimeoutError(f"no token within {wait:g} s") from None
        wait = settings.MODEL_SERVER_TOKEN_TIMEOUT
        if "error" in data:
            raise ModelServerError(str(data["error"]))
        if data.get("content"):
            count += 1
            yield Event("token", text=data["content"])
        if data.get("stop"):
            yield Event(
                "done",
                token_count=int(data.get("tokens_predicted", count)),
                truncated=data.get("stop_type") == "limit",
                prompt_tokens=int(data.get("tokens_evaluated", prompt_tokens)),
            )
            return


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
