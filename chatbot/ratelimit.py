"""Sliding-window rate limits: one per socket (in memory) and shared ones (per session, per
client address) counted in the channel layer's Redis, so every web process sees every hit."""

import time
from collections import deque
from dataclasses import dataclass

from channels.layers import get_channel_layer


class SlidingWindowLimit:
    def __init__(self, *, limit: int, window_seconds: float):
        self.limit = limit
        self.window = window_seconds
        self._hits: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        """Count one hit; False (and not counted) if the window is already full."""
        now = time.monotonic() if now is None else now
        while self._hits and now - self._hits[0] >= self.window:
            self._hits.popleft()
        if len(self._hits) >= self.limit:
            return False
        self._hits.append(now)
        return True

    def retry_after(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(0.0, self.window - (now - self._hits[0])) if self._hits else 0.0


@dataclass(frozen=True)
class SharedLimit:
    """`limit` hits per `window_seconds` for one key (e.g. "session:<key>")."""

    key: str
    limit: int
    window_seconds: float


# Checks every limit, then counts the hit in all of them or (if one is full) in none.
# KEYS: the limits' keys; ARGV: now, a unique member, then limit and window per key.
# Returns the seconds to wait, "0" when the hit was counted.
_CHECK_AND_COUNT = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local left = oldest[2] and (tonumber(oldest[2]) + window - now) or window
    wait = math.max(wait, left, 0.001)
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2 + 2 * i]) * 1000))
end
return '0'
"""

# Without Redis (the embedded default: one process) the shared limits live here.
_local: dict[str, SlidingWindowLimit] = {}
_hit_ids = iter(range(1, 1 << 62))


async def shared_limits_hit(limits: list[SharedLimit]) -> float:
    """Count one hit against every limit; 0.0 if allowed, else the seconds to wait (and the
    hit is counted nowhere)."""
    limits = [lim for lim in limits if lim.limit > 0]
    if not limits:
        return 0.0
    layer = get_channel_layer()
    if not hasattr(layer, "connection"):
        return _local_hit(limits)
    keys = [f"{layer.prefix}:ratelimit:{lim.key}" for lim in limits]
    args: list = [time.time(), f"{time.time_ns()}-{next(_hit_ids)}"]
    for lim in limits:
        args += [lim.limit, lim.window_seconds]
    # The layer's own connection pool for this event loop; all keys on one shard.
    redis = layer.connection(layer.consistent_hash(keys[0]))
    wait = await redis.eval(_CHECK_AND_COUNT, len(keys), *keys, *args)
    return float(wait)


def _local_hit(limits: list[SharedLimit]) -> float:
    now = time.monotonic()
    windows = [
        _local.setdefault(
            lim.key, SlidingWindowLimit(limit=lim.limit, window_seconds=lim.window_seconds)
        )
        for lim in limits
    ]
    for window in windows:
        if not window.allow(now):
            waits = [w.retry_after(now) for w in windows]
            # Undo the hits already counted for the limits checked before this one.
            for counted in windows[: windows.index(window)]:
                counted._hits.pop()
            return max(max(waits), 0.001)
    return 0.0
