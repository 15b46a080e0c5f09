"""Load and abuse limits on the customer socket: frame size, shared per-session and per-address
limits (Redis), one reply at a time per session, a cap on pending replies, and a timeout on
every wait for the engine."""

import asyncio
import json
import threading
import time

import pytest
from channels.db import database_sync_to_async

from chatbot.models import Message
from tests.helpers import frames_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]


def new_session() -> str:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store.create()
    return store.session_key


async def opened(chat_socket, session_key):
    ws = await chat_socket(session_key)
    assert (await ws.receive_json_from(timeout=10))["type"] == "history"
    return ws


async def customer_texts() -> list[str]:
    return await database_sync_to_async(
        lambda: sorted(Message.objects.filter(role="customer").values_list("text", flat=True))
    )()


async def test_an_oversized_frame_is_refused_before_parsing(settings, chat_socket):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    ws = await opened(chat_socket, await database_sync_to_async(new_session)())
    await ws.send_to(text_data=json.dumps({"type": "customer_message", "text": "x" * 1000}))
    error = await ws.receive_json_from(timeout=10)
    assert error["code"] == "frame_too_large" and "1000" in error["detail"]
    await ws.send_to(text_data="[" * 5000)  # would be a parse error (or worse) otherwise
    assert (await ws.receive_json_from(timeout=10))["code"] == "frame_too_large"
    assert await customer_texts() == []
    await ws.send_json_to({"type": "customer_message", "text": "still usable"})
    assert (await frames_until(ws, "bot_message"))[-1]["text"]


async def test_all_sockets_of_one_session_share_one_limit(settings, chat_socket):
    settings.CHAT_SESSION_RATE_LIMIT_MESSAGES = 2
    settings.CHAT_SESSION_RATE_LIMIT_SECONDS = 60
    session = await database_sync_to_async(new_session)()
    sockets = [await opened(chat_socket, session) for _ in range(3)]
    for ws, text in zip(sockets[:2], ("one", "two"), strict=True):
        await ws.send_json_to({"type": "customer_message", "text": text})
        await frames_until(ws, "bot_message")
    await sockets[2].send_json_to({"type": "customer_message", "text": "three"})
    error = await sockets[2].receive_json_from(timeout=10)
    assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 60
    assert await customer_texts() == ["one", "two"]


async def test_many_sessions_from_one_address_share_one_limit(settings):
    from channels.testing import WebsocketCommunicator

    from chatbot.asgi import application
    from tests.helpers import ws_headers

    settings.CHAT_IP_RATE_LIMIT_MESSAGES = 2
    settings.CHAT_IP_RATE_LIMIT_SECONDS = 60
    sockets = []
    for address in ("203.0.113.7", "203.0.113.7", "203.0.113.7", "198.51.100.1"):
        session = await database_sync_to_async(new_session)()
        ws = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(session))
        ws.scope["client"] = (address, 50000)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=10)
        sockets.append(ws)
    try:
        for ws, text in zip(sockets[:2], ("one", "two"), strict=True):
            await ws.send_json_to({"type": "customer_message", "text": text})
            await frames_until(ws, "bot_message")
        await sockets[2].send_json_to({"type": "customer_message", "text": "three"})
        assert (await sockets[2].receive_json_from(timeout=10))["code"] == "rate_limited"
        await sockets[3].send_json_to({"type": "customer_message", "text": "other address"})
        await frames_until(sockets[3], "bot_message")
        assert await customer_texts() == ["one", "other address", "two"]
    finally:
        for ws in sockets:
            await ws.disconnect()


async def test_one_session_gets_one_reply_at_a_time_over_all_its_sockets(chat_socket):
    session = await database_sync_to_async(new_session)()
    first, second = [await opened(chat_socket, session) for _ in range(2)]
    await first.send_json_to({"type": "customer_message", "text": "one"})
    await frames_until(first, "conversation")
    await second.send_json_to({"type": "customer_message", "text": "two"})
    assert (await second.receive_json_from(timeout=10))["code"] == "busy"
    await frames_until(first, "bot_message")
    assert await customer_texts() == ["one"]


async def test_pending_replies_are_capped_with_a_queue_position_and_a_retry_hint(
    settings, chat_socket
):
    from chatbot.serving import gateway

    settings.SERVING_MAX_BATCH = 1
    settings.SERVING_MAX_PENDING = 2
    sockets = [
        await opened(chat_socket, await database_sync_to_async(new_session)()) for _ in range(3)
    ]
    # While the model is (re)loading nothing decodes: the replies stay pending.
    await asyncio.to_thread(gateway._lock.acquire)
    try:
        for ws in sockets[:2]:
            await ws.send_json_to({"type": "customer_message", "text": "hello?"})
            await frames_until(ws, "message")
        queued = await frames_until(sockets[1], "queued", timeout=5)
        assert queued[-1]["position"] == 1
        assert queued[-1]["wait_seconds"] is None  # no reply has ended yet to estimate from
        started = time.monotonic()
        await sockets[2].send_json_to({"type": "customer_message", "text": "me too"})
        error = await sockets[2].receive_json_from(timeout=5)
        assert time.monotonic() - started < 1.0
        assert error["code"] == "overloaded" and error["retry_after"] > 0
    finally:
        gateway._lock.release()
    for ws in sockets[:2]:
        await frames_until(ws, "bot_message")
    assert await customer_texts() == ["hello?", "hello?"]


async def test_an_engine_that_stops_answering_ends_in_an_error_frame(
    settings, chat_socket, monkeypatch
):
    from chatbot.serving.engine import Engine

    settings.SERVING_EVENT_TIMEOUT_SECONDS = 0.5
    prefill = Engine._prefill

    unstuck = threading.Event()

    def stuck_prefill(self, *args):  # fault injection: the engine hangs for 3 s
        unstuck.wait(3)
        return prefill(self, *args)

    monkeypatch.setattr(Engine, "_prefill", stuck_prefill)
    ws = await opened(chat_socket, await database_sync_to_async(new_session)())
    started = time.monotonic()
    await ws.send_json_to({"type": "customer_message", "text": "hello?"})
    error = (await frames_until(ws, "error", timeout=10))[-1]
    assert error["code"] == "generation_failed"
    assert time.monotonic() - started < 2.5
    unstuck.set()  # the engine thread (shared with the next test) serves on


async def test_a_burst_longer_than_the_engine_timeout_is_answered_in_turns(
    settings, chat_socket, monkeypatch
):
    from chatbot.serving.engine import Engine

    # One slot and a slow prefill (0.6 s, injected): the last in line waits about three
    # replies (> 1.8 s), longer than the engine's event timeout (1.5 s). A reply reaches the
    # engine only on its turn, so its timeout counts from then: all four are answered, and
    # the ones in line heard their places, counting down.
    settings.SERVING_MAX_BATCH = 1
    settings.SERVING_EVENT_TIMEOUT_SECONDS = 1.5
    prefill = Engine._prefill

    def slow_prefill(self, *args):
        time.sleep(0.6)
        return prefill(self, *args)

    monkeypatch.setattr(Engine, "_prefill", slow_prefill)
    sockets = [
        await opened(chat_socket, await database_sync_to_async(new_session)()) for _ in range(4)
    ]
    for ws in sockets:
        await ws.send_json_to({"type": "customer_message", "text": "where is my parcel?"})
    frames = [await frames_until(ws, "bot_message", timeout=30) for ws in sockets]
    places = [[f["position"] for f in fs if f["type"] == "queued"] for fs in frames]
    assert sum(bool(p) for p in places) == 3  # one slot: all but the first waited
    longest = max(places, key=len)
    assert longest == [3, 2, 1]  # the last in line moved up and was told each place
    assert not any(f["type"] == "error" for fs in frames for f in fs)
    assert await customer_texts() == ["where is my parcel?"] * 4


async def test_replies_waiting_for_the_model_server_hear_their_queue_position(
    settings, chat_socket
):
    import socket

    # A model server that accepts connections and never answers (stalled, overloaded):
    # with one slot, the second customer is told it is queued, then both get an error frame
    # when the first-token timeout runs out. Never silence.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)
    settings.MODEL_SERVER_URL = f"http://127.0.0.1:{stalled.getsockname()[1]}"
    settings.MODEL_SERVER_SLOTS = 1
    settings.MODEL_SERVER_FIRST_TOKEN_TIMEOUT = 3.0
    settings.MODEL_SERVER_TOKEN_TIMEOUT = 3.0
    try:
        sockets = [
            await opened(chat_socket, await database_sync_to_async(new_session)()) for _ in range(2)
        ]
        await sockets[0].send_json_to({"type": "customer_message", "text": "where is my parcel?"})
        await frames_until(sockets[0], "message")
        await sockets[1].send_json_to({"type": "customer_message", "text": "and mine?"})
        started = time.monotonic()
        waiting = await frames_until(sockets[1], "queued", timeout=5)
        assert waiting[-1]["position"] == 1 and time.monotonic() - started < 2
        for ws in sockets:
            frames = await frames_until(ws, "error", timeout=30)
            assert frames[-1]["code"] == "generation_failed"
    finally:
        stalled.close()
