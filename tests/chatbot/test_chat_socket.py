"""The customer socket: streaming, storage, sessions and every kind of bad input."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from chatbot.handoff import EMPTY_REPLY_FALLBACK
from chatbot.models import Conversation, Message
from tests.helpers import frames_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]


async def first_frame(communicator):
    return await communicator.receive_json_from(timeout=10)


async def wait_for(predicate, timeout=30.0):
    for _ in range(int(timeout / 0.05)):
        if await database_sync_to_async(predicate)():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_reply_streams_in_pieces_and_is_stored_whole(chat_socket, customer_session):
    ws = await chat_socket(customer_session)
    history = await first_frame(ws)
    assert history == {
        "type": "history",
        "conversation_id": None,
        "status": "bot",
        "notice": "The assistant is answering again.",
        "messages": [],
    }

    await ws.send_json_to({"type": "customer_message", "text": "Where is my order?"})
    frames = await frames_until(ws, "bot_message")

    kinds = [f["type"] for f in frames]
    assert kinds[0] == "conversation"
    assert kinds[1] == "message" and frames[1]["role"] == "customer"
    tokens = [f for f in frames if f["type"] == "token"]
    assert len(tokens) >= 2
    final = frames[-1]
    assert {t["message_id"] for t in tokens} == {final["message_id"]}
    assert "".join(t["text"] for t in tokens) == final["text"]

    stored = await database_sync_to_async(Message.objects.get)(pk=final["message_id"])
    assert stored.text == final["text"]
    assert stored.role == "bot"
    assert stored.token_count == 8
    assert stored.model_version_id is not None
    assert stored.time_to_first_token_ms is not None and stored.generation_ms is not None
    customer = await database_sync_to_async(
        lambda: list(Message.objects.filter(role="customer").values_list("text", flat=True))
    )()
    assert customer == ["Where is my order?"]


@pytest.mark.parametrize("seconds", [0, 60])
async def test_tokens_share_a_frame_within_the_frame_time(
    chat_socket, customer_session, settings, seconds
):
    """CHAT_TOKEN_FRAME_SECONDS 0 sends each model token in its own frame; a long frame time
    sends the first token at once and the rest when the reply ends."""
    settings.CHAT_TOKEN_FRAME_SECONDS = seconds
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "Where is my order?"})
    got = await frames_until(ws, "bot_message")
    tokens = [f["text"] for f in got if f["type"] == "token"]
    assert "".join(tokens) == got[-1]["text"]
    if tokens[-1] == " " + EMPTY_REPLY_FALLBACK:  # the tiny model writes only blanks
        tokens.pop()
    stored = await database_sync_to_async(Message.objects.get)(pk=got[-1]["message_id"])
    assert stored.token_count == 8
    assert len(tokens) == (8 if seconds == 0 else 2)


async def test_customer_message_is_stored_before_the_first_token(chat_socket, customer_session):
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "hello"})
    frames = await frames_until(ws, "token")
    echoed = next(f for f in frames if f["type"] == "message")
    assert await database_sync_to_async(Message.objects.filter(pk=echoed["message_id"]).exists)()


async def test_reply_is_stored_even_if_customer_disconnects_mid_stream(
    chat_socket, customer_session
):
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "refund please"})
    await frames_until(ws, "token")
    await ws.disconnect()
    assert await wait_for(lambda: Message.objects.filter(role="bot").exists())
    bot = await database_sync_to_async(Message.objects.get)(role="bot")
    assert bot.token_count == 8 and bot.text


async def test_reload_shows_history_and_chat_continues(chat_socket, customer_session):
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "first question"})
    first = (await frames_until(ws, "bot_message"))[-1]
    await ws.disconnect()

    again = await chat_socket(customer_session)
    history = await first_frame(again)
    assert [m["role"] for m in history["messages"]] == ["customer", "bot"]
    assert history["messages"][1]["text"] == first["text"]
    await again.send_json_to({"type": "customer_message", "text": "second question"})
    await frames_until(again, "bot_message")
    count = await database_sync_to_async(Message.objects.count)()
    assert count == 4
    assert await database_sync_to_async(Conversation.objects.count)() == 1


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json at all", "bad_frame"),
        ("[1, 2, 3]", "bad_frame"),
        (json.dumps({"text": "no type"}), "bad_frame"),
        (json.dumps({"type": "launch_missiles"}), "unknown_type"),
        (json.dumps({"type": "customer_message", "text": "   "}), "empty_message"),
        (json.dumps({"type": "customer_message"}), "invalid_text"),
        (json.dumps({"type": "customer_message", "text": 42}), "invalid_text"),
        (json.dumps({"type": "customer_message", "text": "x" * 2001}), "message_too_long"),
    ],
)
async def test_bad_frames_get_an_error_store_nothing_and_keep_the_socket(
    chat_socket, customer_session, raw, code
):
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_to(text_data=raw)
    error = await first_frame(ws)
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    # Still usable afterwards.
    await ws.send_json_to({"type": "customer_message", "text": "still there?"})
    frames = await frames_until(ws, "bot_message")
    assert frames[-1]["text"]


async def test_flood_from_one_socket_is_rate_limited(settings, chat_socket, customer_session):
    settings.CHAT_RATE_LIMIT_MESSAGES = 2
    settings.CHAT_RATE_LIMIT_SECONDS = 60
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    for text in ("one", "two"):
        await ws.send_json_to({"type": "customer_message", "text": text})
        await frames_until(ws, "bot_message")
    await ws.send_json_to({"type": "customer_message", "text": "three"})
    error = await first_frame(ws)
    assert error["code"] == "rate_limited"
    texts = await database_sync_to_async(
        lambda: list(Message.objects.filter(role="customer").values_list("text", flat=True))
    )()
    assert sorted(texts) == ["one", "two"]


async def test_a_second_message_while_the_bot_is_answering_is_refused(
    chat_socket, customer_session
):
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "one"})
    await frames_until(ws, "conversation")
    await ws.send_json_to({"type": "customer_message", "text": "two"})
    frames = await frames_until(ws, "bot_message")
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["busy"]


async def test_socket_without_a_session_is_refused(chat_socket):
    ws = await chat_socket(None)
    error = await first_frame(ws)
    assert error["code"] == "no_session"
    closed = await ws.receive_output(timeout=5)
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


async def test_another_customers_conversation_cannot_be_reached(chat_socket, db):
    from django.contrib.sessions.backends.db import SessionStore

    def new_session():
        store = SessionStore()
        store.create()
        return store.session_key

    alice, mallory = [await database_sync_to_async(new_session)() for _ in range(2)]
    ws = await chat_socket(alice)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "my secret address is 1 Elm St"})
    conversation_id = (await frames_until(ws, "conversation"))[-1]["conversation_id"]
    await frames_until(ws, "bot_message")

    intruder = await chat_socket(mallory, query=f"conversation={conversation_id}")
    error = await first_frame(intruder)
    assert error["code"] == "conversation_not_found"

    # Mallory's own socket starts empty and her messages go to a new conversation.
    own = await chat_socket(mallory)
    history = await first_frame(own)
    assert history["messages"] == [] and history["conversation_id"] is None
    await own.send_json_to({"type": "customer_message", "text": "hi"})
    frames = await frames_until(own, "bot_message")
    assert all("Elm" not in f.get("text", "") for f in frames)
    assert await database_sync_to_async(Conversation.objects.count)() == 2


async def test_unknown_conversation_id_is_refused(chat_socket, customer_session):
    ws = await chat_socket(customer_session, query="conversation=not-a-uuid")
    assert (await first_frame(ws))["code"] == "conversation_not_found"


async def test_a_corrupt_model_with_nothing_to_fall_back_to_reports_an_error(
    settings, chat_socket, customer_session, tmp_path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    settings.CHAT_BASE_MODEL_PATH = str(broken)  # v1, the only version, cannot load
    ws = await chat_socket(customer_session)
    await first_frame(ws)
    await ws.send_json_to({"type": "customer_message", "text": "anyone there?"})
    error = (await frames_until(ws, "error"))[-1]
    assert error["code"] == "generation_failed"
    roles = await database_sync_to_async(
        lambda: list(Message.objects.values_list("role", flat=True))
    )()
    assert roles == ["customer"]
