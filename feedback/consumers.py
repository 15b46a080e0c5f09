"""The agent console socket at /ws/agent/ (protocol in README.md).

Only support agents get in; everyone else's handshake is refused. Every agent hears the
agents group (new conversations, messages, status changes, review activity) and, while
watching one conversation, that conversation's group (the bot's tokens as they stream).
"""

from uuid import UUID

from channels.db import database_sync_to_async

from chatbot import selectors as chat_selectors
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


def _hello(user) -> dict:
    return {
        "type": "hello",
        "agent_name": agent_display_name(user),
        "waiting": selectors.waiting_count(),
    }


class AgentConsumer(JsonFrameConsumer):
    """Thin: check the agent, parse a frame, call one service, relay group frames."""

    watching: UUID | None = None
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
        await self.channel_layer.group_add(AGENTS_GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(_hello)(self.user))

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
        await super().frame_send(event)
        if event["frame"]["type"] == "status":
            count = await database_sync_to_async(selectors.waiting_count)()
            await self.send_json({"type": "waiting", "count": count})


def _uuid(value) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None
