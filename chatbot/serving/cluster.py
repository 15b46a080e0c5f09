"""Several model servers: who is up, what each serves, and which one takes the next chat.

Each model server (`manage.py model_server`) announces itself in Redis every
MODEL_SERVER_HEARTBEAT_SECONDS: its URL and the versions it has ready. The announcement
lapses after three missed beats, so a dead host drops out on its own. Web processes combine
the announced servers with the fixed list in MODEL_SERVER_URL (comma separated) and rank
them per chat: servers that already have the version first, then those this process has
not seen fail lately, then the least busy (chats this process has open on them).

Promotions travel on the Redis channel VERSIONS_CHANNEL; the database stays the truth
(model servers also re-read the active version on every beat).
"""

import json
import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings

log = logging.getLogger(__name__)

SERVERS_KEY = "chatbot:model-servers"
SERVER_KEY = "chatbot:model-server:{url}"
VERSIONS_CHANNEL = "chatbot:model-versions"


@dataclass(frozen=True)
class ServerInfo:
    url: str
    versions: tuple[int, ...] = ()
    failed: dict[int, str] = field(default_factory=dict)
    announced: bool = False


def remote_serving() -> bool:
    """True when replies come from model servers rather than an engine in this process."""
    return bool(static_urls()) or settings.MODEL_SERVER_DISCOVER


def static_urls() -> list[str]:
    return [u.strip().rstrip("/") for u in settings.MODEL_SERVER_URL.split(",") if u.strip()]


_clients: dict[str, object] = {}


def redis_client():
    """This process's Redis client on REDIS_URL, or None in the embedded setup (no Redis)."""
    url = settings.REDIS_URL
    if not url:
        return None
    if url not in _clients:
        import redis

        _clients[url] = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    return _clients[url]


def server_announce(
    client, *, url: str, versions: Iterable[int], failed: dict[int, str] | None = None
) -> None:
    """Say that the model server at `url` is up and serves `versions` (for three beats)."""
    ttl = 3 * settings.MODEL_SERVER_HEARTBEAT_SECONDS
    body = json.dumps({"url": url, "versions": sorted(versions), "failed": failed or {}})
    pipe = client.pipeline()
    pipe.set(SERVER_KEY.format(url=url), body, ex=max(1, round(ttl)))
    pipe.zadd(SERVERS_KEY, {url: time.time()})
    pipe.execute()


def server_withdraw(client, *, url: str) -> None:
    pipe = client.pipeline()
    pipe.delete(SERVER_KEY.format(url=url))
    pipe.zrem(SERVERS_KEY, url)
    pipe.execute()


def servers_announced(client) -> list[ServerInfo]:
    """The model servers whose announcement has not lapsed."""
    stale = time.time() - 3 * settings.MODEL_SERVER_HEARTBEAT_SECONDS
    client.zremrangebyscore(SERVERS_KEY, "-inf", stale)
    urls = client.zrange(SERVERS_KEY, 0, -1)
    if not urls:
        return []
    found = []
    for raw in client.mget([SERVER_KEY.format(url=url) for url in urls]):
        if raw:
            data = json.loads(raw)
            failed = {int(k): str(v) for k, v in data.get("failed", {}).items()}
            found.append(ServerInfo(data["url"], tuple(data["versions"]), failed, announced=True))
    return found


def version_announce(client, *, version_id: int) -> None:
    """Tell every model server that `version_id` should be served (promotion or demand)."""
    client.publish(VERSIONS_CHANNEL, json.dumps({"version_id": version_id}))


def active_version_broadcast(version_id: int) -> None:
    """After a promotion or rollback commits: model servers load the version now rather
    than at their next beat. A Redis outage only delays them (the beat re-reads the DB)."""
    client = redis_client()
    if client is None:
        return
    try:
        version_announce(client, version_id=version_id)
    except Exception:  # noqa: BLE001 - the database is the truth; the next beat catches up
        log.warning("Could not announce version %s to the model servers", version_id, exc_info=True)


def servers_rank(
    servers: list[ServerInfo],
    *,
    version: int,
    busy: dict[str, int],
    down_until: dict[str, float],
    now: float,
) -> list[ServerInfo]:
    """The order to try servers for one chat (a pure function of what this process knows)."""
    shuffled = random.sample(servers, len(servers))  # ties spread evenly
    return sorted(
        shuffled,
        key=lambda s: (
            down_until.get(s.url, 0.0) > now,
            s.announced and version not in s.versions,
            busy.get(s.url, 0),
        ),
    )


class ServerPool:
    """What one web process knows of the model servers: the list, its open chats on each,
    and which failed lately (tried last for MODEL_SERVER_RETRY_AFTER seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy: dict[str, int] = {}
        self.down_until: dict[str, float] = {}
        self._known: list[ServerInfo] = []
        self._known_at = 0.0

    def servers(self) -> list[ServerInfo]:
        """Announced servers (read from Redis at most once a second) and the fixed list
        (blocking: call off the event loop)."""
        now = time.monotonic()
        with self._lock:
            announced, fresh = self._known, now - self._known_at < 1.0
        if not fresh:
            announced = []
            if settings.MODEL_SERVER_DISCOVER:
                try:
                    client = redis_client()
                    announced = servers_announced(client) if client is not None else []
                except Exception:  # noqa: BLE001 - fall back to the fixed list
                    log.warning("Could not read the model servers from Redis", exc_info=True)
            with self._lock:
                self._known, self._known_at = announced, now
        by_url = {s.url for s in announced}
        return announced + [ServerInfo(u) for u in static_urls() if u not in by_url]

    def known_count(self) -> int:
        """How many servers this process last knew of (never blocks: no Redis read)."""
        with self._lock:
            urls = {s.url for s in self._known} if settings.MODEL_SERVER_DISCOVER else set()
        return len(urls | set(static_urls()))

    def forget(self) -> None:
        with self._lock:
            self._known_at = 0.0

    def ranked(self, version: int) -> list[ServerInfo]:
        servers = self.servers()
        with self._lock:
            return servers_rank(
                servers,
                version=version,
                busy=dict(self.busy),
                down_until=dict(self.down_until),
                now=time.monotonic(),
            )

    def opened(self, url: str) -> None:
        with self._lock:
            self.busy[url] = self.busy.get(url, 0) + 1

    def closed(self, url: str) -> None:
        with self._lock:
            self.busy[url] = max(0, self.busy.get(url, 0) - 1)

    def failed(self, url: str) -> None:
        with self._lock:
            self.down_until[url] = time.monotonic() + settings.MODEL_SERVER_RETRY_AFTER
            self._known_at = 0.0

    def succeeded(self, url: str) -> None:
        with self._lock:
            self.down_until.pop(url, None)


pool = ServerPool()
