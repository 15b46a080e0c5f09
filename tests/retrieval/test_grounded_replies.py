"""Replies grounded in the knowledge base: passages in the prompt, citations on the message."""

import pytest
from channels.db import database_sync_to_async

from chatbot import services
from chatbot.knowledge.selectors import Hit
from chatbot.models import Message
from chatbot.prompting import system_prompt
from tests.helpers import frames_until


def socket_test(fn):
    """Through the customer socket, with the tiny model and committed data."""
    return pytest.mark.django_db(transaction=True)(pytest.mark.usefixtures("tiny_model")(fn))


@pytest.fixture
def prompts(monkeypatch):
    """The chat messages the model is given, per reply."""
    seen = []
    original = services.gateway.reply_stream

    def spy(messages, target, params=None):
        seen.append(messages)
        return original(messages, target, params)

    monkeypatch.setattr(services.gateway, "reply_stream", spy)
    return seen


@socket_test
async def test_reply_cites_the_articles_it_used(demo_kb, chat_socket, customer_session, prompts):
    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": "When do I get my money back?"})
    final = (await frames_until(ws, "bot_message"))[-1]

    assert final["sources"][0]["title"] == "Refunds"
    assert {s["kind"] for s in final["sources"]} == {"article"}
    assert all(s["score"] >= 0.25 for s in final["sources"])
    stored = await database_sync_to_async(Message.objects.get)(pk=final["message_id"])
    assert stored.sources == final["sources"]
    system = prompts[0][0]["content"]
    assert "Knowledge base passages" in system and "5-7 business days" in system

    # Reloading shows the sources with the history.
    await ws.disconnect()
    again = await chat_socket(customer_session)
    history = await again.receive_json_from(timeout=10)
    assert history["messages"][-1]["sources"] == final["sources"]


@socket_test
async def test_nothing_relevant_gives_no_citations_and_says_so_in_the_prompt(
    demo_kb, chat_socket, customer_session, prompts
):
    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": "Who won the 2014 world cup?"})
    final = (await frames_until(ws, "bot_message"))[-1]
    assert final["sources"] == []
    stored = await database_sync_to_async(Message.objects.get)(pk=final["message_id"])
    assert stored.sources == []
    assert "No knowledge-base article matches" in prompts[0][0]["content"]


@socket_test
async def test_a_broken_index_does_not_stop_the_chat(
    db, chat_socket, customer_session, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("index exploded")

    monkeypatch.setattr("chatbot.knowledge.selectors.passages_search", broken)
    ws = await chat_socket(customer_session)
    await ws.receive_json_from(timeout=10)
    await ws.send_json_to({"type": "customer_message", "text": "When do I get my money back?"})
    final = (await frames_until(ws, "bot_message"))[-1]
    assert final["text"] and final["sources"] == []


def test_system_prompt_carries_passages_or_the_no_knowledge_rule():
    hit = Hit(1, 1, "Refunds", "article", "Refunds take 5-7 business days.", 0.7)
    with_hits = system_prompt([hit])
    assert "[1] Refunds: Refunds take 5-7 business days." in with_hits
    assert "never invent a policy" in with_hits
    assert "human agent" in system_prompt([]).split("\n\n")[-1]
    assert "Knowledge base" not in system_prompt()
