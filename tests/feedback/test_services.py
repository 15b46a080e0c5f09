"""Console services on PostgreSQL: takeover races, corrections, data deletion."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from chatbot.models import Conversation, Message
from feedback import services
from feedback.models import (
    AgentNote,
    AuditEvent,
    ConversationReview,
    Correction,
    Flag,
    MessageRating,
    RegressionCase,
)

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_two_agents_taking_over_at_once_exactly_one_wins(make_agent, make_conversation):
    alice, bob = make_agent("alice"), make_agent("bob")
    conversation, _ = make_conversation(
        [("customer", "help"), ("bot", "hi")], status=Conversation.Status.WAITING
    )
    barrier = threading.Barrier(2)
    results = {}

    def take(agent):
        barrier.wait()
        try:
            services.conversation_take_over(conversation_id=conversation.id, agent=agent)
            results[agent.username] = "won"
        except services.ConsoleActionError as exc:
            results[agent.username] = exc.code
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(a,)) for a in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(results.values()) == ["already_taken", "won"]
    winner = next(name for name, r in results.items() if r == "won")
    review = ConversationReview.objects.get(conversation=conversation)
    assert review.handled_by.username == winner
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.AGENT
    assert AuditEvent.objects.filter(action="take_over").count() == 1


def test_takeover_stops_the_bot_and_only_the_holder_may_write(make_agent, make_conversation):
    from chatbot.services import bot_should_answer

    alice, bob = make_agent("alice"), make_agent("bob")
    conversation, _ = make_conversation([("customer", "hi")])
    assert bot_should_answer(conversation_id=conversation.id)

    with pytest.raises(services.ConsoleActionError) as refused:
        services.agent_message_send(conversation_id=conversation.id, agent=alice, text="hello")
    assert refused.value.code == "take_over_first"

    services.conversation_take_over(conversation_id=conversation.id, agent=alice)
    assert not bot_should_answer(conversation_id=conversation.id)
    message = services.agent_message_send(
        conversation_id=conversation.id, agent=alice, text="Hi, Alice here."
    )
    assert message.role == "agent"
    with pytest.raises(services.ConsoleActionError) as taken:
        services.conversation_take_over(conversation_id=conversation.id, agent=bob)
    assert taken.value.code == "already_taken" and "alice" in taken.value.detail
    with pytest.raises(services.ConsoleActionError):
        services.agent_message_send(conversation_id=conversation.id, agent=bob, text="me too")

    services.conversation_hand_back(conversation_id=conversation.id, agent=alice)
    assert bot_should_answer(conversation_id=conversation.id)
    services.conversation_close(conversation_id=conversation.id, agent=alice)
    conversation.refresh_from_db()
    assert conversation.status == "closed"
    with pytest.raises(services.ConsoleActionError) as closed:
        services.conversation_take_over(conversation_id=conversation.id, agent=bob)
    assert closed.value.code == "closed"
    actions = list(
        AuditEvent.objects.order_by("created_at", "id").values_list("actor_name", "action")
    )
    assert actions == [
        ("alice", "take_over"),
        ("alice", "agent_message"),
        ("alice", "hand_back"),
        ("alice", "close"),
    ]


def test_non_agents_cannot_act(make_conversation):
    conversation, _ = make_conversation([("customer", "hi")])
    staff = User.objects.create_user("staff", is_staff=True)  # staff but not an agent
    with pytest.raises(services.ConsoleActionError) as refused:
        services.conversation_take_over(conversation_id=conversation.id, agent=staff)
    assert refused.value.code == "forbidden"


def test_two_corrections_are_both_kept_and_the_newest_is_used(agent, make_agent, make_conversation):
    bob = make_agent("bob")
    _, (_, bot) = make_conversation([("customer", "refund?"), ("bot", "No refunds ever.")])
    first = services.correction_submit(message_id=bot.id, agent=agent, text="Within 30 days.")
    second = services.correction_submit(message_id=bot.id, agent=bob, text="Yes, within 30 days.")
    bot.refresh_from_db()
    assert bot.text == "No refunds ever."  # the original is never edited
    assert list(bot.corrections.all()) == [second, first]
    assert second.agent == bob and second.created_at >= first.created_at

    case = services.regression_case_add(message_id=bot.id, agent=agent)
    assert case.expected == "Yes, within 30 days."
    assert case.prompt == [{"role": "user", "content": "refund?"}]
    from feedback.exports import regression_cases

    assert regression_cases() == [
        {
            "id": case.id,
            "conversation_id": str(bot.conversation_id),
            "prompt": case.prompt,
            "expected": case.expected,
        }
    ]


def test_ratings_flags_notes_and_review_are_stored_and_audited(agent, make_conversation):
    conversation, (_, bot) = make_conversation([("customer", "hi"), ("bot", "rude words")])
    services.message_rate(message_id=bot.id, agent=agent, value="good")
    services.message_rate(message_id=bot.id, agent=agent, value="bad")  # re-rating replaces
    assert list(MessageRating.objects.values_list("value", flat=True)) == ["bad"]
    services.message_flag(message_id=bot.id, agent=agent, reason="rude", note="tone")
    with pytest.raises(services.ConsoleActionError):
        services.message_flag(message_id=bot.id, agent=agent, reason="boring")
    services.note_add(conversation_id=conversation.id, agent=agent, text="call back Monday")
    services.conversation_mark_reviewed(conversation_id=conversation.id, agent=agent)
    assert Flag.objects.get().reason == "rude"
    assert AgentNote.objects.get().text == "call back Monday"
    assert ConversationReview.objects.get().reviewed_by == agent
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {
        "rate",
        "flag",
        "note",
        "review",
    }


def test_customer_ratings_are_validated_and_scoped_to_their_conversation(make_conversation):
    conversation, (_, bot) = make_conversation([("customer", "hi"), ("bot", "hello")])
    other, (_, other_bot) = make_conversation(
        [("customer", "x"), ("bot", "y")], session_key="other"
    )
    services.customer_conversation_rate(conversation_id=conversation.id, score=4)
    for bad in (0, 6, "5", True, None):
        with pytest.raises(services.ConsoleActionError):
            services.customer_conversation_rate(conversation_id=conversation.id, score=bad)
    services.customer_message_rate(conversation_id=conversation.id, message_id=bot.id, value="down")
    with pytest.raises(services.ConsoleActionError) as foreign:
        services.customer_message_rate(
            conversation_id=conversation.id, message_id=other_bot.id, value="up"
        )
    assert foreign.value.code == "message_not_found"
    assert ConversationReview.objects.get(conversation=conversation).customer_rating == 4
    assert MessageRating.objects.get().value == "bad"


def test_customer_data_delete_removes_everything_about_that_customer(agent, make_conversation):
    store = SessionStore()
    store["customer"] = True
    store.create()
    key = store.session_key
    mine, (_, bot) = make_conversation(
        [("customer", "my email is a@b.c"), ("bot", "ok")], session_key=key
    )
    make_conversation([("customer", "hi")], session_key=key)
    other, _ = make_conversation([("customer", "someone else")], session_key="other")
    services.correction_submit(message_id=bot.id, agent=agent, text="Thanks!")
    services.message_flag(message_id=bot.id, agent=agent, reason="other")
    services.note_add(conversation_id=mine.id, agent=agent, text="customer a@b.c")
    services.regression_case_add(message_id=bot.id, agent=agent)

    counts = services.customer_data_delete(session_key=key, actor=agent)

    assert counts == {
        "conversations": 2,
        "messages": 3,
        "regression_cases": 1,
        "snapshot_rows": 0,
        "export_rows": 0,
        "evaluation_samples": 0,
    }
    assert list(Conversation.objects.all()) == [other]
    assert not Correction.objects.exists() and not Flag.objects.exists()
    assert not AgentNote.objects.exists() and not RegressionCase.objects.exists()
    assert not Session.objects.filter(session_key=key).exists()
    # The audit trail keeps who/what/when but nothing derived from the customer.
    assert all(e.detail == {} for e in AuditEvent.objects.filter(conversation_id=mine.id))
    assert AuditEvent.objects.filter(action="customer_data_delete", actor=agent).exists()


def test_delete_customer_data_command_finds_the_customer_by_conversation(make_conversation):
    conversation, _ = make_conversation([("customer", "hi")], session_key="k1")
    call_command("delete_customer_data", "--conversation", str(conversation.id))
    assert not Conversation.objects.exists()


def test_retention_purge_deletes_old_idle_conversations_only(agent, make_conversation, settings):
    old, (_, old_bot) = make_conversation([("customer", "old"), ("bot", "reply")])
    waiting, _ = make_conversation([("customer", "old but waiting")], status="waiting")
    recent, _ = make_conversation([("customer", "new")])
    services.correction_submit(message_id=old_bot.id, agent=agent, text="better")
    case = services.regression_case_add(message_id=old_bot.id, agent=agent)
    long_ago = timezone.now() - timedelta(days=400)
    Conversation.objects.filter(pk__in=[old.pk, waiting.pk]).update(updated_at=long_ago)

    from feedback.tasks import conversations_purge_task

    settings.FEEDBACK_RETENTION_DAYS = 365
    assert conversations_purge_task() == 1
    assert set(Conversation.objects.values_list("pk", flat=True)) == {waiting.pk, recent.pk}
    case.refresh_from_db()
    assert case.expected == "better" and case.message is None  # the eval case survives
    assert conversations_purge_task() == 0
    settings.FEEDBACK_RETENTION_DAYS = 0
    call_command("purge_conversations")  # retention off: nothing happens
    assert Conversation.objects.count() == 2


def test_create_agent_command_takes_the_password_from_the_environment(monkeypatch, client):
    from feedback.agents import is_agent

    monkeypatch.setenv("AGENT_PW", "a-Long-enough-pass-42")
    call_command("create_agent", "carol", "--password-env", "AGENT_PW")
    carol = User.objects.get(username="carol")
    assert carol.is_staff and not carol.is_superuser and is_agent(carol)
    assert carol.groups.filter(name="Support agents").exists()
    assert carol.check_password("a-Long-enough-pass-42")
    monkeypatch.setenv("WEAK", "123")
    from django.core.management import CommandError

    with pytest.raises(CommandError):
        call_command("create_agent", "dave", "--password-env", "WEAK")


def test_agent_message_text_rules(agent, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")])
    services.conversation_take_over(conversation_id=conversation.id, agent=agent)
    with pytest.raises(services.ConsoleActionError) as empty:
        services.agent_message_send(conversation_id=conversation.id, agent=agent, text="   ")
    assert empty.value.code == "empty_message"
    assert Message.objects.filter(role="agent").count() == 0
