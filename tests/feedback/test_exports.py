"""Feedback as training data: the SFT and DPO rules, and the export command."""

import json

import pytest
from django.core.management import call_command

from chatbot.models import Message
from feedback import services
from feedback.exports import correction_examples, preference_pairs, sft_examples

pytestmark = pytest.mark.django_db


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_a_correction_replaces_the_bot_reply_in_sft_and_makes_a_dpo_pair(agent, make_conversation):
    conversation, (_, bot, _, bot2) = make_conversation(
        [
            ("customer", "Can I return shoes?"),
            ("bot", "No."),
            ("customer", "Thanks"),
            ("bot", "You're welcome!"),
        ]
    )
    services.correction_submit(message_id=bot.id, agent=agent, text="Yes, within 30 days.")
    services.correction_submit(message_id=bot.id, agent=agent, text="Yes, unused, within 30 days.")

    [example] = sft_examples()
    assert example["conversation_id"] == str(conversation.id)
    assert example["corrected"] == 1 and example["source"] == "correction"
    assert example["messages"] == [
        user("Can I return shoes?"),
        assistant("Yes, unused, within 30 days."),  # the newest correction
        # "You're welcome!" was never reviewed: the example stops before it.
    ]
    services.message_rate(message_id=bot2.id, agent=agent, value="good")
    [example] = sft_examples()
    assert example["messages"][2:] == [user("Thanks"), assistant("You're welcome!")]

    [single] = correction_examples()
    assert single["messages"] == [
        user("Can I return shoes?"),
        assistant("Yes, unused, within 30 days."),
    ]
    assert single["correction_id"] == bot.corrections.first().id
    assert single["source"] == "correction"

    [pair] = preference_pairs()
    assert pair == {
        "conversation_id": str(conversation.id),
        "message_id": str(bot.id),
        "prompt": [user("Can I return shoes?")],
        "chosen": [assistant("Yes, unused, within 30 days.")],
        "rejected": [assistant("No.")],
    }


def test_only_reviewed_replies_train_and_thumbs_up_only_with_the_setting(agent, make_conversation):
    _, (_, good) = make_conversation([("customer", "q1"), ("bot", "good answer")], session_key="a")
    make_conversation([("customer", "q2"), ("bot", "plain answer")], session_key="b")
    _, (_, bad) = make_conversation([("customer", "q3"), ("bot", "bad answer")], session_key="c")
    _, (_, flagged) = make_conversation(
        [("customer", "q4"), ("bot", "flagged answer")], session_key="d"
    )
    _, (_, down) = make_conversation(
        [("customer", "q5"), ("bot", "disliked answer")], session_key="e"
    )
    _, (_, liked) = make_conversation(
        [("customer", "q6"), ("bot", "liked answer")], session_key="f"
    )
    _, (_, disputed) = make_conversation(
        [("customer", "q7"), ("bot", "liked, agent said bad")], session_key="g"
    )
    services.message_rate(message_id=good.id, agent=agent, value="good")
    services.message_rate(message_id=bad.id, agent=agent, value="bad")
    services.message_flag(message_id=flagged.id, agent=agent, reason="wrong_facts")
    for message, thumb in ((down, "down"), (liked, "up"), (disputed, "up")):
        services.customer_message_rate(
            conversation_id=message.conversation_id, message_id=message.id, value=thumb
        )
    services.message_rate(message_id=disputed.id, agent=agent, value="bad")

    def replies(**kwargs):
        return {ex["messages"][-1]["content"]: ex["source"] for ex in sft_examples(**kwargs)}

    assert replies() == {"good answer": "approved"}  # unreviewed "plain answer" left out
    assert replies(include_thumbs_up=True) == {
        "good answer": "approved",
        "liked answer": "thumbs_up",
    }
    assert preference_pairs() == []  # nothing corrected, nothing to prefer


def test_an_unreviewed_reply_cuts_the_example_even_before_an_agent_answer(agent, make_conversation):
    make_conversation(
        [
            ("customer", "hello"),
            ("agent", "Hi, Alice here."),
            ("customer", "where is my parcel"),
            ("bot", "It was lost (made up)."),
            ("customer", "what? human please"),
            ("agent", "Sorry! It ships tomorrow."),
        ]
    )
    [example] = sft_examples()
    assert example["source"] == "agent"
    assert example["messages"] == [user("hello"), assistant("Hi, Alice here.")]


def test_sft_stops_before_a_bad_reply_and_counts_agent_messages_as_assistant(
    agent, make_conversation
):
    make_conversation(
        [
            ("customer", "hello"),
            ("bot", "Hi! How can I help?"),
            ("customer", "my order"),
            ("customer", "is late"),
            ("agent", "Sorry! Let me check."),
            ("bot", "Your order was cancelled (made up)."),
            ("customer", "what?"),
            ("bot", "ok"),
        ]
    )
    bad = Message.objects.get(text__startswith="Your order")
    greeting = Message.objects.get(text__startswith="Hi!")
    services.message_flag(message_id=bad.id, agent=agent, reason="wrong_facts")
    services.message_rate(message_id=greeting.id, agent=agent, value="good")
    [example] = sft_examples()
    assert example["source"] == "approved"
    assert example["messages"] == [
        user("hello"),
        assistant("Hi! How can I help?"),
        user("my order\n\nis late"),
        assistant("Sorry! Let me check."),
    ]


def test_export_command_writes_jsonl(agent, make_conversation, tmp_path, capsys, settings):
    settings.FEEDBACK_EXPORT_DIR = tmp_path
    _, (_, bot) = make_conversation([("customer", "<b>hi</b>"), ("bot", "yo")])
    services.correction_submit(message_id=bot.id, agent=agent, text="Hello! How can I help?")
    out = tmp_path / "sft.jsonl"
    call_command("export_feedback", "--format", "sft", "--output", "sft.jsonl")
    [line] = out.read_text().splitlines()
    assert json.loads(line)["messages"][1] == assistant("Hello! How can I help?")

    call_command("export_feedback", "--format", "dpo")
    [line] = capsys.readouterr().out.splitlines()
    pair = json.loads(line)
    assert pair["chosen"][0]["content"] == "Hello! How can I help?"
    assert pair["rejected"][0]["content"] == "yo"
    assert pair["prompt"] == [user("<b>hi</b>")]


def test_feedback_count_since_counts_new_items(agent, make_conversation):
    from django.utils import timezone

    from feedback.exports import feedback_count_since

    _, (_, bot) = make_conversation([("customer", "q"), ("bot", "a")])
    services.correction_submit(message_id=bot.id, agent=agent, text="b")
    moment = timezone.now()
    services.message_rate(message_id=bot.id, agent=agent, value="bad")
    services.message_flag(message_id=bot.id, agent=agent, reason="other")
    # Customer thumbs feed monitoring, not the retrain trigger.
    services.customer_message_rate(
        conversation_id=bot.conversation_id, message_id=bot.id, value="up"
    )
    assert feedback_count_since(moment) == 2
    assert feedback_count_since(None) == 3
