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


def staff_client(client, *permissions):
    from django.contrib.auth.models import Permission

    user = User.objects.create_user("staff", password="x-Staff-pass-1", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return client


def test_customer_data_deletion_needs_its_own_permission(client, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")], session_key="k1")
    staff = staff_client(client, "view_conversation", "change_conversation", "delete_conversation")
    form = {"action": "customer_data_delete_action", "_selected_action": [str(conversation.id)]}
    page = staff.get("/admin/chatbot/conversation/").content.decode()
    assert "customer_data_delete_action" not in page
    staff.post("/admin/chatbot/conversation/", form)
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    from django.contrib.auth.models import Permission

    user = User.objects.get(username="staff")
    user.user_permissions.add(Permission.objects.get(codename="delete_customer_data"))
    assert staff.post("/admin/chatbot/conversation/", form).status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_conversation_admin_never_shows_the_session_key(admin_client, make_conversation):
    conversation, _ = make_conversation([("customer", "hi")], session_key="live-cookie-k3y")
    for url in (
        "/admin/chatbot/conversation/",
        f"/admin/chatbot/conversation/{conversation.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert "live-cookie-k3y" not in response.content.decode()


def test_message_text_cannot_be_changed_in_admin(admin_client, make_conversation):
    _, (_, bot) = make_conversation([("customer", "q"), ("bot", "the original")])
    url = f"/admin/chatbot/message/{bot.pk}/change/"
    assert admin_client.get(url).status_code == 200  # shown
    admin_client.post(
        url, {"text": "rewritten", "role": "bot", "reply_kind": "model", "sources": "[]"}
    )
    bot.refresh_from_db()
    assert bot.text == "the original"


def test_model_version_status_artifact_and_metrics_cannot_be_changed_in_admin(admin_client):
    from training.models import ModelVersion
    from training.registry import base_version_ensure

    base = base_version_ensure()
    candidate = ModelVersion.objects.create(
        number=2, status="candidate", artifact_path="/srv/v2", metrics={"gate": "rejected"}
    )
    url = f"/admin/training/modelversion/{candidate.pk}/change/"
    assert admin_client.get(url).status_code == 200
    admin_client.post(
        url,
        {
            "number": 2,
            "status": "retired",
            "artifact_path": "/tmp/evil",
            "metrics": "{}",
            "config": "{}",
        },
    )
    candidate.refresh_from_db()
    base.refresh_from_db()
    assert (candidate.status, candidate.artifact_path) == ("candidate", "/srv/v2")
    assert candidate.metrics == {"gate": "rejected"} and base.status == "active"
    assert admin_client.get("/admin/training/modelversion/add/").status_code == 403
