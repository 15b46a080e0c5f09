"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from django.core.asgi import get_asgi_application

from chatbot.settings_select import settings_module_select

settings_module_select()
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chatbot.routing import websocket_urlpatterns  # noqa: E402
from chatbot.widget import SocketOriginValidator, WidgetSessionMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same-host origins for every socket; the shops' origins (WIDGET_ALLOWED_ORIGINS) for the
        # customer chat socket only, bound to a session by the widget's token (chatbot.widget).
        "websocket": SocketOriginValidator(
            AuthMiddlewareStack(WidgetSessionMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)

from chatbot.serving.cluster import remote_serving  # noqa: E402

if remote_serving() and settings.WEB_TORCH_THREADS:
    # Here torch only embeds questions; the cores belong to the model server (settings).
    import torch  # noqa: E402

    torch.set_num_threads(settings.WEB_TORCH_THREADS)

if settings.SERVING_WARMUP:
    # Chat model, then embedding model and knowledge index, before the first customer.
    from chatbot.serving.warmup import warmup_in_background  # noqa: E402

    warmup_in_background()
