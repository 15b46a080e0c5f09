"""A model-server host: llama-server kept fed with the active version, and announced.

`host_run` is what `manage.py model_server` runs when Redis is configured. It starts the
router as a child, then loops: every MODEL_SERVER_HEARTBEAT_SECONDS it re-reads the active
version from the database (the truth), and at once when a promotion or a web process asks
for a version on the Redis channel. A version it lacks is fetched, linked into the router's
directory and loaded with a one-token reply, beside the version already loaded, so replies
switch without a restart. A version that cannot be made ready is reported in the
announcement (`failed`) and the old one stays in service. When llama-server dies the loop
ends with an error, so the service manager restarts the host.
"""

import json
import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx

from chatbot.serving.cluster import (
    VERSIONS_CHANNEL,
    redis_client,
    server_announce,
    server_withdraw,
)
from chatbot.serving.model_server import auth_headers, model_publish, server_stop
from chatbot.serving.versions import (
    ServingTarget,
    active_serving_target,
    target_fetched,
    version_serving_target,
)

log = logging.getLogger(__name__)

FAILED_RETRY_SECONDS = 60.0


@dataclass
class HostState:
    url: str  # where this host's router listens (local)
    advertise: str  # where web processes reach it
    ready: set[int] = field(default_factory=set)
    failed: dict[int, tuple[float, str]] = field(default_factory=dict)


def versions_listed(url: str) -> set[int]:
    """The versions the router has in its directory (`v<N>` names)."""
    response = httpx.get(f"{url}/models", headers=auth_headers(), timeout=10)
    response.raise_for_status()
    names = [m.get("id", "") for m in response.json().get("data", [])]
    return {int(n[1:]) for n in names if n.startswith("v") and n[1:].isdigit()}


def version_warm(url: str, target: ServingTarget) -> None:
    """Load the version into the router (a one-token reply), so no customer waits for it."""
    from chatbot.serving.remote import model_id

    body = {"model": model_id(target), "prompt": "Hello", "n_predict": 1, "stream": False}
    response = httpx.post(f"{url}/completion", json=body, headers=auth_headers(), timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"loading v{target.version_number}: {response.text[:300]}")


def version_install(state: HostState, target: ServingTarget) -> bool:
    """Make `target` ready on this host; on failure keep what is served and remember why.
    True when the set of ready versions changed."""
    number = target.version_number
    if number in state.ready:
        return False
    failed = state.failed.get(number)
    if failed and time.monotonic() - failed[0] < FAILED_RETRY_SECONDS:
        return False
    started = time.monotonic()
    try:
        model_publish(target_fetched(target), state.url)
        version_warm(state.url, target)
    except Exception as exc:  # noqa: BLE001 - reported in the announcement, old version kept
        log.error("v%s cannot be served here; keeping %s: %s", number, sorted(state.ready), exc)
        state.failed[number] = (time.monotonic(), str(exc)[:500])
        return True
    state.failed.pop(number, None)
    state.ready.add(number)
    log.info("v%s ready on %s in %.1f s", number, state.advertise, time.monotonic() - started)
    return True


def host_announce(client, state: HostState) -> None:
    failed = {number: why for number, (_at, why) in state.failed.items()}
    server_announce(client, url=state.advertise, versions=state.ready, failed=failed)


def host_sync(state: HostState, version_id: int | None = None) -> bool:
    """Install the requested version (or, without one, the active version)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        target = version_serving_target(version_id) if version_id else active_serving_target()
    finally:
        close_old_connections()
    return version_install(state, target)


def host_run(proc: subprocess.Popen, state: HostState) -> int:
    """Announce and keep the router fed until it exits or the host is told to stop.

    The announcement has a thread of its own, so a long install (a version converted here)
    never lets it lapse."""
    from django.conf import settings

    client = redis_client()
    if client is None:
        raise RuntimeError("a model-server host needs Redis (REDIS_URL) to announce itself")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    beat = settings.MODEL_SERVER_HEARTBEAT_SECONDS

    def heartbeat() -> None:
        while not stopping.is_set():
            try:
                host_announce(client, state)
            except Exception:  # noqa: BLE001 - Redis away: the next beat tries again
                log.warning("Could not announce %s", state.advertise, exc_info=True)
            stopping.wait(beat)

    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(VERSIONS_CHANNEL)
    announcer = threading.Thread(target=heartbeat, name="announce", daemon=True)
    announcer.start()
    next_sync = 0.0
    try:
        while not stopping.is_set():
            if proc.poll() is not None:
                log.error("llama-server exited with %s", proc.returncode)
                return proc.returncode or 1
            try:
                message = pubsub.get_message(timeout=min(beat, 1.0))
                requested = None
                if message and message["type"] == "message":
                    requested = int(json.loads(message["data"])["version_id"])
                if requested or time.monotonic() >= next_sync:
                    if host_sync(state, requested):
                        host_announce(client, state)  # at once, not at the next beat
                    if not requested:
                        next_sync = time.monotonic() + beat
            except Exception:  # noqa: BLE001 - Redis or the database away: try again
                log.warning("Model-server host loop failed; retrying", exc_info=True)
                stopping.wait(1.0)
        return 0
    finally:
        stopping.set()
        announcer.join(timeout=10)  # no announcement after the withdrawal
        try:
            server_withdraw(client, url=state.advertise)
        except Exception:  # noqa: BLE001
            log.warning("Could not withdraw %s", state.advertise)
        server_stop(proc)
