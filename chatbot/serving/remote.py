"""Stream a reply from a model server (llama.cpp's llama-server in router mode).

The prompt is rendered and fitted here with the version's own tokenizer, exactly as the
in-process engine does, and sent as token ids to `/completion`; the server streams the
reply back as server-sent events. With several servers (`cluster.py`) a chat goes to the
best-ranked one and moves on to the next while nothing has been sent. Every failure (no
server, a timeout, the server dying mid-reply) ends the stream with one error event, never
with silence.
"""

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from chatbot.prompting import prompt_fit
from chatbot.serving.cluster import ServerInfo, pool
from chatbot.serving.engine import (
    Event,
    GenerationParams,
    copy_follow_ids,
    copy_text_ids,
    copy_token_ids,
    copy_used_up,
)
from chatbot.serving.loading import MODEL_LOAD_LOCK
from chatbot.serving.model_server import auth_headers, model_id
from chatbot.serving.versions import ServingTarget

log = logging.getLogger(__name__)


# llama.cpp's suggested DRY strength (its README); 1.1x token penalty over the prompt's tail
# scored worse on the seed cases (README "Model server").
DRY_MULTIPLIER = 0.8


class ModelServerError(RuntimeError):
    """The model server could not be reached or answered with an error."""


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every reply's client, built as httpx builds its default (same
    trusted CAs): building one reads the CA bundle (~20 ms of CPU on the event loop), which
    httpx would otherwise do for each reply."""
    import httpx

    return httpx.create_ssl_context()


def _tokenizer(path: str):
    # The process's one lock around transformers' imports and loads: its lazy imports race
    # when many replies start at once in pool threads, and with the embedding model's load
    # (a burst's first questions once failed with "cannot import name 'AutoModel'").
    with MODEL_LOAD_LOCK:
        return _tokenizer_load(path)


@lru_cache(maxsize=8)
def _tokenizer_load(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def slot_context_tokens(params: GenerationParams) -> int:
    """Tokens a chat may fill on the model server: its slot's share of the KV cache."""
    share = settings.MODEL_SERVER_KV_TOKENS // max(1, settings.MODEL_SERVER_SLOTS)
    return min(params.context_tokens, share)


def _target_tokenizer(target: ServingTarget):
    from pathlib import Path

    folder = Path(target.artifact_path)
    return _tokenizer(
        str(folder if (folder / "tokenizer_config.json").exists() else target.base_path)
    )


def prompt_ids(messages: list[dict], target: ServingTarget, params: GenerationParams) -> list[int]:
    """The chat as token ids, cut to the context budget (blocking: call off the loop)."""
    tokenizer = _target_tokenizer(target)
    budget = max(16, slot_context_tokens(params) - params.max_new_tokens)
    fitted = prompt_fit(tokenizer, messages, budget)
    ids = tokenizer.apply_chat_template(fitted, add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def request_tokens(
    messages: list[dict], target: ServingTarget, params: GenerationParams
) -> tuple[list[int], set[int] | None, list[int]]:
    """The prompt's token ids, the copy bias's token ids (None without a bias) and the copy
    text in order for the follow bias (empty without one). Blocking: call off the loop."""
    ids = prompt_ids(messages, target, params)
    tokenizer = _target_tokenizer(target)
    biased = copy_token_ids(tokenizer, params) if params.copy_bias else None
    return ids, biased, copy_text_ids(tokenizer, params)


def completion_request(
    ids: list[int], model: str, params: GenerationParams, *, biased: set[int] | None = None
) -> dict:
    """The `/completion` body whose sampling matches the in-process engine's.

    Greedy at temperature 0; otherwise plain softmax sampling (no top-k/top-p/min-p).
    Repetition: our engine penalizes tokens of the reply only, llama.cpp's penalty also those
    of the prompt's tail (the end-of-turn token, the question's words), which cost 0.03-0.15
    of MiniLM similarity on seed cases; so where the engine would penalize repetition, the
    server uses llama.cpp's DRY sampler instead, which only penalizes repeated sequences
    (measured: README "Model server"). `biased`: token ids given `params.copy_bias`; DRY
    is then off, as it also counts the prompt and would penalize copying the approved answer
    the bias asks for.
    """
    body = {
        "model": model,
        "prompt": ids,
        "n_predict": params.max_new_tokens,
        "temperature": params.temperature,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "dry_multiplier": (
            DRY_MULTIPLIER if params.repetition_penalty != 1.0 and not biased else 0.0
        ),
        "stream": True,
        "cache_prompt": True,
    }
    if biased:
        body["logit_bias"] = [[token, params.copy_bias] for token in sorted(biased)]
    return body


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
) -> AsyncGenerator[Event, None]:
    """Yield token events, then one done or error event, streamed from a model server.

    The servers are tried in `pool.ranked` order (or only `url`): one that fails before
    sending a token hands the chat to the next; one that fails after sending some ends the
    reply with an error event (the customer has seen part of it; a retry would repeat it).
    """
    import httpx
    from asgiref.sync import sync_to_async

    ids, biased, copy_ids = await sync_to_async(request_tokens, thread_sensitive=False)(
        messages, target, params
    )
    body = completion_request(ids, model_id(target), params, biased=biased)
    follow = _FollowCopy(copy_ids, params, target) if biased and copy_ids else None
    if url:
        servers = [ServerInfo(url.rstrip("/"))]
    else:
        servers = await sync_to_async(pool.ranked, thread_sensitive=False)(target.version_number)
    if not servers:
        yield Event("error", text="model server failed: no model server is configured or up")
        return
    error: Exception | None = None
    for server in servers:
        sent = 0
        pool.opened(server.url)
        try:
            async for event in _server_stream(server, body, target, len(ids), follow=follow):
                sent += event.kind == "token"
                yield event
            pool.succeeded(server.url)
            return
        except (httpx.HTTPError, ModelServerError, TimeoutError, ValueError) as exc:
            log.error("Model server %s failed after %s tokens: %s", server.url, sent, exc)
            pool.failed(server.url)
            error = exc
            if sent:
                yield Event("error", text=f"model server failed mid-reply: {_describe(exc)}")
                return
        finally:
            pool.closed(server.url)
    yield Event("error", text=f"model server failed: {_describe(error or ModelServerError())}")


@dataclass
class _FollowCopy:
    """A reply written under the follow bias: the bias changes with every token, so the
    server is asked for one token at a time (its prompt cache keeps each step to one
    decode), with the approved answer's next tokens biased anew."""

    copy_ids: list[int]
    params: GenerationParams
    target: ServingTarget

    def step_body(self, body: dict, generated: list[int]) -> dict:
        bias: dict[int, float] = {}
        if not copy_used_up(self.copy_ids, generated):
            bias = {token: self.params.copy_bias for token, _ in body["logit_bias"]}
            for token in copy_follow_ids(self.copy_ids, generated):
                bias[token] = bias.get(token, 0.0) + self.params.copy_follow_bias
        return {
            **body,
            "prompt": body["prompt"] + generated,
            "n_predict": 1,
            "stream": False,
            "return_tokens": True,
            "logit_bias": [[token, value] for token, value in sorted(bias.items())],
        }


async def _server_stream(
    server: ServerInfo,
    body: dict,
    target: ServingTarget,
    prompt_tokens: int,
    *,
    follow: _FollowCopy | None = None,
) -> AsyncIterator[Event]:
    """One server's reply; raises on any failure. A version the server does not know yet is
    requested (`version_request`) and the request sent once more."""
    import httpx

    # The read timeout also bounds the wait for the answer's headers, which _relay's token
    # timeouts do not cover: a server that accepts and never answers must not hang a reply.
    read = max(settings.MODEL_SERVER_FIRST_TOKEN_TIMEOUT, settings.MODEL_SERVER_TOKEN_TIMEOUT)
    timeout = httpx.Timeout(settings.MODEL_SERVER_CONNECT_TIMEOUT, read=read)
    async with httpx.AsyncClient(timeout=timeout, verify=_tls_context()) as client:
        if follow is not None:
            async for event in _follow_steps(client, server, body, follow, prompt_tokens):
                yield event
            return
        for attempt in range(2):
            url = f"{server.url}/completion"
            async with client.stream("POST", url, json=body, headers=auth_headers()) as response:
                if response.status_code in (400, 404) and attempt == 0:
                    await _version_missing(response, server, target)
                    continue
                await _raise_unless_ok(response)
                async for event in _relay(response, prompt_tokens):
                    yield event
                return


async def _version_missing(response, server: ServerInfo, target: ServingTarget) -> None:
    """A 400/404 answer: the server lacks the version (request it) or refused the body."""
    detail = (await response.aread()).decode(errors="replace")
    if "model" not in detail.lower():
        raise ModelServerError(f"model server refused: {detail[:300]}")
    await version_request(server, target)


async def _raise_unless_ok(response) -> None:
    if response.status_code != 200:
        detail = (await response.aread()).decode(errors="replace")
        raise ModelServerError(f"model server answered {response.status_code}: {detail[:300]}")


async def _follow_steps(
    client, server: ServerInfo, body: dict, follow: _FollowCopy, prompt_tokens: int
) -> AsyncIterator[Event]:
    """The reply one token per request (`_FollowCopy`), streamed as the engine streams it:
    the text decoded so far, an incomplete character held back until it is whole."""
    import httpx

    tokenizer = _target_tokenizer(follow.target)
    special = set(tokenizer.all_special_ids)
    generated: list[int] = []
    emitted = ""
    url = f"{server.url}/completion"
    missing_requested = False
    while len(generated) < follow.params.max_new_tokens:
        step = follow.step_body(body, generated)
        try:
            response = await client.post(url, json=step, headers=auth_headers())
        except httpx.RemoteProtocolError:
            # llama-server closes a kept-alive connection after a few requests (5) without
            # saying so: the step asks for nothing new, so it is sent again once.
            response = await client.post(url, json=step, headers=auth_headers())
        if response.status_code in (400, 404) and not missing_requested and not generated:
            missing_requested = True
            await _version_missing(response, server, follow.target)
            continue
        await _raise_unless_ok(response)
        data = response.json()
        if "error" in data:
            raise ModelServerError(str(data["error"]))
        tokens = [int(t) for t in data.get("tokens") or [] if int(t) not in special]
        generated += tokens
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if text.startswith(emitted) and not text.endswith("\ufffd") and len(text) > len(emitted):
            yield Event("token", text=text[len(emitted) :])
            emitted = text
        if data.get("stop_type") != "limit" or not tokens:
            break
    text = tokenizer.decode(generated, skip_special_tokens=True).rstrip("\ufffd")
    if text.startswith(emitted) and len(text) > len(emitted):
        yield Event("token", text=text[len(emitted) :])
    yield Event(
        "done",
        token_count=len(generated),
        truncated=len(generated) >= follow.params.max_new_tokens,
        prompt_tokens=prompt_tokens,
    )


async def version_request(server: ServerInfo, target: ServingTarget) -> None:
    """Get `target` onto `server`. A server that announces itself loads versions itself:
    ask it over Redis and wait (MODEL_SERVER_LOAD_WAIT) until it lists the version. A bare
    llama-server (no announcement, or no Redis) shares this host's disk: publish its GGUF."""
    from asgiref.sync import sync_to_async

    from chatbot.serving.cluster import redis_client, servers_announced, version_announce
    from chatbot.serving.model_server import model_publish

    client = redis_client() if server.announced else None
    if client is None:
        await sync_to_async(model_publish, thread_sensitive=False)(target, server.url)
        return
    number = target.version_number
    await sync_to_async(version_announce)(client, version_id=target.version_id)
    deadline = asyncio.get_running_loop().time() + settings.MODEL_SERVER_LOAD_WAIT
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        found = await sync_to_async(servers_announced)(client)
        current = next((s for s in found if s.url == server.url), None)
        if current is None:
            raise ModelServerError(f"{server.url} stopped announcing itself")
        if number in current.versions:
            pool.forget()
            return
        if number in current.failed:
            raise ModelServerError(f"{server.url} cannot serve v{number}: {current.failed[number]}")
    raise ModelServerError(f"{server.url} did not load v{number} in time")


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
