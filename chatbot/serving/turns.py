"""Turns at the engine's decoding slots for one web process's replies.

Without them every pending reply goes to the engine at once and waits inside it, where no
one can tell the customer where they stand and the first-token timeout runs from arrival: on
a slow host, customers at the back of a burst failed after 60 s in the model server's queue.
Here a reply joins the line as soon as it starts (and hears its place at once), waits for
its turn in arrival order, hearing each new place and the wait it implies, and reaches the
engine only when a slot is free, so the engine's timeouts count from its turn.
"""

import asyncio
import math
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

# Told to a waiting reply: its place (1 = next) and the estimated wait in seconds (None
# until two turns have ended while others waited).
Notify = Callable[[int, int | None], Awaitable[None]]


class Ticket:
    """One reply's place in line, then its turn; `leave()` ends either (call it once)."""

    def __init__(self, turns: "DecodeTurns", notify: Notify):
        self._turns = turns
        self.notify = notify
        self.turn = asyncio.get_running_loop().create_future()
        self.told = 0  # the last place told
        self._served = False  # the turn was used for the engine

    async def wait(self) -> None:
        """Until this reply's turn; each new place is told on the way (polled, so each
        reply tells its own places, in order)."""
        while not self.turn.done():
            place = self._turns.place(self)
            if place != self.told:
                self.told = place
                await self.notify(place, self._turns.wait_estimate(place))
            await asyncio.wait({self.turn}, timeout=self._turns.poll_seconds)
        self._served = True

    def leave(self) -> None:
        """End the turn (its end teaches the wait estimate) or give up the place."""
        if not self.turn.done():
            self.turn.cancel()
            self._turns.drop(self)
            return
        if self._served:  # a reply the engine wrote, not one that skipped it
            self._turns.turn_ended(asyncio.get_running_loop().time())
        self._turns.release()


class DecodeTurns:
    """At most `slots()` replies hold a turn at once; the others wait in arrival order.

    The wait is estimated from how often a turn ends while others wait (every slot busy):
    an exponential average of the time between such ends (`smoothing` weighs the newest),
    times the place. Not from turn lengths: the first turns to end are the shortest
    replies, which made that estimate run low by a third in a burst.
    """

    def __init__(
        self, slots: Callable[[], int], *, smoothing: float = 0.2, poll_seconds: float = 0.5
    ):
        self._slots = slots
        self._smoothing = smoothing
        self.poll_seconds = poll_seconds
        self._active = 0
        self._waiting: deque[Ticket] = deque()
        self._gap_seconds: float | None = None  # between turn ends, all slots busy
        self._last_end: float | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def join(self, notify: Notify) -> Ticket:
        """A place in line, or the turn at once when a slot is free; a reply that must wait
        hears its place before this returns."""
        ticket = Ticket(self, notify)
        if self._active < self._slots() and not self._waiting:
            self._active += 1
            ticket.turn.set_result(None)
            return ticket
        self._waiting.append(ticket)
        try:
            ticket.told = self.place(ticket)
            await notify(ticket.told, self.wait_estimate(ticket.told))
        except BaseException:
            ticket.leave()
            raise
        return ticket

    def place(self, ticket: Ticket) -> int:
        return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def wait_estimate(self, place: int) -> int | None:
        """Seconds until the reply at `place` gets its turn, or None with no gap measured."""
        if self._gap_seconds is None:
            return None
        return math.ceil(place * self._gap_seconds)

    def release(self) -> None:
        """Hand a finished turn's slot to the first waiter, or free it."""
        if self._waiting and self._active <= self._slots():
            self._waiting.popleft().turn.set_result(None)
        else:
            self._active -= 1

    def drop(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)

    def turn_ended(self, now: float) -> None:
        if not self._waiting:  # a free slot follows: the next gap says nothing of the line
            self._last_end = None
            return
        if self._last_end is not None:
            gap = now - self._last_end
            if self._gap_seconds is None:
                self._gap_seconds = gap
            else:
                self._gap_seconds += self._smoothing * (gap - self._gap_seconds)
        self._last_end = now


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
