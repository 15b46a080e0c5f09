"""The widget on a shop's own site: a page on another origin (127.0.0.2, its own port) embeds
static/widget.js from the bot (127.0.0.1) in headless Chromium."""

import http.server
import threading
from functools import partial

import pytest
from django.contrib.sessions.models import Session

from chatbot.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOP_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>A shop</title>
<style>button { background: red !important; } .panel { display: none; }</style></head>
<body><h1>Welcome to the shop</h1>
<script src="{bot}/static/widget.js" data-title="Ask Northwind" async></script>
</body></html>"""


@pytest.fixture
def shop_site(tmp_path):
    """start() -> (URL, folder) of a site served from 127.0.0.2 on a free port."""
    servers = []

    def start():
        root = tmp_path / f"shop{len(servers)}"
        root.mkdir()
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.2:{server.server_address[1]}", root

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _open_chat(page):
    page.locator("#shopbot-widget .launcher").click()
    page.locator("#shopbot-widget .chat-status", has_text="Online").wait_for(timeout=15000)


def _ask(page, text: str):
    """Send a question; the bot's reply once it has finished streaming."""
    replies = page.locator("#shopbot-widget .message-bot")
    before = replies.count()
    page.locator("#shopbot-widget .composer textarea").fill(text)
    page.locator("#shopbot-widget .composer textarea").press("Enter")
    page.locator("#shopbot-widget .message-customer .text", has_text=text).wait_for()
    reply = page.locator("#shopbot-widget .message-bot:not(.streaming)").nth(before)
    reply.wait_for(timeout=30000)
    return reply


def test_a_shop_embeds_the_chat_with_one_script_tag(app_server, browser, shop_site):
    shop, shop_root = shop_site()
    foreign, foreign_root = shop_site()
    bot = app_server(DJANGO_ALLOWED_HOSTS="127.0.0.1", WIDGET_ALLOWED_ORIGINS=shop)
    for root in (shop_root, foreign_root):
        (root / "index.html").write_text(SHOP_PAGE.replace("{bot}", bot))

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    page.goto(shop + "/")
    launcher = page.locator("#shopbot-widget .launcher")
    assert launcher.get_attribute("aria-label") == "Ask Northwind"
    assert launcher.locator(".launcher-label").inner_text() == "Ask Northwind"
    assert page.locator("#shopbot-widget .panel").is_hidden()
    _open_chat(page)

    reply = _ask(page, "Where is my <b>parcel</b>?")
    customer = page.locator("#shopbot-widget .message-customer .text").last
    assert customer.inner_text() == "Where is my <b>parcel</b>?"  # text, never HTML
    stored = Message.objects.get(role="bot")
    assert reply.get_attribute("data-message-id") == str(stored.id)
    tokens = [f for f in frames if '"type": "token"' in f]
    assert len(tokens) >= 2  # streamed piece by piece over the socket
    # The shop's own CSS does not reach into the widget.
    send_bg = page.locator("#shopbot-widget .composer button").evaluate(
        "el => getComputedStyle(el).backgroundColor"
    )
    assert send_bg != "rgb(255, 0, 0)"

    # Another page load on the shop's site: the chat reopens with the same conversation.
    page.reload()
    page.locator("#shopbot-widget .chat-status", has_text="Online").wait_for(timeout=15000)
    page.locator("#shopbot-widget .message-bot").wait_for()
    assert page.locator("#shopbot-widget .message").count() == 2
    _ask(page, "And when will it arrive?")
    assert Conversation.objects.count() == 1
    assert Message.objects.filter(role="bot").count() == 2
    context.close()

    # A phone: the open chat fills the screen and works.
    phone = browser.new_context(
        viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True
    )
    page = phone.new_page()
    page.goto(shop + "/")
    _open_chat(page)
    box = page.locator("#shopbot-widget .panel").bounding_box()
    assert box == {"x": 0, "y": 0, "width": 375, "height": 667}
    assert page.locator("#shopbot-widget .launcher").is_hidden()
    _ask(page, "Can I return shoes?")
    input_box = page.locator("#shopbot-widget .composer textarea").bounding_box()
    assert input_box["y"] + input_box["height"] <= 667
    assert Conversation.objects.count() == 2  # a new customer: a new session and conversation
    phone.close()

    # A site that is not in WIDGET_ALLOWED_ORIGINS: the socket is refused, nothing is stored.
    sessions = Session.objects.count()
    other = browser.new_context()
    page = other.new_page()
    page.goto(foreign + "/")
    page.locator("#shopbot-widget .launcher").click()
    error = page.locator("#shopbot-widget .chat-error")
    error.wait_for(timeout=15000)
    assert "not available" in error.inner_text()
    assert "Online" not in page.locator("#shopbot-widget .chat-status").inner_text()
    assert Session.objects.count() == sessions
    other.close()
