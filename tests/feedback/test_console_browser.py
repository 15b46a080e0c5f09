"""A customer and an agent in two browser contexts: the agent takes over live."""

import pytest

from chatbot.models import Conversation, Message
from feedback.models import ConversationReview, MessageRating
from tests.helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_agent_takes_over_and_the_customer_sees_the_reply_live(app_server, browser, make_agent):
    make_agent("alice", first_name="Alice")
    url = app_server()

    agent = browser.new_context().new_page()
    agent.goto(url + "/agent/")  # not logged in: sent to the login page
    agent.wait_for_url("**/agent/login/**")
    agent.fill("#id_username", "alice")
    agent.fill("#id_password", PASSWORD)
    agent.click("button[type=submit]")
    agent.wait_for_selector("#live-status:has-text('Live')")

    customer = browser.new_context().new_page()
    customer.goto(url + "/")
    customer.wait_for_selector("#chat-status:has-text('Online')")
    customer.fill("#message-input", "Where is my parcel?")
    customer.press("#message-input", "Enter")
    customer.locator(".message-bot:not(.streaming)").last.wait_for(timeout=30000)
    customer.click(".message-bot .thumbs button[data-value=down]")
    customer.locator(".message-bot .thumbs button.chosen").wait_for()
    customer.click("#rate-bar .star[data-score='4']")
    customer.wait_for_selector("#rate-label:has-text('Thanks')")
    assert MessageRating.objects.get().value == "bad"
    assert ConversationReview.objects.get().customer_rating == 4

    # The new conversation appears in the agent's list without a reload.
    conversation = Conversation.objects.get()
    row = agent.locator(f"tr[data-conversation-id='{conversation.id}']")
    row.wait_for()
    row.locator(".last a").click()
    agent.wait_for_selector("#live-status:has-text('Live')")
    agent.click("#take-over")
    agent.wait_for_selector("#reply-text:enabled")

    banner = customer.locator("#handoff-banner")
    banner.wait_for()
    assert "Alice" in banner.inner_text()
    assert customer.locator("#human-button").is_disabled()

    agent.fill("#reply-text", "Hi, I'm <b>Alice</b>. Let me check.")
    agent.press("#reply-text", "Enter")
    said = customer.locator(".message-agent .text").last
    said.wait_for()
    assert said.inner_text() == "Hi, I'm <b>Alice</b>. Let me check."  # text, not HTML

    # The customer's answer reaches the agent live, and the bot stays quiet.
    customer.fill("#message-input", "Thanks!")
    customer.press("#message-input", "Enter")
    agent.locator(".amsg-customer .text", has_text="Thanks!").wait_for()
    customer.wait_for_timeout(1000)
    assert Message.objects.filter(role="bot").count() == 1
    assert customer.locator(".message-bot").count() == 1
