"""The embeddable chat widget's server side (README "Chat widget").

`static/widget.js` runs in the shop's own page (another origin) and opens /ws/chat/ from there.
Cookies of the bot's origin are third-party on the shop's site (browsers block or withhold
them), so a widget socket is bound to a customer session by a signed token instead: the
server creates the session on the first widget connection, hands the token over in a
`session` frame, and the widget keeps it in the shop origin's localStorage and sends it back
as `?token=` on every later connection. Origins: the bot's own hosts (ALLOWED_HOSTS) may open
every socket; the shops in WIDGET_ALLOWED_ORIGINS only the customer chat socket.
"""

from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing

WIDGET_SOCKET_PATH = "/ws/chat/"
_TOKEN_SALT = "chatbot.widget.session"


def _origin(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return value.decode("latin1")
    return None


def _hosts_validator(inner) -> OriginValidator:
    return AllowedHostsOriginValidator(inner)


def origin_is_widget(scope) -> bool:
    """The customer chat socket, opened from a shop's page: exactly one of the allowed widget
    origins (scheme, host and port), even on a host the bot also answers to."""
    origin = _origin(scope)
    if origin is None or scope.get("path") != WIDGET_SOCKET_PATH:
        return False
    widget = OriginValidator(None, settings.WIDGET_ALLOWED_ORIGINS)
    return widget.valid_origin(urlparse(origin))


class SocketOriginValidator:
    """Refuse a socket whose Origin is neither the bot's own host nor, for the customer chat
    socket only, one of WIDGET_ALLOWED_ORIGINS (the agent socket stays same-host only)."""

    def __init__(self, application):
        self.hosts = _hosts_validator(application)
        self.application = application

    async def __call__(self, scope, receive, send):
        if origin_is_widget(scope):
            return await self.application(scope, receive, send)
        return await self.hosts(scope, receive, send)


def widget_token_make(session_key: str) -> str:
    return signing.dumps(session_key, salt=_TOKEN_SALT, compress=False)


def widget_session_resolve(*, token: str | None, origin: str) -> tuple[SessionStore, str | None]:
    """The customer session a widget token names, or a new one (with its new token).

    A missing, forged or expired token (the session was deleted or timed out) starts a new
    session: the widget then forgets the old conversation, which no longer exists for it.
    """
    if token:
        try:
            session_key = signing.loads(token, salt=_TOKEN_SALT)
        except signing.BadSignature:
            session_key = None
        if isinstance(session_key, str) and SessionStore().exists(session_key):
            return SessionStore(session_key=session_key), None
    session = SessionStore()
    session["customer"] = True
    session["widget_origin"] = origin
    session.create()
    assert session.session_key is not None  # create() sets it
    return session, widget_token_make(session.session_key)


class WidgetSessionMiddleware:
    """For a widget socket, replace the (cookie) session with the one its token names, and
    put a newly made token in scope["widget_token"] for the consumer to hand over."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and origin_is_widget(scope):
            token = parse_qs(scope.get("query_string", b"").decode()).get("token", [None])[0]
            session, new_token = await database_sync_to_async(widget_session_resolve)(
                token=token, origin=_origin(scope) or ""
            )
            scope = {
                **scope,
                "session": session,
                "user": AnonymousUser(),
                "widget_token": new_token,
            }
        return await self.application(scope, receive, send)
