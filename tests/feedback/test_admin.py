"""Admin: feedback and the audit trail are visible; the customer-data deletion action works."""

import pytest
from django.contrib.auth.models import User

from chatbot.models import Conversation
from feedback import services
from feedback.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root", password="x-Admin-pass-1"))
    return client


def test_feedback_and_audit_pages_show_agent_actions(admin_client, agent, make_conversation):
    conversation, (_, bot) = make_conversation([("customer", "q"), ("bot", "a")])
    services.correction_submit(message_id=bot.id, agent=agent, text="better <answer>")
    services.message_flag(message_id=bot.id, agent=agent, reason="rude")
    for model in (
        "auditevent",
        "correction",
        "flag",
        "messagerating",
        "agentnote",
        "conversationreview",
        "cannedreply",
        "regressioncase",
    ):
        assert admin_client.get(f"/admin/feedback/{model}/").status_code == 200, model
    page = admin_client.get("/admin/feedback/auditevent/").content.decode()
    assert "Corrected a reply" in page and "Flagged a reply" in page and "alice" in page
    assert admin_client.get("/admin/feedback/auditevent/add/").status_code == 403


def test_admin_action_deletes_the_customers_data(admin_client, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")], session_key="k1")
    make_conversation([("customer", "again")], session_key="k1")
    keep, _ = make_conversation([("customer", "other")], session_key="k2")
    response = admin_client.post(
        "/admin/chatbot/conversation/",
        {"action": "customer_data_delete_action", "_selected_action": [str(conversation.id)]},
    )
    assert response.status_code == 302
    assert list(Conversation.objects.all()) == [keep]
    event = AuditEvent.objects.get(action="customer_data_delete")
    assert event.actor_name == "root" and event.detail["conversations"] == 2
