"""Helpers the tests share (plain functions; the fixtures are in the conftest.py files)."""

import socket
from pathlib import Path

# Every agent the tests create has this password.
PASSWORD = "s3cret-Agent-pass"
DEMO_KB = Path(__file__).resolve().parents[1] / "chatbot" / "demo" / "knowledge"


def conversation_make(turns: list[tuple[str, str]], *, session_key="customer-1", status="bot"):
    """A conversation from (role, text) turns a second apart: (conversation, [messages])."""
    from django.utils import timezone

    from chatbot.models import Conversation, Message

    conversation = Conversation.objects.create(session_key=session_key, status=status)
    start = timezone.now()
    messages = [
        Message.objects.create(
            conversation=conversation,
            role=role,
            text=text,
            created_at=start + timezone.timedelta(seconds=i),
        )
        for i, (role, text) in enumerate(turns)
    ]
    return conversation, messages


def ws_headers(session_key: str | None = None, *, sessionid_cookie: str = "sessionid") -> list:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if session_key:
        headers.append((b"cookie", f"{sessionid_cookie}={session_key}".encode()))
    return headers


async def frames_until(communicator, frame_type: str, *, timeout: float = 30) -> list[dict]:
    """Collect frames up to and including the first of `frame_type`."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login_cookie(user) -> str:
    """A session id for `user`, as the browser would carry after logging in."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def kb_load_demo() -> None:
    """Import, embed and index the demo knowledge base (chatbot/demo/knowledge)."""
    from chatbot.knowledge import services, store

    for article, _ in services.kb_import_dir(folder=DEMO_KB):
        store.article_passages_refresh(article_id=article.pk)
    store.index_sync()
