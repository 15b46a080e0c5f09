"""WebSocket routes for every app."""

from django.urls import path

from feedback.consumers import AgentConsumer, CustomerChatConsumer

websocket_urlpatterns = [
    # The chat socket (chatbot.consumers.ChatConsumer) with the customer's ratings (feedback).
    path("ws/chat/", CustomerChatConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
]
