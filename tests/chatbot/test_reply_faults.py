"""Replies in flight: either delivered and stored, or the customer gets an error frame and the
message is marked so agents see it; replies lost with a dead web process are settled."""

import asyncio
import shutil
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db import OperationalError

from chatbot import services
from chatbot.live import AGENTS_GROUP, conversation_group
from chatbot.models import Conversation, Message
from tests.helpers import frames_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]


async def started(chat_socket, customer_session, text="where is my parcel?"):
    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": text})
    return ws


async def test_a_channel_layer_error_mid_stream_loses_the_live_frames_not_the_reply(
    chat_socket, customer_session, monkeypatch
):
    publish = services.frame_publish

    async def redis_down_for_tokens(group, frame):  # fault injection: Redis drops mid-stream
        if frame["type"] == "token":
            raise ConnectionError("Redis went away")
        await publish(group, frame)

    monkeypatch.setattr(services, "frame_publish", redis_down_for_tokens)
    ws = await started(chat_socket, customer_session)
    final = (await frames_until(ws, "bot_message"))[-1]
    stored = await database_sync_to_async(Message.objects.get)(role="bot")
    assert stored.text == final["text"] and stored.token_count == 8
    customer = await database_sync_to_async(Message.objects.get)(role="customer")
    assert customer.reply_failed_at is None


async def test_a_database_error_mid_reply_ends_in_an_error_frame_and_a_marked_message(
    chat_socket, customer_session, monkeypatch
):
    def database_down(**kwargs):  # fault injection: the final write fails
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "bot_message_store", database_down)
    layer = get_channel_layer()
    agents = await layer.new_channel()
    await layer.group_add(AGENTS_GROUP, agents)
    ws = await started(chat_socket, customer_session)
    error = (await frames_until(ws, "error"))[-1]
    assert error["code"] == "generation_failed" and error["detail"]
    customer = await database_sync_to_async(Message.objects.get)(role="customer")
    assert customer.reply_failed_at is not None
    assert not await database_sync_to_async(Message.objects.filter(role="bot").exists)()
    for _ in range(10):
        event = await asyncio.wait_for(layer.receive(agents), 5)
        if event["frame"]["type"] == "reply_failed":
            break
    assert event["frame"]["message_ids"] == [str(customer.pk)]


async def test_tokens_held_for_the_next_frame_reach_the_customer_before_an_engine_error(
    chat_socket, customer_session, monkeypatch, settings
):
    from chatbot.serving.engine import Event

    async def dies_mid_reply(*args, **kwargs):  # fault injection: the engine fails mid-reply
        for piece in ("Your ", "parcel ", "is "):
            yield Event("token", text=piece)
        yield Event("error", text="model server failed mid-reply")

    settings.CHAT_TOKEN_FRAME_SECONDS = 60  # all but the first token are held
    monkeypatch.setattr(services.gateway, "reply_stream", dies_mid_reply)
    ws = await started(chat_socket, customer_session)
    frames = await frames_until(ws, "error")
    assert [f["text"] for f in frames if f["type"] == "token"] == ["Your ", "parcel is "]
    assert frames[-1]["code"] == "generation_failed"


async def test_an_agent_sees_failed_replies_in_the_console_queue(
    chat_socket, customer_session, monkeypatch, client, django_user_model
):
    from feedback.selectors import QueueQuery, conversation_queue

    def broken_model(*args, **kwargs):  # fault injection: the engine cannot be reached
        raise RuntimeError("engine unreachable")

    monkeypatch.setattr(services.gateway, "reply_stream", broken_model)
    ws = await started(chat_socket, customer_session)
    await frames_until(ws, "error")
    await ws.send_json_to({"type": "customer_message", "text": "hello??"})
    await frames_until(ws, "error")

    def failed_queue():
        query = QueueQuery(filters=frozenset({"reply_failed"}))
        return [(c.id, c.has_failed_reply) for c in conversation_queue(query=query, agent=None)]

    conversation = await database_sync_to_async(Conversation.objects.get)()
    assert await database_sync_to_async(failed_queue)() == [(conversation.id, True)]
    marked = await database_sync_to_async(
        lambda: Message.objects.filter(reply_failed_at__isnull=False).count()
    )()
    assert marked == 2


def test_replies_lost_with_the_web_process_are_marked_failed_at_start(customer_session):
    from asgiref.sync import async_to_sync

    conversation = Conversation.objects.create(session_key=customer_session)
    answered = services.customer_message_log(conversation=conversation, text="first")
    Message.objects.create(
        conversation=conversation,
        role="bot",
        text="an answer",
        created_at=answered.created_at + timedelta(milliseconds=1),
    )
    lost = services.customer_message_log(conversation=conversation, text="second")
    waiting = Conversation.objects.create(session_key=customer_session, status="waiting")
    for_agent = services.customer_message_log(conversation=waiting, text="for a human")

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(conversation_group(conversation.id), channel)
    call_command("replies_settle")

    marked = set(Message.objects.filter(reply_failed_at__isnull=False).values_list("pk", flat=True))
    assert marked == {lost.pk}
    assert for_agent.pk not in marked and answered.pk not in marked
    frame = async_to_sync(layer.receive)(channel)["frame"]
    assert frame["code"] == "generation_failed"
    # Settled once: a second start finds nothing more.
    call_command("replies_settle")
    assert Message.objects.filter(reply_failed_at__isnull=False).count() == 1


async def test_a_promoted_version_that_will_not_load_is_never_served(
    chat_socket, customer_session, tmp_path, tiny_model_dir
):
    from training.models import ModelVersion, VersionEvent
    from training.registry import base_version_ensure, version_create, version_promote

    broken = tmp_path / "v2"
    shutil.copytree(tiny_model_dir, broken)

    def promote_broken():
        base = base_version_ensure()
        v2 = version_create(parent=base, artifact_path=str(broken), created_by="test")
        v2.status = ModelVersion.Status.CANDIDATE
        v2.save()
        promoted = version_promote(version_id=v2.pk, actor="test", reason="passed its test load")
        # Then its disk goes bad: every file the quick check looks at is there, the weights
        # are garbage.
        (broken / "model.safetensors").write_bytes(b"\0" * 64)
        return promoted

    # The previous version is serving when the broken one is promoted.
    ws = await started(chat_socket, customer_session, text="first question")
    assert (await frames_until(ws, "bot_message"))[-1]["model_version"] == 1
    v2 = await database_sync_to_async(promote_broken)()

    await ws.send_json_to({"type": "customer_message", "text": "second question"})
    frames = await frames_until(ws, "bot_message")
    assert not [f for f in frames if f["type"] == "error"]
    assert frames[-1]["model_version"] == 1 and frames[-1]["text"]
    await database_sync_to_async(v2.refresh_from_db)()
    assert v2.status == "retired" and "failed to load" in v2.status_reason
    active = await database_sync_to_async(ModelVersion.objects.get)(status="active")
    assert active.number == 1
    assert await database_sync_to_async(
        VersionEvent.objects.filter(version=v2, action="rolled_back").exists
    )()


async def test_a_reply_lost_on_another_host_is_marked_when_the_customer_comes_back(
    settings, chat_socket, customer_session
):
    """Another host died answering: its reply lease lapses, and the customer reconnecting
    here sees the message marked failed. While the lease lives (the reply may still be
    coming), nothing is touched."""
    from chatbot.leases import lease_release, leases_hold

    settings.CHAT_REPLY_LEASE_GRACE = 0.5
    conversation = await Conversation.objects.acreate(session_key=customer_session)
    lost = await database_sync_to_async(services.customer_message_log)(
        conversation=conversation, text="where is my parcel?"
    )
    await database_sync_to_async(leases_hold)([conversation.id])  # "web-1" is answering
    await asyncio.sleep(0.6)
    ws = await chat_socket(customer_session, f"conversation={conversation.id}")
    history = await ws.receive_json_from(timeout=10)
    assert history["messages"][-1]["reply_failed"] is False
    await ws.disconnect()

    await database_sync_to_async(lease_release)(conversation.id)  # "web-1" died
    ws = await chat_socket(customer_session, f"conversation={conversation.id}")
    frames = await frames_until(ws, "history")
    assert frames[-1]["messages"][-1]["reply_failed"] is True
    await lost.arefresh_from_db()
    assert lost.reply_failed_at is not None
