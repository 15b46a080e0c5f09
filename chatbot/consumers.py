"""The customer chat socket at /ws/chat/ (protocol in README.md)."""

import logging
from datetime import timedelta
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from chatbot import handoff, selectors, services
from chatbot.live import conversation_group
from chatbot.ratelimit import SharedLimit, SlidingWindowLimit, shared_limits_hit
from chatbot.sockets import JsonFrameConsumer

log = logging.getLogger(__name__)


def _conversation_for(session_key, conversation_id):
    return selectors.conversation_for_session(
        session_key=session_key, conversation_id=conversation_id
    )


def _history_frame(conversation) -> dict:
    messages = selectors.conversation_messages(conversation=conversation) if conversation else []
    status = conversation.status if conversation else "bot"
    return {
        "type": "history",
        "conversation_id": str(conversation.id) if conversation else None,
        "status": status,
        "notice": handoff.status_notice(status),
        "messages": [selectors.message_frame_data(m) for m in messages],
    }


class ChatConsumer(JsonFrameConsumer):
    """Thin: parse a frame, call a service, relay live frames from the conversation group.

    The customer's ratings arrive on this socket too: feedback.consumers adds them
    (routing serves that subclass)."""

    conversation = None

    async def connect(self):
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        await self.accept()
        if self.scope.get("widget_token"):  # a new widget session: the widget keeps this token
            await self.send_json({"type": "session", "token": self.scope["widget_token"]})
        if not self.session_key:
            await self.error("no_session", "Open the chat page first so a session is set.")
            await self.close(code=4401)
            return
        wanted = parse_qs(self.scope.get("query_string", b"").decode()).get("conversation")
        conversation = await database_sync_to_async(_conversation_for)(
            self.session_key, wanted[0] if wanted else None
        )
        if wanted and conversation is None:
            await self.error("conversation_not_found", "No such conversation.")
            await self.close(code=4404)
            return
        self.limit = SlidingWindowLimit(
            limit=settings.CHAT_RATE_LIMIT_MESSAGES,
            window_seconds=settings.CHAT_RATE_LIMIT_SECONDS,
        )
        if conversation:
            # A reply lost with the process (perhaps on another host) that generated it.
            await database_sync_to_async(services.pending_replies_settle)(
                before=timezone.now() - timedelta(seconds=settings.CHAT_REPLY_LEASE_GRACE),
                conversation_id=conversation.id,
            )
            await self.join(conversation)
        await self.send_json(await database_sync_to_async(_history_frame)(conversation))

    async def disconnect(self, code):
        if self.conversation:
            await self.channel_layer.group_discard(
                conversation_group(self.conversation.id), self.channel_name
            )

    async def join(self, conversation) -> None:
        self.conversation = conversation
        await self.channel_layer.group_add(conversation_group(conversation.id), self.channel_name)

    async def frame_received(self, frame: dict, kind: str) -> None:
        if kind == "customer_message":
            await self.customer_message(frame.get("text"))
        elif kind == "request_human":
            await self.request_human()
        else:
            await self.unknown_type(kind)

    async def customer_message(self, text) -> None:
        try:
            services.message_text_clean(text)
        except services.ChatInputError as exc:
            await self.error(exc.code, exc.detail)
            return
        if not self.limit.allow():
            await self.rate_limited(self.limit.retry_after())
            return
        try:
            if self.conversation is None or await database_sync_to_async(
                services.bot_should_answer
            )(conversation_id=self.conversation.id):
                services.reply_admit(
                    conversation_id=self.conversation and self.conversation.id,
                    session_key=self.session_key,
                )
        except services.ChatInputError as exc:
            await self.error(exc.code, exc.detail, **exc.extra)
            return
        wait = await shared_limits_hit(self.shared_limits())
        if wait:
            await self.rate_limited(wait)
            return
        received = await database_sync_to_async(services.customer_message_receive)(
            session_key=self.session_key, conversation=self.conversation, text=text
        )
        conversation = received.conversation
        if received.started:
            await self.join(conversation)
            await self.send_json(
                {"type": "conversation", "conversation_id": str(conversation.id), "status": "bot"}
            )
            # The stored message was published before we joined the group: echo it here.
            await self.send_json(
                {
                    "type": "message",
                    **await database_sync_to_async(selectors.message_frame_data)(received.message),
                }
            )
            if received.status:  # the customer asked for a human in their first message
                await self.send_json(received.status)
        if received.answer:
            services.bot_reply_start(conversation_id=conversation.id, session_key=self.session_key)

    def shared_limits(self) -> list[SharedLimit]:
        """Limits every socket of this session, and of this client address, share."""
        limits = [
            SharedLimit(
                f"session:{self.session_key}",
                settings.CHAT_SESSION_RATE_LIMIT_MESSAGES,
                settings.CHAT_SESSION_RATE_LIMIT_SECONDS,
            )
        ]
        client = self.scope.get("client")
        if client:
            limits.append(
                SharedLimit(
                    f"ip:{client[0]}",
                    settings.CHAT_IP_RATE_LIMIT_MESSAGES,
                    settings.CHAT_IP_RATE_LIMIT_SECONDS,
                )
            )
        return limits

    async def rate_limited(self, wait: float) -> None:
        await self.error(
            "rate_limited",
            f"Too many messages; try again in {wait:.0f} s.",
            retry_after=round(wait, 1),
        )

    async def request_human(self) -> None:
        if self.conversation is None:
            conversation = await database_sync_to_async(services.conversation_start)(
                session_key=self.session_key
            )
            await self.join(conversation)
            await self.send_json(
                {"type": "conversation", "conversation_id": str(conversation.id), "status": "bot"}
            )
        # The status frame reaches this socket through the conversation group.
        await database_sync_to_async(handoff.human_request)(
            conversation_id=self.conversation.id,
            reason=handoff.Reason.CUSTOMER_ASKED,
            detail="pressed the button",
        )
