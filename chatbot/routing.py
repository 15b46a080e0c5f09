"""WebSocket routes for every app."""

from django.urls import path

from chatbot.consumers import ChatConsumer
from feedback.consumers import AgentConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
]
