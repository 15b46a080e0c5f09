"""The agent console socket at /ws/agent/, and the customer's ratings on the chat socket
at /ws/chat/ (protocol in README.md).

Only support agents get into the console; everyone else's handshake is refused. Every agent
hears the agents group (new conversations, messages, status changes, review activity) and,
while watching one conversation, that conversation's group (the bot's tokens as they stream).
"""

import time
from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase

from chatbot import selectors as chat_selectors
from chatbot.consumers import ChatConsumer
from chatbot.live import AGENTS_GROUP, conversation_group
from chatbot.models import Conversation
from chatbot.sockets import JsonFrameConsumer
from feedback import selectors, services
from feedback.agents import agent_display_name, is_agent


def _snapshot(conversation_id) -> dict | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    messages = chat_selectors.conversation_messages(conversation=conversation)
    return {
        "type": "snapshot",
        "conversation_id": str(conversation.id),
        "status": conversation.status,
        "messages": [chat_selectors.message_frame_data(m) for m in messages],
    }


def _agent_reloaded(user_id, session: SessionBase | None):
    """The agent as the database has them now, or None when they may no longer use the
    console (deactivated, permission or staff status withdrawn, logged out)."""
    if session is None or not session.session_key or not session.exists(session.session_key):
        return None
    user = get_user_model().objects.filter(pk=user_id).first()
    return user if is_agent(user) else None


def _hello(user) -> dict:
    return {
        "type": "hello",
        "agent_name": agent_display_name(user),
        "waiting": selectors.waiting_count(),
    }


class AgentConsumer(JsonFrameConsumer):
    """Thin: check the agent, parse a frame, call one service, relay group frames."""

    watching: UUID | None = None
    refused = False
    actions = {
        "take_over": services.conversation_take_over,
        "hand_back": services.conversation_hand_back,
        "close": services.conversation_close,
        "agent_message": services.agent_message_send,
    }

    async def connect(self):
        self.user = self.scope.get("user")
        if not await database_sync_to_async(is_agent)(self.user):
            await self.close(code=4403)
            return
        self.checked_at = time.monotonic()
        await self.channel_layer.group_add(AGENTS_GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(_hello)(self.user))

    async def still_allowed(self, *, every: float = 0.0) -> bool:
        """Check the agent again (at most once per `every` seconds); a refused one is told
        and the socket closed."""
        if self.refused:
            return False
        if time.monotonic() - self.checked_at < every:
            return True
        user = await database_sync_to_async(_agent_reloaded)(
            self.user.pk, self.scope.get("session")
        )
        self.checked_at = time.monotonic()
        if user is None:
            self.refused = True
            await self.error("forbidden", "You no longer have access to the agent console.")
            await self.close(code=4403)
            return False
        self.user = user
        return True

    async def receive(self, text_data=None, bytes_data=None):
        if await self.still_allowed():
            await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def disconnect(self, code):
        await self.channel_layer.group_discard(AGENTS_GROUP, self.channel_name)
        if self.watching:
            await self.channel_layer.group_discard(
                conversation_group(self.watching), self.channel_name
            )

    async def frame_received(self, frame: dict, kind: str) -> None:
        conversation_id = _uuid(frame.get("conversation_id"))
        if kind not in self.actions and kind != "watch":
            await self.unknown_type(kind)
        elif conversation_id is None:
            await self.error("not_found", "No such conversation.", action=kind)
        elif kind == "watch":
            await self.watch(conversation_id)
        else:
            await self.act(kind, conversation_id, frame)

    async def watch(self, conversation_id: UUID) -> None:
        snapshot = await database_sync_to_async(_snapshot)(conversation_id)
        if snapshot is None:
            await self.error("not_found", "No such conversation.", action="watch")
            return
        if self.watching and self.watching != conversation_id:
            await self.channel_layer.group_discard(
                conversation_group(self.watching), self.channel_name
            )
        self.watching = conversation_id
        await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
        await self.send_json(snapshot)

    async def act(self, kind: str, conversation_id: UUID, frame: dict) -> None:
        extra = {"text": frame.get("text")} if kind == "agent_message" else {}
        try:
            await database_sync_to_async(self.actions[kind])(
                conversation_id=conversation_id, agent=self.user, **extra
            )
        except services.ConsoleActionError as exc:
            await self.error(exc.code, exc.detail, action=kind)
            return
        await self.send_json(
            {"type": "done", "action": kind, "conversation_id": str(conversation_id)}
        )

    async def frame_send(self, event):
        # Relayed frames (tokens too) re-check the agent at most every few seconds.
        if not await self.still_allowed(every=settings.AGENT_RECHECK_SECONDS):
            return
        await super().frame_send(event)
        if event["frame"]["type"] == "status":
            count = await database_sync_to_async(selectors.waiting_count)()
            await self.send_json({"type": "waiting", "count": count})


def _uuid(value) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


class CustomerChatConsumer(ChatConsumer):
    """The customer's chat socket (chatbot.consumers.ChatConsumer) with the customer's own
    feedback: rating the conversation and thumbs on a bot reply."""

    async def frame_received(self, frame: dict, kind: str) -> None:
        if kind == "rate_conversation":
            await self.feedback_call(
                services.customer_conversation_rate,
                {"target": "conversation", "score": frame.get("score")},
                score=frame.get("score"),
            )
        elif kind == "rate_message":
            await self.feedback_call(
                services.customer_message_rate,
                {
                    "target": "message",
                    "message_id": frame.get("message_id"),
                    "value": frame.get("value"),
                },
                message_id=frame.get("message_id"),
                value=frame.get("value"),
            )
        else:
            await super().frame_received(frame, kind)

    async def feedback_call(self, service, saved: dict, **kwargs) -> None:
        if self.conversation is None:
            await self.error("no_conversation", "There is no conversation to rate yet.")
            return
        try:
            await database_sync_to_async(service)(conversation_id=self.conversation.id, **kwargs)
        except services.ConsoleActionError as exc:
            await self.error(exc.code, exc.detail)
            return
        await self.send_json({"type": "rating_saved", **saved})
