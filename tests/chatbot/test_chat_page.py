import pytest
from django.utils import timezone

from chatbot.models import Conversation, Message

pytestmark = pytest.mark.django_db


def test_page_sets_a_session_and_renders_history_escaped(client):
    response = client.get("/")
    assert response.status_code == 200
    session_key = client.session.session_key
    assert session_key
    conversation = Conversation.objects.create(session_key=session_key)
    Message.objects.create(
        conversation=conversation,
        role="customer",
        text="<script>alert('x')</script> where is my parcel?",
        created_at=timezone.now(),
    )
    page = client.get("/").content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; where is my parcel?" in page
    assert "<script>alert(" not in page
    assert f'data-conversation-id="{conversation.id}"' in page


def test_page_never_shows_another_sessions_conversation(client):
    other = Conversation.objects.create(session_key="someone-else")
    Message.objects.create(
        conversation=other, role="customer", text="private words", created_at=timezone.now()
    )
    page = client.get("/").content.decode()
    assert "private words" not in page
