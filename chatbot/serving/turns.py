"""Turns at the engine's decoding slots for one web process's replies.

Without them every pending reply goes to the engine at once and waits inside it, where no
one can tell the customer where they stand and the first-token timeout runs from arrival: on
a slow host, customers at the back of a burst failed after 60 s in the model server's queue.
Here a reply first waits for its turn in arrival order, hearing its place (and the wait that
implies) whenever it changes, and reaches the engine only when a slot is free, so its
first-token timeout counts from its turn.
"""

import asyncio
import math
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

# Told to a waiting reply: its place (1 = next) and the estimated wait in seconds (None
# until a turn has been timed).
Notify = Callable[[int, int | None], Awaitable[None]]


@dataclass(eq=False)
class _Waiter:
    notify: Notify
    turn: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class DecodeTurns:
    """At most `slots()` replies hold a turn at once; the others wait in arrival order.

    The wait is estimated from turns already taken: an exponential average of their length
    (`smoothing` weighs the newest), times the place, over the slots.
    """

    def __init__(
        self, slots: Callable[[], int], *, smoothing: float = 0.2, poll_seconds: float = 0.5
    ):
        self._slots = slots
        self._smoothing = smoothing
        self._poll = poll_seconds
        self._active = 0
        self._waiting: deque[_Waiter] = deque()
        self._turn_seconds: float | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def wait_estimate(self, position: int) -> int | None:
        """Seconds until the reply at `position` gets its turn, or None before any turn ended."""
        if self._turn_seconds is None:
            return None
        return math.ceil(position * self._turn_seconds / max(1, self._slots()))

    @asynccontextmanager
    async def turn(self, notify: Notify) -> AsyncIterator[None]:
        """Hold a turn for the body; while waiting for it, `notify` hears each new place."""
        await self._acquire(notify)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self._learn(loop.time() - started)
            self._release()

    async def _acquire(self, notify: Notify) -> None:
        if self._active < self._slots() and not self._waiting:
            self._active += 1
            return
        waiter = _Waiter(notify)
        self._waiting.append(waiter)
        told = None
        try:
            while not waiter.turn.done():
                position = self._waiting.index(waiter) + 1
                if position != told:
                    told = position
                    await notify(position, self.wait_estimate(position))
                # Polled rather than pushed: each waiter tells its own places, in order.
                await asyncio.wait({waiter.turn}, timeout=self._poll)
        except asyncio.CancelledError:
            if waiter.turn.done():  # the turn came as the reply was cancelled: pass it on
                self._release()
            else:
                self._waiting.remove(waiter)
                waiter.turn.cancel()
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        if self._waiting and self._active <= self._slots():
            self._waiting.popleft().turn.set_result(None)
        else:
            self._active -= 1

    def _learn(self, seconds: float) -> None:
        if self._turn_seconds is None:
            self._turn_seconds = seconds
        else:
            self._turn_seconds += self._smoothing * (seconds - self._turn_seconds)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DecodeTurns] = (
    weakref.WeakKeyDictionary()
)


def decode_turns(slots: Callable[[], int]) -> DecodeTurns:
    """The running event loop's turns (futures belong to one loop; daphne runs one)."""
    loop = asyncio.get_running_loop()
    turns = _by_loop.get(loop)
    if turns is None:
        turns = _by_loop[loop] = DecodeTurns(slots)
    return turns
