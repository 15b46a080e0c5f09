"""Bringing in a human (chatbot/handoff.py): the words rule and the write that stops the bot."""

import pytest

from chatbot import handoff
from chatbot.handoff import EMPTY_REPLY_FALLBACK, handoff_reason_for
from chatbot.models import Conversation
from tests.helpers import conversation_make

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Can I speak to a human please?", "customer_asked"),
        ("connect me with an agent", "customer_asked"),
        ("I want to talk to someone", "customer_asked"),
        ("this is fraud, I'll call my lawyer", "flagged_words"),
        ("Where is my parcel?", None),
        ("Humanity is great", None),
    ],
)
def test_handoff_rule(text, reason):
    found = handoff_reason_for(text)
    assert (found[0] if found else None) == reason


def test_asking_for_a_human_marks_the_conversation_waiting_once():
    conversation, (message,) = conversation_make([("customer", "let me talk to a real person")])
    assert handoff.handoff_check(message=message)
    assert not handoff.handoff_check(message=message)  # already waiting
    conversation.refresh_from_db()
    assert conversation.status == "waiting"
    assert conversation.handoff_reason == "customer_asked"
    assert "real person" in conversation.handoff_detail


def test_yes_to_the_bots_offer_of_a_human_hands_off_as_bot_unsure():
    conversation, (_, _, yes) = conversation_make(
        [("customer", "blorp?"), ("bot", EMPTY_REPLY_FALLBACK), ("customer", "Yes please")]
    )
    assert handoff.handoff_check(message=yes)
    conversation.refresh_from_db()
    assert conversation.handoff_reason == "bot_unsure"
    # Without the offer, "yes" is just a word.
    _, (_, _, plain_yes) = conversation_make(
        [("customer", "q"), ("bot", "Shall I check?"), ("customer", "yes")], session_key="x"
    )
    assert not handoff.handoff_check(message=plain_yes)


def test_status_frame_names_the_agent_and_the_reason():
    conversation = Conversation.objects.create(
        session_key="s", status="agent", handoff_reason="customer_asked"
    )
    frame = handoff.status_frame(conversation, agent_name="Alice")
    assert frame["notice"] == "Alice from our support team has joined the chat."
    assert frame["handoff_reason"] == "customer_asked" and frame["agent_name"] == "Alice"
    assert handoff.status_frame(conversation)["notice"].startswith("An agent ")
