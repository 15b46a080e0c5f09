"""The embeddable widget's server side: which origins may open which socket, and the session
token that keeps a widget's conversation (no cookies on a shop's site)."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured

from chatbot import services
from chatbot.asgi import application
from chatbot.models import Conversation
from chatbot.widget import widget_token_make
from chatbot.widget_origins import widget_origins_parse
from tests.helpers import frames_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_model")]

SHOP = "https://shop.example"


@pytest.fixture(autouse=True)
def _shop_allowed(settings):
    settings.WIDGET_ALLOWED_ORIGINS = [SHOP, "http://127.0.0.2:8001"]


@pytest.fixture
async def socket_at():
    opened = []

    async def open_socket(path: str, origin: str, cookie: str | None = None):
        headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
        if cookie:
            headers.append((b"cookie", f"sessionid={cookie}".encode()))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect()
        opened.append(communicator)
        return connected, communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


async def test_a_shop_gets_a_session_token_and_keeps_its_conversation(socket_at):
    connected, ws = await socket_at("/ws/chat/", SHOP)
    assert connected
    session_frame = await ws.receive_json_from(timeout=10)
    assert session_frame["type"] == "session" and session_frame["token"]
    history = await ws.receive_json_from(timeout=10)
    assert history["type"] == "history" and history["conversation_id"] is None

    await ws.send_json_to({"type": "customer_message", "text": "Where is my order?"})
    frames = await frames_until(ws, "bot_message")
    conversation_id = frames[0]["conversation_id"]
    assert any(f["type"] == "token" for f in frames)
    await ws.disconnect()

    session_key = await database_sync_to_async(
        lambda: Conversation.objects.get(pk=conversation_id).session_key
    )()
    stored = await database_sync_to_async(Session.objects.get)(pk=session_key)
    assert stored.get_decoded() == {"customer": True, "widget_origin": SHOP}

    # The next page load: the token brings back the conversation, no new session.
    connected, again = await socket_at(f"/ws/chat/?token={session_frame['token']}", SHOP)
    assert connected
    history = await again.receive_json_from(timeout=10)
    assert history["type"] == "history"
    assert history["conversation_id"] == conversation_id
    assert [m["role"] for m in history["messages"]] == ["customer", "bot"]
    assert await database_sync_to_async(Session.objects.count)() == 1


async def test_a_forged_token_starts_a_new_session_and_reaches_nothing(socket_at, customer_session):
    conversation = await database_sync_to_async(services.conversation_start)(
        session_key=customer_session
    )
    forged = widget_token_make(customer_session)[:-2] + "xx"
    for token in (forged, customer_session, "garbage"):
        connected, ws = await socket_at(f"/ws/chat/?token={token}", SHOP)
        assert connected
        assert (await ws.receive_json_from(timeout=10))["type"] == "session"
        history = await ws.receive_json_from(timeout=10)
        assert history["conversation_id"] is None
    # Even the right session's id in ?conversation= is refused to another session.
    connected, ws = await socket_at(f"/ws/chat/?conversation={conversation.id}", SHOP)
    assert (await ws.receive_json_from(timeout=10))["type"] == "session"
    assert (await ws.receive_json_from(timeout=10))["code"] == "conversation_not_found"


async def test_a_widget_socket_ignores_the_bots_cookie(socket_at, customer_session):
    """Cookies of the bot's origin are not the widget's: only its token counts."""
    await database_sync_to_async(services.conversation_start)(session_key=customer_session)
    connected, ws = await socket_at("/ws/chat/", SHOP, cookie=customer_session)
    assert connected
    assert (await ws.receive_json_from(timeout=10))["type"] == "session"
    assert (await ws.receive_json_from(timeout=10))["conversation_id"] is None


async def test_a_shop_on_a_host_the_bot_also_answers_to_is_still_a_widget(settings, socket_at):
    """E.g. a local try-out: the bot on localhost:8000, the shop page on localhost:8080."""
    settings.WIDGET_ALLOWED_ORIGINS = ["http://testserver:8080"]
    connected, ws = await socket_at("/ws/chat/", "http://testserver:8080")
    assert connected
    assert (await ws.receive_json_from(timeout=10))["type"] == "session"


async def test_the_bots_own_page_still_uses_its_cookie(socket_at, customer_session):
    conversation = await database_sync_to_async(services.conversation_start)(
        session_key=customer_session
    )
    connected, ws = await socket_at("/ws/chat/", "http://testserver", cookie=customer_session)
    assert connected
    history = await ws.receive_json_from(timeout=10)
    assert history["type"] == "history" and history["conversation_id"] == str(conversation.id)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://shop.example",  # other scheme
        "https://shop.example:8443",  # other port
        "https://sub.shop.example",
        "http://127.0.0.2:8002",
        "null",
    ],
)
async def test_other_origins_are_refused(socket_at, origin):
    connected, _ = await socket_at("/ws/chat/", origin)
    assert not connected
    assert await database_sync_to_async(Session.objects.count)() == 0


async def test_a_shop_origin_cannot_open_the_agent_socket(socket_at):
    """Even with an agent's cookie (a shop on the same site as the bot gets it sent)."""
    from feedback.agents import agent_create
    from tests.helpers import login_cookie

    agent = await database_sync_to_async(agent_create)(username="alice", password="s3cret-Pass-9")
    cookie = await database_sync_to_async(login_cookie)(agent)
    connected, _ = await socket_at("/ws/agent/", SHOP, cookie=cookie)
    assert not connected
    connected, ws = await socket_at("/ws/agent/", "http://testserver", cookie=cookie)
    assert connected
    assert (await ws.receive_json_from(timeout=10))["type"] == "hello"


def test_allowed_origins_are_checked_when_settings_load():
    assert widget_origins_parse([" HTTPS://Shop.Example/ ", "http://127.0.0.1:8080"]) == [
        "https://shop.example",
        "http://127.0.0.1:8080",
    ]
    for bad in [
        "shop.example",
        "https://*.shop.example",
        "https://.shop.example",
        "https://shop.example/chat",
        "ftp://shop.example",
        "https://shop.example:99999",
    ]:
        with pytest.raises(ImproperlyConfigured, match="WIDGET_ALLOWED_ORIGINS"):
            widget_origins_parse([bad])


def test_no_page_of_the_bot_can_be_framed(client):
    """The widget is a script, not an iframe: the bot's pages refuse every frame."""
    assert client.get("/").headers["X-Frame-Options"] == "DENY"


def test_shop_origins_cannot_post_forms_to_the_bot():
    """The widget posts nothing (its socket carries everything), so the shops are not CSRF
    trusted origins: a form post from a shop's page is refused even with a valid token."""
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.get("/")
    token = client.cookies["csrftoken"].value
    form = {"username": "x", "password": "y", "csrfmiddlewaretoken": token}
    assert client.post("/agent/login/", form, headers={"origin": SHOP}).status_code == 403
    own = client.post("/agent/login/", form, headers={"origin": "http://testserver"})
    assert own.status_code != 403
