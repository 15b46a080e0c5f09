"""Sources on the chat page: rendered by the server (escaped) and live in the browser."""

import pytest
from django.utils import timezone

from chatbot.models import Conversation, Message
from tests.helpers import kb_load_demo


@pytest.mark.django_db
def test_history_shows_sources_escaped(client):
    client.get("/")
    conversation = Conversation.objects.create(session_key=client.session.session_key)
    Message.objects.create(
        conversation=conversation,
        role="bot",
        text="Refunds take 5-7 business days.",
        created_at=timezone.now(),
        sources=[{"article_id": 1, "title": "<i>Refunds</i>", "kind": "article", "score": 0.7}],
    )
    page = client.get("/").content.decode()
    assert 'Sources: <span class="source">&lt;i&gt;Refunds&lt;/i&gt;</span>' in page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_customer_sees_the_sources_of_a_reply(app_server, browser):
    kb_load_demo()
    url = app_server()
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#chat-status:has-text('Online')")
    page.fill("#message-input", "Can I pay with Apple Pay?")
    page.press("#message-input", "Enter")
    sources = page.locator(".message-bot:not(.streaming) .sources").last
    sources.wait_for(timeout=60000)
    assert sources.inner_text().startswith("Sources: Payment methods and billing")
    stored = Message.objects.get(role="bot")
    assert stored.sources[0]["title"] == "Payment methods and billing"
