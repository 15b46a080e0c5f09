"""Turns at the decoding slots (chatbot/serving/turns.py): arrival order, places told as they
change, a wait estimate from timed turns, and no slot lost to a cancelled reply."""

import asyncio

import pytest

from chatbot.serving.turns import DecodeTurns


async def test_replies_beyond_the_slots_wait_in_arrival_order_and_hear_each_new_place():
    turns = DecodeTurns(lambda: 2, poll_seconds=0.01)
    running = 0
    most = 0
    order: list[int] = []
    heard: dict[int, list[tuple[int, int | None]]] = {i: [] for i in range(5)}

    async def reply(i: int) -> None:
        nonlocal running, most

        async def told(position: int, wait: int | None) -> None:
            heard[i].append((position, wait))

        async with turns.turn(told):
            order.append(i)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.2)
            running -= 1

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(reply(i)))
        await asyncio.sleep(0.01)  # arrive one after another
    await asyncio.gather(*tasks)

    assert most == 2
    assert order == [0, 1, 2, 3, 4]
    assert heard[0] == heard[1] == []  # a free slot: no `queued` at all
    assert [p for p, _ in heard[2]] == [1]
    assert [p for p, _ in heard[4]] == [3, 2, 1]
    # Before any turn ended there is nothing to estimate from; after one, ~0.2 s a turn over
    # 2 slots: the reply 2nd in line waits about 0.2 s, rounded up to whole seconds.
    assert heard[4][0][1] is None
    assert heard[4][1][1] == 1
    assert turns.wait_estimate(30) in (3, 4)  # 30 x ~0.2 s / 2 slots, rounded up


async def test_a_reply_cancelled_in_line_or_during_its_turn_frees_its_place():
    turns = DecodeTurns(lambda: 1, poll_seconds=0.01)
    holding = asyncio.Event()
    release = asyncio.Event()
    places: list[int] = []

    async def nothing(position: int, wait: int | None) -> None:
        return None

    async def first() -> None:
        async with turns.turn(nothing):
            holding.set()
            await release.wait()

    async def later(done: list) -> None:
        async def told(position: int, wait: int | None) -> None:
            places.append(position)

        async with turns.turn(told):
            done.append(True)

    holder = asyncio.create_task(first())
    await holding.wait()
    waiting_a = asyncio.create_task(later([]))
    await asyncio.sleep(0.05)
    done_b: list = []
    waiting_b = asyncio.create_task(later(done_b))
    await asyncio.sleep(0.05)
    assert turns.waiting == 2 and places == [1, 2]

    waiting_a.cancel()  # gives up in line: b moves up
    with pytest.raises(asyncio.CancelledError):
        await waiting_a
    await asyncio.sleep(0.05)
    assert turns.waiting == 1 and places[-1] == 1

    holder.cancel()  # cancelled while holding the turn: it passes on
    with pytest.raises(asyncio.CancelledError):
        await holder
    await asyncio.wait_for(waiting_b, 1)
    assert done_b == [True] and turns.waiting == 0

    # Nothing leaked: a new reply gets its turn at once, without a place to hear.
    fresh: list[int] = []

    async def told(position: int, wait: int | None) -> None:
        fresh.append(position)

    async with turns.turn(told):
        pass
    assert fresh == []
