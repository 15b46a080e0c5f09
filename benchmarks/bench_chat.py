"""Chat serving benchmark: start the app with the real model and measure it over WebSockets.

Prints time to first token (p50, p95) over 20 fixed questions asked one at a time, decode
tokens/s for one conversation, aggregate tokens/s with 4 and 8 conversations at once, and
the server's peak memory (VmHWM). Run with `make bench-chat`.
"""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


async def ask(base: str, question: str) -> dict:
    cookie = await asyncio.to_thread(session_cookie, base)
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    headers = {"Cookie": cookie, "Origin": base}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 60))  # history
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "customer_message", "text": question}))
        first = last = None
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
            except TimeoutError as exc:
                raise RuntimeError(f"No reply to {question!r} (handed off to a human?)") from exc
            if frame["type"] == "token":
                last = time.perf_counter()
                first = first or last
            elif frame["type"] == "bot_message":
                end = time.perf_counter()
                return {
                    "ttft": first - start,
                    "decode_seconds": (last or end) - first,
                    "total": end - start,
                    "tokens": frame["token_count"],
                }
            elif frame["type"] == "error":
                raise RuntimeError(frame)


async def run(base: str) -> dict:
    await ask(base, "Hello")  # warm-up
    single = [await ask(base, q) for q in QUESTIONS]
    ttfts = [r["ttft"] for r in single]
    decode = sum(r["tokens"] - 1 for r in single) / sum(r["decode_seconds"] for r in single)
    results = {
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": percentile(ttfts, 0.95),
        "decode_tokens_per_s_one_conversation": decode,
        "mean_reply_tokens": statistics.mean(r["tokens"] for r in single),
    }
    for n in (4, 8):
        start = time.perf_counter()
        batch = await asyncio.gather(*(ask(base, QUESTIONS[i % 20]) for i in range(n)))
        wall = time.perf_counter() - start
        results[f"aggregate_tokens_per_s_{n}_conversations"] = (
            sum(r["tokens"] for r in batch) / wall
        )
        results[f"ttft_p50_{n}_conversations"] = statistics.median(r["ttft"] for r in batch)
    return results


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    data_dir = tempfile.mkdtemp(prefix="bench-chat-")
    model_dir = os.environ.get("CHAT_BASE_MODEL_PATH") or str(
        ROOT / "var" / "models" / "smollm2-135m-instruct"
    )
    env = {
        **os.environ,
        "DATA_DIR": data_dir,
        "CHAT_BASE_MODEL_PATH": model_dir,
        "SERVING_WARMUP": "1",
        "CHAT_RATE_LIMIT_MESSAGES": "1000",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)  # a throwaway SQLite database
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "chatbot.asgi:application",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        app_wait(base, tries=300)
        time.sleep(3)  # let the warm-up load the model
        results = asyncio.run(run(base))
        results["server_peak_memory_mib"] = peak_memory_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"model: {model_dir}  dtype: {os.environ.get('SERVING_DTYPE', 'bfloat16')}")
    for key, value in results.items():
        print(f"{key:45s} {value:10.3f}")


if __name__ == "__main__":
    main()
