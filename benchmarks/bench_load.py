"""Load and fault benchmark: many customers at once, a web process killed mid-stream, idle
sockets. Against 127.0.0.1 only, `make run` defaults (SQLite, in-memory channel layer), the
real model, short replies. Run with `make bench-load`.

Prints, per scenario: sockets opened, replies delivered, error frames by code, `queued`
frames, replies lost (stored customer messages with neither a reply nor a failure mark: must
be 0) and time to first token p50/p95 (from the customer's first attempt, retries included).
Customers behave like the chat page: on `overloaded` or `rate_limited` they wait the
`retry_after` the server gave and send again. Each customer has its own session and its own
address (X-Forwarded-For; daphne runs with --proxy-headers as it should behind a proxy).
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import sqlite3
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
sys.path.insert(0, str(ROOT))

from benchmarks.bench_chat import QUESTIONS, app_wait, free_port, percentile  # noqa: E402

LOST_SQL = """
SELECT COUNT(*) FROM chatbot_message c JOIN chatbot_conversation v ON v.id = c.conversation_id
WHERE c.role = 'customer' AND c.reply_failed_at IS NULL AND v.status = 'bot'
AND NOT EXISTS (SELECT 1 FROM chatbot_message r WHERE r.conversation_id = c.conversation_id
                AND r.role != 'customer' AND r.created_at > c.created_at)
"""


class Server:
    """daphne as `make run` starts it (replies_settle first, as deploy/Procfile does)."""

    def __init__(self, env: dict, port: int):
        self.env, self.port, self.proc = env, port, None
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "replies_settle"], cwd=ROOT, env=self.env, check=True
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-v", "0", "--proxy-headers", "-b", "127.0.0.1"]
            + ["-p", str(self.port), "chatbot.asgi:application"],
            cwd=ROOT,
            env=self.env,
        )
        app_wait(self.base)
        time.sleep(3)  # the warm-up loads the model

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def session_cookie(base: str, address: str) -> str:
    request = urllib.request.Request(base + "/", headers={"X-Forwarded-For": address})
    with urllib.request.urlopen(request, timeout=60) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith("sessionid="):
                return header.split(";", 1)[0]
    raise RuntimeError("No session cookie from the chat page")


async def customer(base: str, n: int, stats: dict, deadline: float) -> None:
    """One customer: own session and address, one question, retries as told."""
    address = f"10.{n // 250}.{n % 250}.1"
    cookie = await asyncio.to_thread(session_cookie, base, address)
    headers = {"Cookie": cookie, "Origin": base, "X-Forwarded-For": address}
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    async with websockets.connect(url, additional_headers=headers, open_timeout=60) as ws:
        stats["sockets"] += 1
        await asyncio.wait_for(ws.recv(), 60)  # history
        first_try = time.perf_counter()
        while time.perf_counter() < deadline:
            await ws.send(json.dumps({"type": "customer_message", "text": QUESTIONS[n % 20]}))
            retry = None
            while retry is None:
                left = deadline - time.perf_counter()
                frame = json.loads(await asyncio.wait_for(ws.recv(), max(1.0, left)))
                if frame["type"] == "queued":
                    stats["queued"] += 1
                elif frame["type"] == "token" and n not in stats["ttft"]:
                    stats["ttft"][n] = time.perf_counter() - first_try
                elif frame["type"] == "bot_message":
                    stats["delivered"] += 1
                    return
                elif frame["type"] == "error":
                    stats["errors"][frame["code"]] += 1
                    if frame["code"] not in ("overloaded", "rate_limited", "busy"):
                        return
                    retry = float(frame.get("retry_after", 5))
            await asyncio.sleep(retry)


def new_stats() -> dict:
    return {"sockets": 0, "delivered": 0, "queued": 0, "errors": Counter(), "ttft": {}}


async def crowd(base: str, customers: int, seconds: float, stats: dict) -> float:
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    results = await asyncio.gather(
        *(customer(base, n, stats, deadline) for n in range(customers)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            stats["errors"][f"client:{type(result).__name__}"] += 1
    return time.perf_counter() - start


def lost(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute(LOST_SQL).fetchone()[0]


def lost_after_settling(db: Path, seconds: float = 180) -> int:
    """Unanswered customer messages once replies still in flight had time to end (each ends
    stored or marked failed within the engine timeouts); more than 0 means lost."""
    deadline = time.monotonic() + seconds
    while (count := lost(db)) and time.monotonic() < deadline:
        time.sleep(1)
    return count


def marked_failed(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        sql = "SELECT COUNT(*) FROM chatbot_message WHERE reply_failed_at IS NOT NULL"
        return connection.execute(sql).fetchone()[0]


def report(title: str, stats: dict, **extra) -> None:
    ttfts = list(stats["ttft"].values())
    print(f"\n== {title}")
    print(f"sockets opened        {stats['sockets']}")
    print(f"replies delivered     {stats['delivered']}")
    print(f"queued frames         {stats['queued']}")
    print(f"error frames by code  {dict(sorted(stats['errors'].items())) or '{}'}")
    for key, value in extra.items():
        print(f"{key:21s} {value}")
    if ttfts:
        p50, p95 = statistics.median(ttfts), percentile(ttfts, 0.95)
        print(f"TTFT p50 / p95        {p50:.2f} s / {p95:.2f} s  ({len(ttfts)} replies)")


async def idle_sockets(base: str, count: int) -> tuple[int, list]:
    cookie = await asyncio.to_thread(session_cookie, base, "10.255.0.1")
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    headers = {"Cookie": cookie, "Origin": base}
    opened = []
    for _ in range(count):
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=60)
        await ws.recv()
        opened.append(ws)
    return len(opened), opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--restart-customers", type=int, default=40)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=300, help="time limit per crowd")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    data_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    model_dir = os.environ.get("CHAT_BASE_MODEL_PATH") or str(
        ROOT / "var" / "models" / "smollm2-135m-instruct"
    )
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "CHAT_BASE_MODEL_PATH": model_dir,
        "SERVING_WARMUP": "1",
        "SERVING_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "ERROR",
    }
    env.pop("DATABASE_URL", None)  # `make run` defaults: a throwaway SQLite database
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    db = data_dir / "db.sqlite3"
    server = Server(env, free_port())
    server.start()
    try:
        stats = new_stats()
        wall = asyncio.run(crowd(server.base, args.customers, args.seconds, stats))
        report(
            f"{args.customers} customers at once ({args.max_new_tokens}-token replies)",
            stats,
            **{
                "wall time": f"{wall:.1f} s",
                "replies lost": lost_after_settling(db),
                "marked failed": marked_failed(db),
            },
        )

        stats = new_stats()

        async def killed_mid_stream() -> None:
            task = asyncio.ensure_future(
                crowd(server.base, args.restart_customers, args.seconds, stats)
            )
            while not stats["ttft"] and not task.done():
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.kill)
            await task

        asyncio.run(killed_mid_stream())
        lost_before = lost(db)
        server.start()  # replies_settle, then daphne
        report(
            f"{args.restart_customers} customers, web process killed mid-stream and restarted",
            stats,
            **{
                "unanswered at kill": lost_before,
                "replies lost": lost_after_settling(db),
                "marked failed (total)": marked_failed(db),
            },
        )

        async def idle() -> None:
            before = server.rss_mib()
            count, sockets = await idle_sockets(server.base, args.idle)
            await asyncio.sleep(2)
            after = server.rss_mib()
            print(f"\n== {count} idle sockets on one web process")
            print(f"server RSS            {before:.0f} MiB -> {after:.0f} MiB")
            print(f"memory per socket     {(after - before) * 1024 / max(1, count):.1f} KiB")
            await asyncio.gather(*(ws.close() for ws in sockets))

        asyncio.run(idle())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
