"""Load and fault benchmark: many customers at once, a web process killed mid-stream, idle
sockets, Redis restarted mid-stream, a Celery trainer killed mid-run. Against 127.0.0.1 only,
the real model, short replies. Run with `make bench-load` (`--only SCENARIO` for one).

The first three scenarios run on `make run` defaults (SQLite, in-memory channel layer); the
Redis and trainer scenarios each start their own redis-server (no persistence, a free port) as
channel layer, rate-limit store and Celery broker, with SQLite as the database.

Prints, per crowd: sockets opened, replies delivered, error frames by code, `queued`
frames, replies lost (stored customer messages with neither a reply nor a failure mark: must
be 0) and time to first token p50/p95 (from the customer's first attempt, retries included).
Customers behave like the chat page: on `overloaded` or `rate_limited` they wait the
`retry_after` the server gave and send again; a dropped socket is reopened and the history
read, as the page does. Each customer has its own session and its own address
(X-Forwarded-For; daphne runs with --proxy-headers as it should behind a proxy).
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_chat import (  # noqa: E402
    QUESTIONS,
    app_wait,
    free_port,
    manage,
    percentile,
)

SCENARIOS = ("crowd", "web-restart", "idle", "redis-restart", "trainer-killed")

LOST_SQL = """
SELECT COUNT(*) FROM chatbot_message c JOIN chatbot_conversation v ON v.id = c.conversation_id
WHERE c.role = 'customer' AND c.reply_failed_at IS NULL AND v.status = 'bot'
AND NOT EXISTS (SELECT 1 FROM chatbot_message r WHERE r.conversation_id = c.conversation_id
                AND r.role != 'customer' AND r.created_at > c.created_at)
"""

# The trainer scenario's run: the real model on a slice of the shipped seed corpus, enough
# epochs that it is still training when killed, no evaluation before the kill.
TRAINER_ENV = {
    "TRAINING_MIN_EXAMPLES": "20",
    "TRAINING_EPOCHS": "50",
    "TRAINING_INCREMENTAL_EPOCHS": "50",
    "TRAINING_BATCH_SIZE": "2",
    "TRAINING_GRAD_ACCUM": "1",
    "TRAINING_MAX_LENGTH": "256",
    "TRAINING_EVAL_STEPS": "1000",
    "TRAINING_EVAL_SEED_SHARE": "0",
    "TRAINING_VALIDATION_SHARE": "0.1",
    # Lowered for the bench (defaults 15 s and 600 s), so a silent run is reaped within it too.
    "TRAINING_HEARTBEAT_SECONDS": "2",
    "TRAINING_STALE_AFTER_SECONDS": "30",
}
SEED_CORPUS = ROOT / "training" / "seed_data" / "bitext-cs-2000.jsonl"


class Server:
    """daphne as `make run` starts it (replies_settle first, as deploy/Procfile does)."""

    def __init__(self, env: dict, port: int, log: Path | None = None):
        self.env, self.port, self.log, self.proc = env, port, log, None
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        manage(self.env, "replies_settle")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-v", "0", "--proxy-headers", "-b", "127.0.0.1"]
            + ["-p", str(self.port), "chatbot.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a") if self.log else None,
            stderr=subprocess.STDOUT if self.log else None,
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

    def errors(self) -> int:
        """Exceptions daphne logged (each closed a socket)."""
        return self.log.read_text().count("Exception inside application") if self.log else 0


class RedisServer:
    """A throwaway redis-server on a free 127.0.0.1 port, no persistence: a restart empties it."""

    def __init__(self):
        self.port, self.proc = free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class Celery:
    """A Celery process as deploy/Procfile starts it (worker, trainer or beat), in its own
    process group so a kill takes its pool processes too."""

    def __init__(self, env: dict, log: Path, *args: str):
        self.env, self.log, self.args, self.proc = env, log, args, None

    def start(self, ready: str = "ready.") -> None:
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "chatbot", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while ready not in self.log.read_text()[seen:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery {self.args[0]} did not start: see {self.log}")
            time.sleep(0.5)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def session_cookie(base: str, address: str) -> str:
    request = urllib.request.Request(base + "/", headers={"X-Forwarded-For": address})
    with urllib.request.urlopen(request, timeout=60) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith("sessionid="):
                return header.split(";", 1)[0]
    raise RuntimeError("No session cookie from the chat page")


async def exchange(ws, n: int, stats: dict, deadline: float, first_try: float, send: bool) -> None:
    """Ask (if `send`) and read frames until the reply or a refusal for good; retries as told."""
    sent = time.perf_counter()
    while time.perf_counter() < deadline:
        if send:
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "customer_message", "text": QUESTIONS[n % 20]}))
        send, retry = True, None
        while retry is None:
            left = deadline - time.perf_counter()
            frame = json.loads(await asyncio.wait_for(ws.recv(), max(1.0, left)))
            if frame["type"] in ("queued", "token", "error") and n not in stats["heard"]:
                stats["heard"][n] = time.perf_counter() - sent  # after the first message
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


async def customer(base: str, n: int, stats: dict, deadline: float) -> None:
    """One customer: own session and address, one question, retries as told; a socket that
    drops is reopened (1 s later) and the history tells whether the reply came meanwhile."""
    address = f"10.{n // 250}.{n % 250}.1"
    cookie = await asyncio.to_thread(session_cookie, base, address)
    headers = {"Cookie": cookie, "Origin": base, "X-Forwarded-For": address}
    url = base.replace("http", "ws", 1) + "/ws/chat/"
    first_try = time.perf_counter()
    while True:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=60) as ws:
                stats["sockets"] += 1
                history = json.loads(await asyncio.wait_for(ws.recv(), 60))
                asked = [m for m in history["messages"] if m["role"] == "customer"]
                if asked and asked[-1]["reply_failed"]:
                    stats["errors"]["history:reply_failed"] += 1
                    return
                if asked and history["messages"][-1]["role"] != "customer":
                    stats["delivered_from_history"] += 1
                    return
                await exchange(ws, n, stats, deadline, first_try, send=not asked)
                return
        except (websockets.ConnectionClosed, OSError) as exc:
            stats["dropped"][type(exc).__name__] += 1
            if time.perf_counter() > deadline or not stats["reconnect"]:
                raise
            await asyncio.sleep(1)


def new_stats(*, reconnect: bool = False) -> dict:
    return {
        "sockets": 0,
        "delivered": 0,
        "delivered_from_history": 0,
        "queued": 0,
        "errors": Counter(),
        "dropped": Counter(),
        "reconnect": reconnect,
        "ttft": {},
        "heard": {},
    }


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


def db_query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute(sql, args).fetchall()


def lost(db: Path) -> int:
    return db_query(db, LOST_SQL)[0][0]


def lost_after_settling(db: Path, seconds: float = 180) -> int:
    """Unanswered customer messages once replies still in flight had time to end (each ends
    stored or marked failed within the engine timeouts); more than 0 means lost."""
    deadline = time.monotonic() + seconds
    while (count := lost(db)) and time.monotonic() < deadline:
        time.sleep(1)
    return count


def marked_failed(db: Path) -> int:
    sql = "SELECT COUNT(*) FROM chatbot_message WHERE reply_failed_at IS NOT NULL"
    return db_query(db, sql)[0][0]


def report(title: str, stats: dict, **extra) -> None:
    ttfts = list(stats["ttft"].values())
    print(f"\n== {title}", flush=True)
    print(f"sockets opened        {stats['sockets']}")
    print(f"replies delivered     {stats['delivered']}")
    if stats["reconnect"]:
        print(f"  seen on reconnect   {stats['delivered_from_history']}")
        print(f"sockets dropped       {dict(sorted(stats['dropped'].items())) or '{}'}")
    print(f"queued frames         {stats['queued']}")
    print(f"error frames by code  {dict(sorted(stats['errors'].items())) or '{}'}")
    for key, value in extra.items():
        print(f"{key:21s} {value}")
    heard = list(stats["heard"].values())
    if heard:
        late = sum(h > 1 for h in heard)
        print(
            f"first frame p50 / max {statistics.median(heard):.2f} s / {max(heard):.2f} s "
            f"(token, queue place or refusal after sending; {late} later than 1 s)"
        )
    if ttfts:
        p50, p95 = statistics.median(ttfts), percentile(ttfts, 0.95)
        print(f"TTFT p50 / p95        {p50:.2f} s / {p95:.2f} s  ({len(ttfts)} replies)")
    sys.stdout.flush()


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


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A scenario's data folder (database, logs): removed after it, kept if it failed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        print(f"(the failed scenario's database and logs are in {path})", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


def app_env(args, data_dir: Path, redis_url: str | None = None) -> dict:
    """The web process's settings: `make run` defaults (SQLite; Redis only if given)."""
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
    env.pop("DATABASE_URL", None)  # a throwaway SQLite database
    env.pop("REDIS_URL", None)
    env.pop("MODEL_SERVER_URL", None)  # the model in the web process unless --model-server
    if redis_url:
        env["REDIS_URL"] = redis_url
    manage(env, "migrate", "-v0")
    return env


def model_server_start(env: dict, data_dir: Path) -> subprocess.Popen:
    """`manage.py model_server` (llama-server) as `make run` starts it; sets MODEL_SERVER_URL."""
    from benchmarks.bench_chat import health_wait

    env["MODEL_SERVER_URL"] = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "model_server", "--url", env["MODEL_SERVER_URL"]],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=(data_dir / "model-server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    health_wait(env["MODEL_SERVER_URL"] + "/health")
    return proc


def in_process_scenarios(args, only: set[str], data_dir: Path) -> None:
    """The crowd, the web process killed mid-stream, idle sockets: one daphne, no Redis; with
    --model-server, daphne streams from a model server as under `make run`."""
    env = app_env(args, data_dir)
    model_server = model_server_start(env, data_dir) if args.model_server else None
    if model_server:
        print(f"(replies from the model server at {env['MODEL_SERVER_URL']})")
    db = data_dir / "db.sqlite3"
    server = Server(env, free_port())
    server.start()
    try:
        if "crowd" in only:
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

        if "web-restart" in only:
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

        if "idle" in only:

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
        if model_server:
            os.killpg(model_server.pid, signal.SIGTERM)
            model_server.wait(timeout=30)


def redis_restart_scenario(args, data_dir: Path) -> None:
    """A crowd on the Redis channel layer; Redis is killed once the first token streamed and
    started again (empty) `--redis-down` seconds later."""
    store = RedisServer()
    server = None
    try:
        store.start()
        env = app_env(args, data_dir, store.url)
        db = data_dir / "db.sqlite3"
        server = Server(env, free_port(), data_dir / "web.log")
        server.start()
        stats = new_stats(reconnect=True)
        timing: dict[str, float] = {}

        async def redis_restarted() -> None:
            task = asyncio.ensure_future(
                crowd(server.base, args.restart_customers, args.seconds, stats)
            )
            while not stats["ttft"] and not task.done():
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            await asyncio.to_thread(store.kill)
            await asyncio.sleep(args.redis_down)
            await asyncio.to_thread(store.start)
            timing["down"] = time.perf_counter() - started
            await task

        asyncio.run(redis_restarted())
        report(
            f"{args.restart_customers} customers, Redis killed mid-stream and restarted "
            f"(empty) {timing['down']:.1f} s later",
            stats,
            **{
                "web process": "alive" if server.proc.poll() is None else "died",
                "sockets closed by web": f"{server.errors()} (on Redis errors)",
                "replies lost": lost_after_settling(db),
                "marked failed": marked_failed(db),
            },
        )
        after = new_stats(reconnect=True)
        asyncio.run(crowd(server.base, args.restart_customers, args.seconds, after))
        report(
            f"{args.restart_customers} new customers once Redis was back",
            after,
            **{"replies lost": lost_after_settling(db), "marked failed (total)": marked_failed(db)},
        )
    finally:
        if server:
            server.stop()
        store.stop()


RUN_SQL = "SELECT status, stage, step, total_steps, worker, error FROM training_trainingrun"


def run_state(db: Path, run_id: int) -> dict:
    row = db_query(db, RUN_SQL + " WHERE id = ?", run_id)[0]
    return dict(zip(("status", "stage", "step", "total", "worker", "error"), row, strict=True))


def run_wait(db: Path, run_id: int, done, seconds: float, what: str) -> dict:
    deadline = time.monotonic() + seconds
    while not done(state := run_state(db, run_id)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out waiting for {what}: {state}")
        time.sleep(0.5)
    return state


def versions(db: Path) -> str:
    rows = db_query(db, "SELECT number, status FROM training_modelversion ORDER BY number")
    return ", ".join(f"v{number} {status}" for number, status in rows)


def retrain(env: dict) -> int:
    return int(manage(env, "retrain", "--by", "bench-load").split()[1])


def trainer_scenario(args, data_dir: Path) -> None:
    """deploy/Procfile's worker, trainer and beat on their own Redis; a retrain of the real
    model; the trainer killed (SIGKILL, its whole process group) while it trains."""
    store = RedisServer()
    server, procs = None, []
    try:
        store.start()
        env = {**app_env(args, data_dir, store.url), **TRAINER_ENV}
        celery_env = {**env, "LOG_LEVEL": "INFO"}
        db = data_dir / "db.sqlite3"
        seed = data_dir / "seed.jsonl"
        lines = SEED_CORPUS.read_text(encoding="utf-8").splitlines()
        seed.write_text("\n".join(lines[:: len(lines) // args.train_rows][: args.train_rows]))
        manage(env, "import_dataset", str(seed))
        manage(env, "setup_schedule")
        # Beat runs only the reaper, every --reap-every seconds (5 minutes by default).
        manage(env, "shell", "-c", REAPER_ONLY.format(seconds=args.reap_every))
        server = Server(env, free_port(), data_dir / "web.log")
        server.start()
        queues = {"worker": "celery", "trainer": "training"}
        celery = {
            name: Celery(
                celery_env,
                data_dir / f"{name}.log",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                f"--queues={queue}",
                "--prefetch-multiplier=1",
                f"--hostname={name}@%h",
            )
            for name, queue in queues.items()
        }
        celery["beat"] = Celery(celery_env, data_dir / "beat.log", "beat", "--loglevel=INFO")
        for name in ("worker", "trainer", "beat"):
            procs.append(celery[name])
            celery[name].start(ready="beat: Starting" if name == "beat" else "ready.")

        first = retrain(env)
        training = run_wait(
            db,
            first,
            lambda s: (
                s["status"] not in ("queued", "running")
                or (s["stage"] == "train" and s["step"] >= args.kill_at_step)
            ),
            600,
            "training to start",
        )
        if training["status"] != "running":
            raise RuntimeError(f"Run {first} ended before it trained: {training}")
        active_before = versions(db)
        during = new_stats(reconnect=True)
        timing: dict[str, float] = {}

        async def killed_while_training() -> None:
            task = asyncio.ensure_future(
                crowd(server.base, args.restart_customers, args.seconds, during)
            )
            await asyncio.sleep(1)
            await asyncio.to_thread(celery["trainer"].kill)
            killed = time.perf_counter()
            await asyncio.to_thread(
                run_wait, db, first, lambda s: s["status"] != "running", 600, "the reaper"
            )
            timing["reaped"] = time.perf_counter() - killed
            await task

        asyncio.run(killed_while_training())
        failed = run_state(db, first)
        active_after = versions(db)

        second = retrain(env)  # refused as busy if the first were still "running"
        restarted = time.perf_counter()
        celery["trainer"].start()
        run_wait(db, second, lambda s: s["status"] != "queued", 300, "the new run to start")
        timing["second"] = time.perf_counter() - restarted
        after = new_stats(reconnect=True)
        asyncio.run(crowd(server.base, args.restart_customers, args.seconds, after))
        manage(env, "shell", "-c", CANCEL.format(run_id=second))
        second_end = run_wait(
            db, second, lambda s: s["status"] not in ("queued", "running"), 300, "the cancel"
        )

        print(
            f"\n== Celery trainer killed mid-run (SIGKILL of its process group, step "
            f"{training['step']}/{training['total']} of run {first}, stage {training['stage']})"
        )
        print(
            "bench settings        TRAINING_HEARTBEAT_SECONDS=2, TRAINING_STALE_AFTER_SECONDS=30"
            f", reaper every {args.reap_every} s by beat (defaults 15 s, 600 s, 5 min); "
            f"{args.train_rows} seed rows, real model"
        )
        print(f"run {first} after kill      {failed['status']}: {failed['error']}")
        print(f"reaper took           {timing['reaped']:.1f} s (kill -> run failed)")
        print(f"versions before kill  {active_before}")
        print(f"versions after reap   {active_after}")
        print(
            f"new retrain           run {second} accepted; running on the restarted trainer "
            f"after {timing['second']:.1f} s; then {second_end['status']} (cancel asked)"
        )
        report(
            "chat while the trainer was killed and reaped",
            during,
            **{
                "replies lost": lost_after_settling(db),
            },
        )
        report(
            f"chat after the reap (run {second} running)",
            after,
            **{
                "replies lost": lost_after_settling(db),
                "marked failed (total)": marked_failed(db),
            },
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
        if server:
            server.stop()
        store.stop()


REAPER_ONLY = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every={seconds}, period=IntervalSchedule.SECONDS)
PeriodicTask.objects.exclude(task="training.tasks.reap_stale_runs").update(enabled=False)
PeriodicTask.objects.filter(task="training.tasks.reap_stale_runs").update(interval=every)
"""
CANCEL = "from training.runs import run_cancel; run_cancel(run_id={run_id}, actor='bench-load')"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="repeatable")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument(
        "--restart-customers", type=int, default=40, help="customers in each fault scenario"
    )
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=300, help="time limit per crowd")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis is down")
    parser.add_argument("--train-rows", type=int, default=60, help="seed rows the run trains on")
    parser.add_argument("--kill-at-step", type=int, default=2)
    parser.add_argument("--reap-every", type=int, default=10, help="beat's reaper interval (s)")
    parser.add_argument(
        "--model-server",
        action="store_true",
        help="crowd, web-restart, idle: replies from a model server (llama-server), as `make run`",
    )
    args = parser.parse_args()
    only = set(args.only or SCENARIOS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if only & {"crowd", "web-restart", "idle"}:
        with scratch("bench-load-") as data_dir:
            in_process_scenarios(args, only, data_dir)
    if "redis-restart" in only:
        with scratch("bench-load-redis-") as data_dir:
            redis_restart_scenario(args, data_dir)
    if "trainer-killed" in only:
        with scratch("bench-load-trainer-") as data_dir:
            trainer_scenario(args, data_dir)


if __name__ == "__main__":
    main()
