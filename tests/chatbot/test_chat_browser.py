"""A person typing into the chat page in headless Chromium."""

import pytest

from chatbot.models import Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_customer_types_a_question_and_sees_the_streamed_answer(app_server, browser):
    url = app_server(SERVING_MAX_NEW_TOKENS=24)
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#chat-status:has-text('Online')")
    page.fill("#message-input", "Where is my <b>parcel</b>?")
    page.press("#message-input", "Enter")

    customer = page.locator(".message-customer .text").last
    customer.wait_for()
    assert customer.inner_text() == "Where is my <b>parcel</b>?"  # shown as text, not HTML
    bot = page.locator(".message-bot:not(.streaming)").last
    bot.wait_for(timeout=30000)

    stored = Message.objects.get(role="bot")
    assert bot.get_attribute("data-message-id") == str(stored.id)
    assert stored.token_count == 24

    # Reload: the history is rendered by the server and the chat carries on.
    page.reload()
    page.wait_for_selector("#chat-status:has-text('Online')")
    assert page.locator(".message").count() == 2
    assert page.locator(".message-customer .text").first.inner_text() == customer.inner_text()


def test_a_refused_message_goes_back_into_the_box(app_server, browser):
    """Nothing typed is lost: a message the server refuses (here the socket's rate limit of
    one message) is put back for the customer to send again, with the reason shown."""
    url = app_server(SERVING_MAX_NEW_TOKENS=8, CHAT_RATE_LIMIT_MESSAGES=1)
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#chat-status:has-text('Online')")
    page.fill("#message-input", "Where is my parcel?")
    page.press("#message-input", "Enter")
    page.locator(".message-bot:not(.streaming)").last.wait_for(timeout=30000)
    assert page.input_value("#message-input") == ""  # stored: the box is empty again

    page.fill("#message-input", "And can I change the address?")
    page.press("#message-input", "Enter")
    page.wait_for_selector(".chat-error:has-text('Too many messages')")
    assert page.input_value("#message-input") == "And can I change the address?"
    assert page.locator(".message-customer").count() == 1
    assert Message.objects.filter(role="customer").count() == 1
