"""Several model servers: spreading chats, failing over, and promotions reaching every host.

Real llama-server processes on the real model (its GGUF), real Redis and PostgreSQL.
"""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from chatbot.serving import gateway
from chatbot.serving.cluster import (
    ServerInfo,
    pool,
    redis_client,
    server_announce,
    servers_announced,
    servers_rank,
    version_announce,
)
from chatbot.serving.engine import GenerationParams
from chatbot.serving.model_server import gguf_ensure, model_link
from chatbot.serving.versions import serving_target
from tests.chatbot.test_model_server import adapter_make, base_target, free_port, spawn, stop

LONG = GenerationParams(max_new_tokens=200, temperature=0.0, repetition_penalty=1.0)
SHORT = GenerationParams(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0)
QUESTION = [{"role": "user", "content": "Count from one to two hundred in words."}]
ROOT = Path(__file__).resolve().parents[2]
KEY = "cluster-test-key-" + "x" * 16


def test_servers_are_ranked_ready_healthy_then_least_busy():
    ready = ServerInfo("http://a", (3,), announced=True)
    loading = ServerInfo("http://b", (2,), announced=True)
    bare = ServerInfo("http://c")  # a fixed-list server: assumed to have every version
    down = ServerInfo("http://d", (3,), announced=True)
    ranked = servers_rank(
        [down, loading, bare, ready],
        version=3,
        busy={"http://a": 2, "http://c": 1},
        down_until={"http://d": 100.0},
        now=50.0,
    )
    assert [s.url for s in ranked] == ["http://c", "http://a", "http://b", "http://d"]


@pytest.fixture(scope="module")
def two_servers(real_model_dir, tmp_path_factory):
    """Two bare llama-server routers serving the base model as v1."""
    from django.test import override_settings

    models = tmp_path_factory.mktemp("cluster-models")
    with override_settings(MODEL_SERVER_MODELS_DIR=models):
        model_link(base_target(real_model_dir))
    servers = [spawn(models, models.parent / f"server-{i}.log") for i in range(2)]
    yield servers
    for server in servers:
        if server.proc.poll() is None:
            stop(server.proc)


@pytest.fixture
def cluster(settings, two_servers):
    settings.MODEL_SERVER_URL = ",".join(s.url for s in two_servers)
    settings.MODEL_SERVER_MODELS_DIR = two_servers[0].models
    settings.MODEL_SERVER_DISCOVER = False
    pool.busy.clear()
    pool.down_until.clear()
    pool.forget()
    yield two_servers
    pool.down_until.clear()


@pytest.mark.e2e
@pytest.mark.slow
async def test_chats_are_spread_over_the_servers(cluster, real_model_dir):
    target = base_target(real_model_dir)
    first = gateway.reply_stream(QUESTION, target, LONG)
    assert (await anext(first)).kind == "token"
    second = gateway.reply_stream(QUESTION, target, LONG)
    assert (await anext(second)).kind == "token"
    assert pool.busy == {cluster[0].url: 1, cluster[1].url: 1}  # one chat on each
    await first.aclose()
    await second.aclose()
    assert sum(pool.busy.values()) == 0


@pytest.mark.e2e
@pytest.mark.slow
async def test_a_dead_server_hands_the_chat_to_the_next_before_any_token(
    settings, cluster, real_model_dir
):
    dead = f"http://127.0.0.1:{free_port()}"
    settings.MODEL_SERVER_URL = f"{dead},{cluster[0].url}"
    pool.forget()
    pool.failed(cluster[0].url)  # tried last: the dead one goes first
    events = [e async for e in gateway.reply_stream(QUESTION, base_target(real_model_dir), SHORT)]
    assert events[-1].kind == "done", events[-1].text
    assert dead in pool.down_until and cluster[0].url not in pool.down_until


@pytest.mark.e2e
@pytest.mark.slow
async def test_a_server_dying_mid_reply_ends_it_with_an_error_then_the_next_chat_moves_on(
    settings, cluster, real_model_dir, tmp_path
):
    doomed = spawn(cluster[0].models, tmp_path / "doomed.log")
    settings.MODEL_SERVER_URL = f"{doomed.url},{cluster[1].url}"
    pool.forget()
    pool.failed(cluster[1].url)
    target = base_target(real_model_dir)
    events = []
    try:
        async for event in gateway.reply_stream(QUESTION, target, LONG):
            events.append(event)
            if len(events) == 3:
                stop(doomed.proc)
    finally:
        if doomed.proc.poll() is None:
            stop(doomed.proc)
    # Tokens were already shown: no silent retry that would repeat them, an error instead.
    assert [e.kind for e in events[:3]] == ["token"] * 3
    assert events[-1].kind == "error" and "mid-reply" in events[-1].text
    pool.down_until.pop(cluster[1].url)
    after = [e async for e in gateway.reply_stream(QUESTION, target, SHORT)]
    assert after[-1].kind == "done", after[-1].text


# --- A supervised model-server host: announcement and promotion --------------------------


def announced(url: str) -> ServerInfo | None:
    return next((s for s in servers_announced(redis_client()) if s.url == url), None)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:g} s")


@pytest.fixture
def host(transactional_db, settings, real_model_dir, tmp_path):
    """`manage.py model_server` in its own process, on this test's database."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CHAT_BASE_MODEL_PATH": str(real_model_dir),
        "MODEL_SERVER_MODELS_DIR": str(tmp_path / "models"),
        "MODEL_SERVER_HEARTBEAT_SECONDS": "1",
        # This 2-core host is shared with other jobs: one llama.cpp thread loads and decodes
        # far faster here than two spinning ones (README "Model server").
        "MODEL_SERVER_THREADS": "1",
        "MODEL_SERVER_SLOTS": "4",
        "MODEL_SERVER_KV_TOKENS": "4096",
        "MODEL_SERVER_API_KEY": KEY,
    }
    log = open(tmp_path / "host.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "model_server", "--url", url],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    settings.CHAT_BASE_MODEL_PATH = str(real_model_dir)
    settings.MODEL_SERVER_API_KEY = KEY
    settings.MODEL_SERVER_URL = ""
    settings.MODEL_SERVER_DISCOVER = True
    pool.forget()
    yield url, proc, tmp_path / "host.log"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_promotion_reaches_the_model_server_host_within_seconds(host, real_model_dir, tmp_path):
    from training.models import ModelVersion
    from training.registry import base_version_ensure, version_create, version_promote

    url, proc, log = host
    v1 = base_version_ensure()
    wait_for(lambda: (s := announced(url)) and 1 in s.versions, 120, "the host announced v1")
    # It answers only those holding the shared key (MODEL_SERVER_API_KEY).
    body = {"model": "v1", "prompt": "Hi", "n_predict": 1}
    assert httpx.post(f"{url}/completion", json=body, timeout=60).status_code == 401
    # The trainer made the candidate's GGUF before the gate, as a retraining run does.
    adapter = adapter_make(real_model_dir, tmp_path / "v2-adapter")
    v2 = version_create(
        parent=v1,
        artifact_path=str(adapter),
        base_path=str(real_model_dir),
        created_by="test",
        status=ModelVersion.Status.CANDIDATE,
    )
    gguf_ensure(serving_target(v2))
    promoted_at = time.monotonic()
    version_promote(version_id=v2.pk, actor="test", reason="cluster test")
    # Heard at once; ready once llama.cpp has loaded it (seconds on a quiet host).
    server = wait_for(
        lambda: (s := announced(url)) and 2 in s.versions and s, 60, "v2 reached the host"
    )
    took = time.monotonic() - promoted_at
    print(f"promotion to v2 ready on the host: {took:.2f} s")
    assert 1 in server.versions  # loaded beside the old one

    async def reply(version):
        target = serving_target(version)
        return [e async for e in gateway.reply_stream(QUESTION, target, SHORT)]

    events = asyncio.run(reply(v2))
    assert events[-1].kind == "done", events[-1].text

    # A reply asking for a version the host has not loaded (a reply racing a promotion, the
    # staff playground) asks the host over Redis, waits for it, and is answered.
    v3 = version_create(
        parent=v2, artifact_path=str(adapter), base_path=str(real_model_dir), created_by="test"
    )
    assert 3 not in announced(url).versions
    events = asyncio.run(reply(v3))
    assert events[-1].kind == "done", events[-1].text
    assert 3 in announced(url).versions

    # A version this host cannot make servable is reported; the others stay.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    v4 = version_create(
        parent=v2, artifact_path=str(broken), base_path=str(real_model_dir), created_by="test"
    )
    version_announce(redis_client(), version_id=v4.pk)
    server = wait_for(lambda: (s := announced(url)) and 4 in s.failed and s, 60, "v4 reported")
    assert {2, 3} <= set(server.versions) and 4 not in server.versions
    assert proc.poll() is None


@pytest.mark.e2e
@pytest.mark.slow
def test_a_model_server_host_that_stops_is_withdrawn(host):
    url, proc, _log = host
    wait_for(lambda: announced(url), 120, "the host announced itself")
    proc.terminate()
    proc.wait(timeout=20)
    assert announced(url) is None


def test_an_announcement_lapses_after_three_missed_beats(settings):
    settings.MODEL_SERVER_HEARTBEAT_SECONDS = 0.5
    server_announce(redis_client(), url="http://silent:1", versions=[1])
    assert announced("http://silent:1") is not None
    time.sleep(1.8)
    assert announced("http://silent:1") is None
