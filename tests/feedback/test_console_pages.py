"""The console pages: who gets in, CSRF, escaping, filters and the POST actions."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from chatbot.models import Conversation
from feedback.models import AuditEvent, Correction, MessageRating
from tests.helpers import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_client(agent):
    client = Client()
    client.force_login(agent)
    return client


def test_anonymous_users_are_sent_to_the_login_page(client, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")])
    for url in ("/agent/", f"/agent/c/{conversation.id}/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/agent/login/?next=")
    response = client.post(f"/agent/c/{conversation.id}/take_over/")
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.status == "bot"


def test_customers_and_staff_without_the_permission_are_refused(client, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")])
    client.get("/")  # a customer session
    assert client.get("/agent/").status_code == 302
    plain = User.objects.create_user("plain", password=PASSWORD)
    staff = User.objects.create_user("staff", password=PASSWORD, is_staff=True)
    for user in (plain, staff):
        client.force_login(user)
        assert client.get("/agent/").status_code == 403
        assert client.post(f"/agent/c/{conversation.id}/take_over/").status_code == 403
    conversation.refresh_from_db()
    assert conversation.status == "bot"


def test_agent_logs_in_through_the_login_page(client, agent):
    page = client.get("/agent/login/?next=/agent/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    response = client.post(
        "/agent/login/", {"username": "alice", "password": PASSWORD, "next": "/agent/"}
    )
    assert response.status_code == 302 and response["Location"] == "/agent/"
    assert client.get("/agent/").status_code == 200


def test_forms_require_a_csrf_token(agent, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")])
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    assert client.post(f"/agent/c/{conversation.id}/take_over/").status_code == 403
    page = client.get(f"/agent/c/{conversation.id}/")
    token = page.context["csrf_token"]
    response = client.post(
        f"/agent/c/{conversation.id}/take_over/", {"csrfmiddlewaretoken": str(token)}
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.status == "agent"


def test_console_escapes_all_text(agent_client, agent, make_conversation):
    evil = "<script>alert('x')</script>"
    conversation, (_, bot) = make_conversation([("customer", evil), ("bot", evil)])
    Correction.objects.create(message=bot, text=evil, agent=agent)
    for url in ("/agent/", f"/agent/c/{conversation.id}/"):
        page = agent_client.get(url).content.decode()
        assert "<script>alert(" not in page
        assert "&lt;script&gt;alert(" in page


def test_conversation_page_shows_the_original_beside_the_corrections(
    agent_client, make_conversation
):
    conversation, (_, bot) = make_conversation([("customer", "q"), ("bot", "wrong answer")])
    agent_client.post(f"/agent/m/{bot.id}/correct/", {"text": "first fix"})
    response = agent_client.post(f"/agent/m/{bot.id}/correct/", {"text": "second fix"})
    assert response.status_code == 302 and response["Location"].endswith(f"#m-{bot.id}")
    page = agent_client.get(f"/agent/c/{conversation.id}/").content.decode()
    assert page.index("wrong answer") < page.index("second fix") < page.index("first fix")
    assert "Correction (used for training) by alice" in page
    assert "Earlier correction by alice" in page


def test_filters_and_search(agent_client, agent, make_conversation):
    from feedback import services

    waiting, _ = make_conversation([("customer", "need a person")], status="waiting")
    flagged, (_, f_bot) = make_conversation([("customer", "q"), ("bot", "unsafe tip")])
    rated, _ = make_conversation([("customer", "meh"), ("bot", "ok")])
    reviewed, _ = make_conversation([("customer", "parcel to Narnia")])
    services.message_flag(message_id=f_bot.id, agent=agent, reason="unsafe")
    services.customer_conversation_rate(conversation_id=rated.id, score=1)
    services.conversation_mark_reviewed(conversation_id=reviewed.id, agent=agent)

    def listed(query):
        response = agent_client.get("/agent/" + query)
        return {str(c.id) for c in response.context["conversations"]}

    everyone = {str(c.id) for c in (waiting, flagged, rated, reviewed)}
    assert listed("") == everyone
    assert listed("?filter=needs_human") == {str(waiting.id)}
    assert listed("?filter=flagged") == {str(flagged.id)}
    assert listed("?filter=rated_bad") == {str(rated.id)}
    assert listed("?filter=unreviewed") == everyone - {str(reviewed.id)}
    assert listed("?q=narnia") == {str(reviewed.id)}
    assert listed("?status=waiting") == {str(waiting.id)}


def test_post_actions_take_over_reply_rate_and_json_replies(
    agent_client, make_agent, make_conversation
):
    conversation, (_, bot) = make_conversation([("customer", "hi"), ("bot", "hello")])
    base = f"/agent/c/{conversation.id}"
    agent_client.post(f"{base}/take_over/")
    agent_client.post(f"{base}/reply/", {"text": "Hi, a person here."})
    assert conversation.messages.filter(role="agent", text="Hi, a person here.").exists()
    agent_client.post(f"/agent/m/{bot.id}/rate/", {"value": "bad"})
    assert MessageRating.objects.get().value == "bad"

    bob = Client()
    bob.force_login(make_agent("bob"))
    response = bob.post(f"{base}/take_over/", HTTP_ACCEPT="application/json")
    assert response.status_code == 409
    assert response.json() == {"ok": False, "detail": "Alice is already answering this one."}
    response = bob.post(f"{base}/assign/", {"assignee": "x"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 409
    assert Conversation.objects.get().status == "agent"
    assert AuditEvent.objects.filter(actor_name="alice").count() == 3
