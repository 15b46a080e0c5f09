"""A per-connection sliding-window rate limit."""

import time
from collections import deque


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
