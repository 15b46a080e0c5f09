"""Chat serving benchmark: start the app as `make run` does and measure it over WebSockets.

The app gets the real model, the demo knowledge base (retrieval on: passages in every prompt)
and, unless `--in-process`, its model server (`manage.py model_server`, llama-server) with
the web process streaming from it. Prints time to first token (p50, p95) over 20 fixed
questions asked one at a time, decode tokens/s for one conversation, aggregate tokens/s and
the slowest chat's decode rate with 4 and 8 conversations at once; side by side, the
reference engine alone (llama-server, straight `/completion` requests, no app) on the very
requests the app sent for those 8 chats (prompts made by the app's own grounding and
gateway code), one at a time and then all at once, with the ratios the issue's bars use;
then 50 customers arriving at once: when each first heard back (a token, or a `queued`
frame with its place), time to first token, the real wait over the `queued` frames'
estimates, frames by type; and peak memory (VmHWM) of the web process and of the model
server. Run with `make bench-chat`.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    "How long does shipping take?",
    "Can I return a jacket I bought three weeks ago?",
    "How do I get a refund?",
    "I was charged twice for my order, what should I do?",
    "Can I change the delivery address of my order?",
    "Do you ship internationally?",
    "How can I track my package?",
    "I forgot my password and can't log in.",
    "Which payment methods do you accept?",
    "My item arrived damaged. What now?",
    "How do I cancel an order I placed an hour ago?",
    "Can I exchange shoes for a different size?",
    "When will my refund show up on my card?",
    "How do I delete my account?",
    "Is there a fee for returns?",
    "Can I order a gift card for a friend?",  # (asking for a human would hand off: no bot reply)
    "Do you have a newsletter I can unsubscribe from?",
    "I received the wrong item in my parcel.",
    "How do I update my billing information?",
    "What are your customer support hours?",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_wait(base: str, *, tries: int = 600) -> None:
    """Block until the app at `base` answers its chat page (0.2 s between tries)."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(base + "/", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"The app at {base} did not start")


def health_wait(url: str, *, seconds: float = 300) -> None:
    """Block until `url` answers 200 (the model server is up and its model converted)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def manage(env: dict, *args: str) -> str:
    """Run a manage.py command with `env`; its standard output (its output too if it fails)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def session_cookie(base: str) -> str:
    with urllib.request.urlopen(base + "/") as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith("sessionid="):
                return header.split(";", 1)[0]
    raise RuntimeError("No session cookie from the chat page")


async def ask(base: str, question: str, frames: Counter | None = None) -> dict:
    """One customer (own session) asks one question; times from sending it.

    `heard`: the first frame that tells the customer something (a token or their place in
    the queue); `ttft`: the first token."""
    cookie = await asyncio.to_thread(session_cookie, base)
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    headers = {"Cookie": cookie, "Origin": base}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 60))  # history
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "customer_message", "text": question}))
        first = last = heard = None
        estimates = []  # (when, seconds): each `queued` frame's estimated wait
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 300))
            except TimeoutError as exc:
                raise RuntimeError(f"No reply to {question!r} (handed off to a human?)") from exc
            if frames is not None:
                frames[frame["type"]] += 1
            if frame["type"] in ("token", "queued"):
                heard = heard or time.perf_counter()
            if frame["type"] == "queued" and frame.get("wait_seconds"):
                estimates.append((time.perf_counter(), frame["wait_seconds"]))
            if frame["type"] == "token":
                last = time.perf_counter()
                first = first or last
            elif frame["type"] == "bot_message":
                end = time.perf_counter()
                tokens = frame["token_count"]
                decode_seconds = (last or end) - first
                return {
                    "heard": heard - start,
                    "ttft": first - start,
                    "decode_seconds": decode_seconds,
                    "decode": (tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0,
                    "total": end - start,
                    "tokens": tokens,
                    # the real wait over each estimate (1 = exact, 2 = twice as long)
                    "wait_over_estimate": [(first - when) / wait for when, wait in estimates],
                }
            elif frame["type"] == "error" and frame.get("code") == "overloaded":
                # A clear refusal with a retry hint: the chat page waits and sends again.
                heard = heard or time.perf_counter()
                await asyncio.sleep(frame.get("retry_after", 15))
                await ws.send(json.dumps({"type": "customer_message", "text": question}))
            elif frame["type"] == "error" and frame.get("code") == "generation_failed":
                # Clear, not silent, but not served.
                return {"failed": True, "heard": (heard or time.perf_counter()) - start}
            elif frame["type"] == "error":
                raise RuntimeError(frame)


# Run by `manage.py shell` in the app's environment: the `/completion` bodies the app sends
# for these questions (grounding, prompt cut and sampling by the app's own code).
ENGINE_BODIES = """
import json, os
from chatbot.grounding import grounding_find
from chatbot.serving.model_server import model_id
from chatbot.serving.remote import completion_request, request_tokens
from chatbot.serving.versions import active_serving_target
target = active_serving_target()
bodies = []
for question in json.loads(os.environ["BENCH_QUESTIONS"]):
    grounding = grounding_find(question)
    params = grounding.params()
    messages = grounding.messages([("customer", question)])
    ids, biased, _ = request_tokens(messages, target, params)
    bodies.append(completion_request(ids, model_id(target), params, biased=biased))
print(json.dumps(bodies))
"""


def engine_bodies(env: dict, questions: list[str]) -> list[dict]:
    out = manage({**env, "BENCH_QUESTIONS": json.dumps(questions)}, "shell", "-c", ENGINE_BODIES)
    return json.loads(out.strip().splitlines()[-1])


def decode_rate(replies: list[dict]) -> float:
    """Tokens after the first over the seconds between first and last, over `replies`."""
    timed = [r for r in replies if r["decode_seconds"] > 0]
    return sum(r["tokens"] - 1 for r in timed) / sum(r["decode_seconds"] for r in timed)


async def side_by_side(base: str, url: str, questions: list[str], bodies: list[dict]) -> dict:
    """The app and the reference engine alone on the same requests, one at a time in turn
    (app, engine, app, ...: the host's speed drifts), then the engine with all at once.

    The prompts are still in the server's slots from the app's round, so no pass prefills
    much: "all at once" is the engine's own ceiling for these chats on this machine."""
    from benchmarks.bench_model_server import completion_stream

    app, engine = [], []
    for question, body in zip(questions, bodies, strict=True):
        app.append(await ask(base, question))
        engine.append(await completion_stream(url, body))
    start = time.perf_counter()
    batch = await asyncio.gather(*(completion_stream(url, body) for body in bodies))
    wall = time.perf_counter() - start
    return {
        "app_decode": decode_rate(app),
        "engine_decode": decode_rate(engine),
        "engine_aggregate": sum(r["tokens"] for r in batch) / wall,
        "engine_slowest": min(decode_rate([r]) for r in batch if r["decode_seconds"] > 0),
    }


async def run(base: str, *, env: dict, model_url: str) -> dict:
    await ask(base, "Hello")  # warm-up
    single = [await ask(base, q) for q in QUESTIONS]
    ttfts = [r["ttft"] for r in single]
    results = {
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": percentile(ttfts, 0.95),
        "decode_tokens_per_s_one_conversation": decode_rate(single),
        "mean_reply_tokens": statistics.mean(r["tokens"] for r in single),
    }
    for n in (4, 8):
        start = time.perf_counter()
        batch = await asyncio.gather(*(ask(base, QUESTIONS[i % 20]) for i in range(n)))
        wall = time.perf_counter() - start
        results[f"aggregate_tokens_per_s_{n}_conversations"] = (
            sum(r["tokens"] for r in batch) / wall
        )
        results[f"slowest_chat_decode_tokens_per_s_{n}_conversations"] = min(
            r["decode"] for r in batch
        )
        results[f"ttft_p50_{n}_conversations"] = statistics.median(r["ttft"] for r in batch)
        print(
            f"{n} at once (tokens, decode tokens/s):",
            [(r["tokens"], round(r["decode"], 1)) for r in sorted(batch, key=lambda r: r["ttft"])],
        )
    if model_url:
        # Side by side: llama.cpp alone on the very requests the app sent for the 8 chats.
        eight = QUESTIONS[:8]
        bodies = await asyncio.to_thread(engine_bodies, env, eight)
        pair = await side_by_side(base, model_url, eight, bodies)
        single = pair["engine_decode"]
        results["app_decode_tokens_per_s_one_at_a_time"] = pair["app_decode"]
        results["engine_decode_tokens_per_s_one_at_a_time"] = single
        results["engine_aggregate_tokens_per_s_8_at_once"] = pair["engine_aggregate"]
        results["engine_slowest_chat_decode_tokens_per_s_8_at_once"] = pair["engine_slowest"]
        results["ratio_app_one_at_a_time_to_engine_single_stream"] = pair["app_decode"] / single
        results["ratio_app_8_conversations_to_engine_single_stream"] = (
            results["aggregate_tokens_per_s_8_conversations"] / single
        )
        results["ratio_engine_8_at_once_to_engine_single_stream"] = (
            pair["engine_aggregate"] / single
        )
    frames: Counter = Counter()
    arrivals = await asyncio.gather(
        *(ask(base, f"{QUESTIONS[i % 20]} (customer {i})", frames) for i in range(50)),
        return_exceptions=True,
    )
    told = [r for r in arrivals if isinstance(r, dict)]
    answered = [r for r in told if not r.get("failed")]
    heard = [r["heard"] for r in told]
    results["arrivals_50_answered"] = len(answered)
    results["arrivals_50_generation_failed"] = len(told) - len(answered)
    results["arrivals_50_heard_back_max_s"] = max(heard, default=float("nan"))
    results["arrivals_50_heard_back_within_5s"] = sum(h <= 5 for h in heard)
    ratios = [ratio for r in answered for ratio in r["wait_over_estimate"]]
    if ratios:  # every `queued` frame that carried an estimate
        for q in (0.1, 0.5, 0.9):
            results[f"arrivals_50_real_wait_over_estimate_p{round(q * 100)}"] = percentile(
                ratios, q
            )
    results["arrivals_50_ttft_p50"] = statistics.median(r["ttft"] for r in answered)
    results["arrivals_50_ttft_max"] = max(r["ttft"] for r in answered)
    results["arrivals_50_queued_frames"] = frames["queued"]
    print("50 arrivals, frames by type:", dict(frames))
    for failure in (r for r in arrivals if not isinstance(r, dict)):
        print("50 arrivals, failed:", failure)
    return results


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="generate in the web process (MODEL_SERVER_URL empty) instead of the model server",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_model_server import group_memory_mib

    data_dir = tempfile.mkdtemp(prefix="bench-chat-")
    model_dir = os.environ.get("CHAT_BASE_MODEL_PATH") or str(
        ROOT / "var" / "models" / "smollm2-135m-instruct"
    )
    model_url = "" if args.in_process else f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATA_DIR": data_dir,
        "CHAT_BASE_MODEL_PATH": model_dir,
        "MODEL_SERVER_URL": model_url,
        "SERVING_WARMUP": "1",
        "CHAT_RATE_LIMIT_MESSAGES": "1000",
        # Every customer here comes from 127.0.0.1; the per-session limits still apply.
        "CHAT_IP_RATE_LIMIT_MESSAGES": "0",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)  # a throwaway SQLite database
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "-v0")
    manage(env, "import_kb", "chatbot/demo/knowledge")  # retrieval on, as after `make run`
    model_server = None
    if model_url:
        model_server = subprocess.Popen(
            [sys.executable, "manage.py", "model_server", "--url", model_url],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=open(Path(data_dir) / "model-server.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        health_wait(model_url + "/health")  # converts the model to GGUF first (~20 s)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["chatbot.asgi:application"],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        app_wait(base, tries=600)
        time.sleep(3)  # let the warm-up load the model
        results = asyncio.run(run(base, env=env, model_url=model_url))
        results["web_process_peak_memory_mib"] = peak_memory_mib(server.pid)
        if model_server:
            results["model_server_peak_memory_mib"] = group_memory_mib(model_server.pid)[1]
    finally:
        server.terminate()
        server.wait(timeout=20)
        if model_server:
            os.killpg(model_server.pid, signal.SIGTERM)
            model_server.wait(timeout=20)
    engine = "model server (llama-server)" if model_url else "in-process engine"
    print(f"model: {model_dir}  served by: {engine}")
    for key, value in results.items():
        print(f"{key:50s} {value:10.3f}")


if __name__ == "__main__":
    main()
