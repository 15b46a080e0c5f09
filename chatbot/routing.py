"""WebSocket routes for every app."""

from django.urls import path

from chatbot.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
]
