"""The agent socket over the Redis channel layer: who gets in, live updates, takeover."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from chatbot.models import Conversation, Message
from feedback.models import ConversationReview, MessageRating
from tests.helpers import frames_until, login_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]


async def until(ws, predicate, timeout=30):
    """Frames up to and including the first one matching `predicate`."""
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=timeout)
        frames.append(frame)
        if predicate(frame):
            return frames


async def agent_connected(agent_socket, user) -> object:
    cookie = await database_sync_to_async(login_cookie)(user)
    connected, _, ws = await agent_socket(cookie)
    assert connected
    hello = await ws.receive_json_from(timeout=10)
    assert hello["type"] == "hello"
    return ws


@pytest.fixture
async def alice(make_agent):
    return await database_sync_to_async(make_agent)("alice", first_name="Alice")


@pytest.fixture
async def bob(make_agent):
    return await database_sync_to_async(make_agent)("bob", first_name="Bob")


async def test_only_agents_get_in(agent_socket, customer_session, alice):
    connected, code, _ = await agent_socket(None)
    assert not connected
    connected, _, _ = await agent_socket(customer_session)  # a customer's chat session
    assert not connected

    def staff_cookie():
        staff = User.objects.create_user("staff", is_staff=True)
        return login_cookie(staff)

    connected, _, _ = await agent_socket(await database_sync_to_async(staff_cookie)())
    assert not connected
    ws = await agent_connected(agent_socket, alice)
    await ws.send_json_to({"type": "take_over", "conversation_id": "not-a-uuid"})
    error = await ws.receive_json_from(timeout=5)
    assert error["code"] == "not_found"


async def test_agent_sees_conversations_and_streaming_replies_live(
    agent_socket, chat_socket, customer_session, alice
):
    console = await agent_connected(agent_socket, alice)
    customer = await chat_socket(customer_session)
    await customer.receive_json_from(timeout=10)
    await customer.send_json_to({"type": "customer_message", "text": "Where is my <b>order</b>?"})

    started = (await until(console, lambda f: f["type"] == "conversation"))[-1]
    conversation_id = started["conversation_id"]
    said = (await until(console, lambda f: f["type"] == "message"))[-1]
    assert said["role"] == "customer" and said["text"] == "Where is my <b>order</b>?"

    # Watching the conversation adds its group: the bot's tokens as they stream.
    await console.send_json_to({"type": "watch", "conversation_id": conversation_id})
    frames = await until(console, lambda f: f["type"] == "message" and f["role"] == "bot")
    snapshot = next(f for f in frames if f["type"] == "snapshot")
    assert snapshot["conversation_id"] == conversation_id
    assert any(f["type"] == "token" for f in frames) or snapshot["messages"][-1]["role"] == "bot"
    await frames_until(customer, "bot_message")


async def test_takeover_agent_messages_reach_the_customer_and_the_bot_stays_quiet(
    agent_socket, chat_socket, customer_session, alice
):
    customer = await chat_socket(customer_session)
    await customer.receive_json_from(timeout=10)
    await customer.send_json_to({"type": "customer_message", "text": "hello"})
    conversation_id = (await frames_until(customer, "conversation"))[-1]["conversation_id"]
    await frames_until(customer, "bot_message")

    console = await agent_connected(agent_socket, alice)
    await console.send_json_to({"type": "watch", "conversation_id": conversation_id})
    await until(console, lambda f: f["type"] == "snapshot")
    await console.send_json_to({"type": "take_over", "conversation_id": conversation_id})
    await until(console, lambda f: f["type"] == "done" and f["action"] == "take_over")

    status = (await frames_until(customer, "status"))[-1]
    assert status["status"] == "agent" and status["agent_name"] == "Alice"
    assert "Alice" in status["notice"]

    await console.send_json_to(
        {"type": "agent_message", "conversation_id": conversation_id, "text": "Hi, I'm Alice."}
    )
    message = (await frames_until(customer, "message"))[-1]
    assert message["role"] == "agent" and message["text"] == "Hi, I'm Alice."

    await customer.send_json_to({"type": "customer_message", "text": "great, thanks"})
    echoed = (await frames_until(customer, "message"))[-1]
    assert echoed["role"] == "customer"
    assert await customer.receive_nothing(timeout=1.5)  # no bot tokens while Alice answers
    seen = await until(console, lambda f: f["type"] == "message" and f["role"] == "customer")
    assert seen[-1]["text"] == "great, thanks"

    await console.send_json_to({"type": "hand_back", "conversation_id": conversation_id})
    assert (await frames_until(customer, "status"))[-1]["status"] == "bot"
    await customer.send_json_to({"type": "customer_message", "text": "one more question"})
    await frames_until(customer, "bot_message")
    roles = await database_sync_to_async(
        lambda: list(Message.objects.order_by("created_at").values_list("role", flat=True))
    )()
    assert roles == ["customer", "bot", "agent", "customer", "customer", "bot"]


async def test_two_agents_taking_over_at_once_one_is_told(
    agent_socket, chat_socket, customer_session, alice, bob
):
    conversation = await database_sync_to_async(Conversation.objects.create)(
        session_key=customer_session, status="waiting"
    )
    first = await agent_connected(agent_socket, alice)
    second = await agent_connected(agent_socket, bob)
    frame = {"type": "take_over", "conversation_id": str(conversation.id)}
    await asyncio.gather(first.send_json_to(frame), second.send_json_to(frame))

    def outcome(frame):
        return frame["type"] in ("done", "error") and frame.get("action") == "take_over"

    results = [(await until(ws, outcome))[-1] for ws in (first, second)]
    assert sorted(r["type"] for r in results) == ["done", "error"]
    loser = next(r for r in results if r["type"] == "error")
    assert loser["code"] == "already_taken"
    review = await database_sync_to_async(
        lambda: ConversationReview.objects.select_related("handled_by").get()
    )()
    winner = "alice" if results[0]["type"] == "done" else "bob"
    assert review.handled_by.username == winner
    assert winner.capitalize() in loser["detail"] or review.handled_by.first_name in loser["detail"]


async def test_customer_asks_for_a_human_and_agents_are_told(
    agent_socket, chat_socket, customer_session, alice
):
    console = await agent_connected(agent_socket, alice)
    customer = await chat_socket(customer_session)
    await customer.receive_json_from(timeout=10)
    await customer.send_json_to({"type": "request_human"})
    await frames_until(customer, "conversation")
    status = (await frames_until(customer, "status"))[-1]
    assert status["status"] == "waiting" and status["handoff_reason"] == "customer_asked"
    told = (await until(console, lambda f: f["type"] == "status"))[-1]
    assert told["status"] == "waiting" and told["conversation_id"] == status["conversation_id"]
    assert await console.receive_json_from(timeout=5) == {"type": "waiting", "count": 1}

    # Asking in words: the message is stored, the bot does not answer.
    other = await chat_socket(await database_sync_to_async(_new_session)())
    await other.receive_json_from(timeout=10)
    await other.send_json_to({"type": "customer_message", "text": "I want to speak to a human"})
    status = (await frames_until(other, "status"))[-1]
    assert status["status"] == "waiting"
    assert await other.receive_nothing(timeout=1.5)
    assert not await database_sync_to_async(Message.objects.filter(role="bot").exists)()


def _new_session() -> str:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store["customer"] = True
    store.create()
    return store.session_key


async def answer(ws) -> dict:
    """The reply to a rating frame (skipping live status frames that may come first)."""
    return (await until(ws, lambda f: f["type"] in ("rating_saved", "error")))[-1]


async def test_customer_rates_the_conversation_and_a_reply(chat_socket, customer_session):
    customer = await chat_socket(customer_session)
    await customer.receive_json_from(timeout=10)
    await customer.send_json_to({"type": "rate_conversation", "score": 5})
    assert (await answer(customer))["code"] == "no_conversation"
    await customer.send_json_to({"type": "customer_message", "text": "hi"})
    reply = (await frames_until(customer, "bot_message"))[-1]

    await customer.send_json_to(
        {"type": "rate_message", "message_id": reply["message_id"], "value": "down"}
    )
    saved = await answer(customer)
    assert saved == {
        "type": "rating_saved",
        "target": "message",
        "message_id": reply["message_id"],
        "value": "down",
    }
    await customer.send_json_to({"type": "rate_conversation", "score": 9})
    assert (await answer(customer))["code"] == "invalid_score"
    await customer.send_json_to({"type": "rate_conversation", "score": 2})
    assert (await answer(customer))["type"] == "rating_saved"
    await customer.send_json_to({"type": "rate_message", "message_id": "nope", "value": "up"})
    assert (await answer(customer))["code"] == "message_not_found"

    review = await database_sync_to_async(ConversationReview.objects.get)()
    assert review.customer_rating == 2
    rating = await database_sync_to_async(MessageRating.objects.get)()
    assert rating.source == "customer" and rating.value == "bad"


async def closed_with(ws, code: int) -> bool:
    """True if the next thing the socket says is the forbidden error, then it closes with
    `code` (nothing about any conversation reaches it)."""
    said = []
    while True:
        output = await ws.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            return output["code"] == code and said == [("error", "forbidden")]
        frame = json.loads(output["text"])
        said.append((frame["type"], frame.get("code")))


@pytest.mark.parametrize("withdraw", ["deactivate", "remove_permission", "log_out"])
async def test_an_open_agent_socket_loses_access_on_its_next_frame(
    agent_socket, make_conversation, alice, withdraw
):
    conversation, _ = await database_sync_to_async(make_conversation)([("customer", "hi")])
    cookie = await database_sync_to_async(login_cookie)(alice)
    connected, _, ws = await agent_socket(cookie)
    assert connected and (await ws.receive_json_from(timeout=10))["type"] == "hello"

    def take_access_away():
        if withdraw == "deactivate":
            User.objects.filter(pk=alice.pk).update(is_active=False)
        elif withdraw == "remove_permission":
            alice.groups.clear()
        else:
            from django.contrib.sessions.models import Session

            Session.objects.filter(session_key=cookie).delete()

    await database_sync_to_async(take_access_away)()
    await ws.send_json_to({"type": "watch", "conversation_id": str(conversation.id)})
    assert await closed_with(ws, 4403)


async def test_a_deactivated_agent_stops_hearing_live_frames(
    settings, agent_socket, chat_socket, customer_session, alice
):
    settings.AGENT_RECHECK_SECONDS = 0
    console = await agent_connected(agent_socket, alice)
    await database_sync_to_async(User.objects.filter(pk=alice.pk).update)(is_active=False)
    customer = await chat_socket(customer_session)
    await customer.receive_json_from(timeout=10)
    await customer.send_json_to({"type": "customer_message", "text": "my address is 1 Elm St"})
    assert await closed_with(console, 4403)
    await frames_until(customer, "bot_message")
