"""Turns at the decoding slots (chatbot/serving/turns.py): arrival order, places told at once
and as they change, a wait estimate from timed turns, and no slot lost to a reply that leaves
early or is cancelled."""

import asyncio

import pytest

from chatbot.serving.turns import DecodeTurns


def listener(heard: list):
    async def told(position: int, wait: int | None) -> None:
        heard.append((position, wait))

    return told


async def test_replies_beyond_the_slots_wait_in_arrival_order_and_hear_each_new_place():
    turns = DecodeTurns(lambda: 2, poll_seconds=0.01)
    running = 0
    most = 0
    order: list[int] = []
    heard: dict[int, list[tuple[int, int | None]]] = {i: [] for i in range(5)}

    async def reply(i: int) -> None:
        nonlocal running, most
        ticket = await turns.join(listener(heard[i]))
        try:
            await ticket.wait()
            order.append(i)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.2)
            running -= 1
        finally:
            ticket.leave()

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(reply(i)))
        await asyncio.sleep(0.03)  # arrive one after another
    assert [p for p, _ in heard[4]] == [3]  # told at once on joining
    await asyncio.gather(*tasks)

    assert most == 2
    assert order == [0, 1, 2, 3, 4]
    assert heard[0] == heard[1] == []  # a free slot: no `queued` at all
    assert [p for p, _ in heard[2]] == [1]
    assert [p for p, _ in heard[4]] == [3, 2, 1]
    # Nothing to estimate from until two turns have ended with others waiting; then whole
    # seconds, rounded up.
    assert heard[4][0][1] is None and heard[4][1][1] is None
    assert heard[4][2][1] == 1


async def test_the_wait_estimate_is_the_time_between_turn_ends_while_others_wait():
    turns = DecodeTurns(lambda: 1, smoothing=0.5)
    holder = await turns.join(listener([]))
    line = [await turns.join(listener([])) for _ in range(2)]
    turns.turn_ended(10.0)
    assert turns.wait_estimate(2) is None  # one end: no gap yet
    turns.turn_ended(13.0)
    assert turns.wait_estimate(2) == 6  # 3 s a place
    turns.turn_ended(18.0)  # a 5 s gap moves the average halfway: 4 s a place
    assert turns.wait_estimate(1) == 4 and turns.wait_estimate(3) == 12
    for ticket in line:
        ticket.leave()
    turns.turn_ended(60.0)  # nobody waited: the idle time is no gap
    turns.turn_ended(61.0)
    assert turns.wait_estimate(1) == 4
    holder.leave()


async def test_a_reply_that_leaves_or_is_cancelled_frees_its_place_or_its_slot():
    turns = DecodeTurns(lambda: 1, poll_seconds=0.01)
    places: list[tuple[int, int | None]] = []

    holder = await turns.join(listener([]))  # the slot, at once
    in_line_a = await turns.join(listener(places))
    in_line_b = await turns.join(listener(places))
    assert turns.waiting == 2 and [p for p, _ in places] == [1, 2]

    # An approved answer given word for word needs no slot: it leaves the line unserved.
    in_line_a.leave()
    waiting_b = asyncio.create_task(in_line_b.wait())
    await asyncio.sleep(0.05)
    assert turns.waiting == 1 and places[-1][0] == 1  # b moved up and was told

    holder.leave()  # its turn ends without a timed wait: passes the slot, teaches nothing
    await asyncio.wait_for(waiting_b, 1)
    assert turns.wait_estimate(1) is None

    # Cancelled while waiting in line: the place goes, the slot stays with its holder.
    cancelled = await turns.join(listener([]))
    waiting = asyncio.create_task(cancelled.wait())
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    cancelled.leave()
    assert turns.waiting == 0
    in_line_b.leave()

    # Nothing leaked: a new reply gets its turn at once, without a place to hear.
    fresh: list = []
    ticket = await turns.join(listener(fresh))
    await ticket.wait()
    ticket.leave()
    assert fresh == [] and turns.waiting == 0


async def test_an_overloaded_customer_is_told_to_retry_when_a_place_would_come_up(settings):
    from chatbot import services
    from chatbot.serving.turns import decode_turns

    settings.MODEL_SERVER_URL = ""
    settings.SERVING_MAX_BATCH = 1
    settings.CHAT_OVERLOAD_RETRY_SECONDS = 15
    turns = decode_turns(services.decoding_slots)
    assert services.overload_retry_seconds() == 15  # pace not measured yet: the setting
    holder = await turns.join(listener([]))
    line = [await turns.join(listener([])) for _ in range(3)]
    # Turns end 4 s apart while three wait: a reply joining now would be 4th, about 16 s.
    turns.turn_ended(100.0)
    turns.turn_ended(104.0)
    assert services.overload_retry_seconds() == 16
    for ticket in line:
        ticket.leave()
    holder.leave()
