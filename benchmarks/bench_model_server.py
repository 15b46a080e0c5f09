"""Model-server benchmark: llama-server on its own vs our path through the gateway.

Starts the model server (llama-server, router mode) on the active base model's GGUF and
measures, with a retrieval-length prompt (system prompt plus ~400 tokens of knowledge-base
passages), greedy, up to 128 new tokens:

- single chat, 5 runs: TTFT and decode tokens/s, raw (`/completion` straight to the server)
  and through `gateway.reply_stream` (what the chat consumer uses);
- 8 chats at once through the gateway: aggregate tokens/s and the slowest chat's decode rate;
- the engine's batched decode with fixed-length replies (`ignore_eos`): one stream, then 8 at
  once, in 3 alternating rounds: median aggregate, median and lowest ratio, slowest chat;
- a looser-band approved-answer reply, copy bias alone (streamed) vs with the follow bias
  (one token per request): TTFT and decode tokens/s;
- 50 chats arriving at once (16-token replies): TTFT p50 and max;
- the model server's memory (router plus model process, resident and peak);
- with BENCH_QUANTS="Q4_0 Q8_0 ...": the same figures for each weight format, one after the other.

Run with `make bench-chat` (after the WebSocket benchmark) or
`python benchmarks/bench_model_server.py` (`--follow-only`: the single-chat raw figures and
the follow-bias comparison, about a minute).
"""

import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW = 128
# A new question per chat: the prompt's tail differs, as for real customers (bench_openvino.py
# asks the same ones).
QUESTIONS = [
    "Can I return a jacket I bought three weeks ago?",
    "How long does shipping take?",
    "I was charged twice, what should I do?",
    "How do I change my delivery address?",
    "My parcel arrived damaged.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def retrieval_messages(question: str) -> list[dict]:
    from chatbot.prompting import chat_messages, system_prompt

    passages = []
    for path in sorted((ROOT / "chatbot" / "demo" / "knowledge").glob("*.md"))[:4]:
        passages.append(type("Hit", (), {"title": path.stem, "text": path.read_text()[:450]}))
    return chat_messages([("customer", question)], system=system_prompt(passages))


def group_memory_mib(pid: int) -> tuple[float, float]:
    """(resident now, sum of peaks) over the router and its children, MiB."""
    rss = peak = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) / 1024
        except (OSError, ProcessLookupError):
            continue
    return rss, peak


async def completion_stream(url: str, body: dict) -> dict:
    """One streamed `/completion` straight to llama-server, on its own connection: time to
    first token, seconds from first to last token, tokens, seconds in all."""
    import json

    import httpx

    start = time.perf_counter()
    first = last = None
    tokens = 0
    async with (
        httpx.AsyncClient(timeout=300) as client,
        client.stream(
            "POST", f"{url}/completion", json=body, headers={"Connection": "close"}
        ) as response,
    ):
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            if data.get("content"):
                last = time.perf_counter()
                first = first or last
            if data.get("stop"):
                tokens = data["tokens_predicted"]
    first = first or start
    return {
        "ttft": first - start,
        "decode_seconds": (last or first) - first,
        "tokens": tokens,
        "total": time.perf_counter() - start,
    }


async def raw_once(url: str, ids: list[int], model: str) -> dict:
    """One streamed `/completion` straight to llama-server."""
    from chatbot.serving.engine import GenerationParams
    from chatbot.serving.remote import completion_request

    body = completion_request(
        ids, model, GenerationParams(max_new_tokens=MAX_NEW, repetition_penalty=1.1)
    )
    reply = await completion_stream(url, body)
    reply["decode"] = (reply["tokens"] - 1) / reply["decode_seconds"]
    return reply


async def raw_fixed(url: str, ids_list: list[list[int]], model: str) -> dict:
    """Chats decoding exactly MAX_NEW tokens each (llama.cpp's `ignore_eos`, as
    llama-batched-bench does), at once, straight to llama-server: the engine's batched decode
    without replies ending early (with natural lengths a chat that stops at 9 tokens leaves 7
    in the batch). Aggregate tokens/s and the slowest chat's decode rate."""
    import json

    import httpx

    from chatbot.serving.engine import GenerationParams
    from chatbot.serving.remote import completion_request

    params = GenerationParams(max_new_tokens=MAX_NEW, repetition_penalty=1.1)

    async def one(ids: list[int]) -> float:
        body = {**completion_request(ids, model, params), "ignore_eos": True}
        first = last = None
        async with (
            httpx.AsyncClient(timeout=120) as client,
            client.stream("POST", f"{url}/completion", json=body) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("content"):
                    last = time.perf_counter()
                    first = first or last
        return (MAX_NEW - 1) / (last - first)

    start = time.perf_counter()
    rates = await asyncio.gather(*(one(ids) for ids in ids_list))
    wall = time.perf_counter() - start
    return {"aggregate": len(ids_list) * MAX_NEW / wall, "slowest": min(rates)}


async def ours_once(messages: list[dict], target, max_new: int = MAX_NEW, *, params=None) -> dict:
    """One reply through the gateway (tokenizing here, streaming from the model server)."""
    from chatbot.serving import gateway
    from chatbot.serving.engine import GenerationParams

    params = params or GenerationParams(max_new_tokens=max_new, repetition_penalty=1.1)
    start = time.perf_counter()
    first = last = None
    tokens = 0
    async for event in gateway.reply_stream(messages, target, params):
        if event.kind == "token":
            last = time.perf_counter()
            first = first or last
        elif event.kind == "done":
            tokens = event.token_count
        else:
            return {"error": event.text}
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
    return {"ttft": first - start, "decode": decode, "tokens": tokens}


# An approved answer as agents write them (the learning-loop bench's delivery policy).
APPROVED = (
    "Standard delivery takes 3 to 5 business days with GLS and is free from 60 euros. "
    "Express delivery with GLS arrives the next business day for 9 euros."
)


async def follow_measure(target) -> dict:
    """A looser-band reply (approved answer in the prompt) with the copy bias alone, streamed,
    vs with the follow bias, asked one token at a time (default biases): TTFT and decode
    tokens/s, medians of 3 alternating runs."""
    from dataclasses import replace

    from django.conf import settings

    from chatbot.prompting import chat_messages, system_prompt
    from chatbot.serving.engine import GenerationParams

    question = "How soon will my package get to me?"
    messages = chat_messages(
        [("customer", question)],
        system=system_prompt(None, approved=APPROVED),
        example=("How long does delivery take?", APPROVED),
    )
    bag = GenerationParams(
        max_new_tokens=MAX_NEW,
        repetition_penalty=1.1,
        copy_text=APPROVED,
        copy_bias=settings.APPROVED_COPY_BIAS,
    )
    follow = replace(bag, copy_follow_bias=settings.APPROVED_COPY_FOLLOW_BIAS)
    runs: dict[str, list[dict]] = {"bag": [], "follow": []}
    for _ in range(3):
        for name, params in (("bag", bag), ("follow", follow)):
            runs[name].append(await ours_once(messages, target, params=params))
    out = {}
    for name, results in runs.items():
        results = [r for r in results if "error" not in r]
        out[f"approved_{name}_ttft_p50"] = statistics.median(r["ttft"] for r in results)
        out[f"approved_{name}_decode"] = statistics.median(r["decode"] for r in results)
        out[f"approved_{name}_tokens"] = statistics.median(r["tokens"] for r in results)
    return out


def line(name: str, value: float, unit: str = "") -> None:
    print(f"{name:58s} {value:10.3f} {unit}")


async def measure(url: str, target, model: str, *, full: bool, follow_only: bool = False) -> dict:
    from chatbot.serving.engine import GenerationParams
    from chatbot.serving.remote import prompt_ids

    messages = retrieval_messages("Can I return a jacket I bought three weeks ago?")
    params_plain = GenerationParams(max_new_tokens=MAX_NEW)
    ids = prompt_ids(messages, target, params_plain)
    await raw_once(url, ids, model)  # warm: loads the model, fills the slot's prompt cache
    raws = [await raw_once(url, ids, model) for _ in range(5)]
    out = {
        "prompt_tokens": len(ids),
        "raw_ttft_p50": statistics.median(r["ttft"] for r in raws),
        "raw_decode": statistics.median(r["decode"] for r in raws),
    }
    if follow_only:
        return {**out, **(await follow_measure(target))}
    if not full:
        return out
    # A different question each run: the prompt's tail is new, as for a real customer.
    ours = [await ours_once(retrieval_messages(q), target) for q in QUESTIONS]
    out["ours_ttft_p50"] = statistics.median(r["ttft"] for r in ours)
    out["ours_decode"] = statistics.median(r["decode"] for r in ours)
    # 8 chats at once on a cold server (only one slot has seen the prompt's prefix), then
    # again once every slot has (a server that has been answering): the second is measured.
    start = time.perf_counter()
    cold = await asyncio.gather(
        *(ours_once(retrieval_messages(QUESTIONS[i % 5] + f" [{i}]"), target) for i in range(8))
    )
    out["eight_cold_aggregate"] = sum(r.get("tokens", 0) for r in cold) / (
        time.perf_counter() - start
    )
    out["eight_cold_ttft_max"] = max(r.get("ttft", float("nan")) for r in cold)
    start = time.perf_counter()
    eight = await asyncio.gather(
        *(ours_once(retrieval_messages(QUESTIONS[i % 5] + f" ({i})"), target) for i in range(8))
    )
    wall = time.perf_counter() - start
    out["eight_failed"] = sum("error" in r for r in eight)
    eight = [r for r in eight if "error" not in r]
    out["eight_aggregate"] = sum(r["tokens"] for r in eight) / wall
    out["eight_slowest_decode"] = min((r["decode"] for r in eight), default=float("nan"))
    out["eight_ttft_max"] = max((r["ttft"] for r in eight), default=float("nan"))
    # The engine's own batched decode, fixed-length: single stream and 8 at once alternated
    # in rounds, because this host's speed drifts by a third within minutes.
    eight_ids = [
        prompt_ids(retrieval_messages(QUESTIONS[i % 5] + f" ({i})"), target, params_plain)
        for i in range(8)
    ]
    await raw_fixed(url, eight_ids, model)  # every slot holds its prompt
    ratios, slowest, aggregates = [], [], []
    for _ in range(3):
        single = await raw_fixed(url, eight_ids[:1], model)
        eight_fixed = await raw_fixed(url, eight_ids, model)
        ratios.append(eight_fixed["aggregate"] / single["aggregate"])
        aggregates.append(eight_fixed["aggregate"])
        slowest.append(eight_fixed["slowest"])
    out["eight_fixed_aggregate_median"] = statistics.median(aggregates)
    out["eight_fixed_ratio_median"] = statistics.median(ratios)
    out["eight_fixed_ratio_min"] = min(ratios)
    out["eight_fixed_slowest_min"] = min(slowest)
    out.update(await follow_measure(target))
    fifty = await asyncio.gather(
        *(
            ours_once(retrieval_messages(f"Question {i}: {QUESTIONS[i % 5]}"), target, 16)
            for i in range(50)
        )
    )
    out["fifty_failed"] = sum("error" in r for r in fifty)
    ttfts = [r["ttft"] for r in fifty if "error" not in r]
    out["fifty_ttft_p50"] = statistics.median(ttfts) if ttfts else float("nan")
    out["fifty_ttft_max"] = max(ttfts, default=float("nan"))
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import override_settings

    from chatbot.serving.model_server import model_link, server_spawn
    from chatbot.serving.versions import ServingTarget, base_model_path

    base = str(base_model_path())
    quants = os.environ.get("BENCH_QUANTS", "").split() or [settings.MODEL_SERVER_QUANT]
    for quant in quants:
        models = Path(tempfile.mkdtemp(prefix="bench-models-"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        target = ServingTarget(version_id=1, version_number=1, artifact_path=base, base_path=base)
        with override_settings(
            MODEL_SERVER_QUANT=quant, MODEL_SERVER_MODELS_DIR=models, MODEL_SERVER_URL=url
        ):
            started = time.perf_counter()
            model_link(target)
            converted = time.perf_counter() - started
            proc = server_spawn(port=port, log_path=models / "server.log")
            try:
                only = "--follow-only" in sys.argv
                figures = asyncio.run(measure(url, target, "v1", full=True, follow_only=only))
                rss, peak = group_memory_mib(proc.pid)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
        print(
            f"\n== {quant} (GGUF ready in {converted:.1f} s; threads "
            f"{settings.MODEL_SERVER_THREADS}, slots {settings.MODEL_SERVER_SLOTS}) =="
        )
        for key, value in figures.items():
            line(key, value)
        line("model server resident memory (router + model)", rss, "MiB")
        line("model server peak memory (sum of peaks)", peak, "MiB")
        if "ours_decode" in figures:
            raw = figures["raw_decode"]
            line("ratio: our decode / raw llama-server decode", figures["ours_decode"] / raw)
            line("ratio: 8-chat aggregate / raw single stream", figures["eight_aggregate"] / raw)
        if "approved_follow_decode" in figures:
            line(
                "ratio: follow-bias decode / copy-bias-only decode",
                figures["approved_follow_decode"] / figures["approved_bag_decode"],
            )


if __name__ == "__main__":
    main()
