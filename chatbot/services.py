"""Writes for the chat: each stores its data and pushes the matching live event."""

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.approved.services import answer_used
from chatbot.approved.store import AnswerMatch
from chatbot.grounding import grounding_find
from chatbot.live import AGENTS_GROUP, conversation_group, frame_publish, frame_publish_on_commit
from chatbot.models import Conversation, Message
from chatbot.selectors import conversation_history, message_frame_data
from chatbot.serving import gateway
from chatbot.serving.loading import ModelLoadError
from chatbot.serving.versions import active_serving_target

log = logging.getLogger(__name__)


class ChatInputError(Exception):
    """A customer message that cannot be accepted; `code` goes into the error frame."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def message_text_clean(text) -> str:
    """Validate a customer's text; raise ChatInputError with a clear reason if unusable."""
    if not isinstance(text, str):
        raise ChatInputError("invalid_text", "The message text must be a string.")
    text = text.replace("\x00", "").strip()
    if not text:
        raise ChatInputError("empty_message", "The message is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ChatInputError(
            "message_too_long", f"The message is {len(text)} characters; the limit is {limit}."
        )
    return text


def conversation_start(*, session_key: str) -> Conversation:
    conversation = Conversation.objects.create(session_key=session_key)
    frame_publish_on_commit(
        AGENTS_GROUP,
        {"type": "conversation", "conversation_id": str(conversation.id), "status": "bot"},
    )
    return conversation


def message_publish_on_commit(message: Message) -> None:
    frame = {"type": "message", **message_frame_data(message)}
    frame_publish_on_commit(conversation_group(message.conversation_id), frame)
    frame_publish_on_commit(AGENTS_GROUP, frame)


@transaction.atomic
def customer_message_log(*, conversation: Conversation, text: str) -> Message:
    """Store a customer's message (reopening a closed conversation) and announce it."""
    text = message_text_clean(text)
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if conversation.status == Conversation.Status.CLOSED:
        conversation.status = Conversation.Status.BOT
    conversation.save(update_fields=["status", "updated_at"])
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.CUSTOMER,
        text=text,
        created_at=timezone.now(),
    )
    message_publish_on_commit(message)
    return message


@dataclass
class BotReply:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    started_at: datetime
    text: str = ""
    token_count: int = 0
    truncated: bool = False
    ttft_ms: int | None = None
    generation_ms: int | None = None
    sources: list[dict] = field(default_factory=list)
    kind: str = "model"  # or "approved": an approved answer given word for word


@transaction.atomic
def bot_message_store(*, reply: BotReply, version_id: int | None) -> Message:
    """Store a finished bot reply in one write, with the version that produced it."""
    message = Message.objects.create(
        id=reply.message_id,
        conversation_id=reply.conversation_id,
        role=Message.Role.BOT,
        text=reply.text,
        created_at=reply.started_at,
        model_version_id=version_id,
        token_count=reply.token_count,
        time_to_first_token_ms=reply.ttft_ms,
        generation_ms=reply.generation_ms,
        truncated=reply.truncated,
        sources=reply.sources,
        reply_kind=reply.kind,
    )
    Conversation.objects.filter(pk=reply.conversation_id).update(updated_at=timezone.now())
    data = message_frame_data(message)
    frame_publish_on_commit(
        conversation_group(reply.conversation_id), {"type": "bot_message", **data}
    )
    frame_publish_on_commit(AGENTS_GROUP, {"type": "message", **data})
    return message


def bot_should_answer(*, conversation_id) -> bool:
    return Conversation.objects.filter(pk=conversation_id, status=Conversation.Status.BOT).exists()


EMPTY_REPLY_FALLBACK = (
    "I'm sorry, I don't have a good answer to that. Would you like me to connect you "
    "with a human agent?"
)

# Conversations with a reply being generated in this process, and the tasks doing it.
_replying: set[uuid.UUID] = set()
_reply_tasks: set[asyncio.Task] = set()


def reply_in_progress(conversation_id) -> bool:
    return conversation_id in _replying


def bot_reply_start(*, conversation_id: uuid.UUID) -> asyncio.Task:
    """Start generating the bot's reply as a task of its own.

    The task is not tied to any socket: a customer who disconnects mid-stream still gets
    the whole reply stored.
    """
    _replying.add(conversation_id)
    task = asyncio.get_running_loop().create_task(
        bot_reply_generate(conversation_id=conversation_id)
    )
    _reply_tasks.add(task)

    def forget(done: asyncio.Task) -> None:
        _reply_tasks.discard(done)
        _replying.discard(conversation_id)

    task.add_done_callback(forget)
    return task


async def bot_reply_generate(*, conversation_id: uuid.UUID) -> Message | None:
    """Stream a reply to the conversation's group token by token, then store it whole."""
    group = conversation_group(conversation_id)
    history = await database_sync_to_async(conversation_history)(conversation_id=conversation_id)
    reply = BotReply(
        message_id=uuid.uuid4(), conversation_id=conversation_id, started_at=timezone.now()
    )
    start = time.perf_counter()
    question = next((text for role, text in reversed(history) if role == "customer"), None)
    # Its own pool thread and database connection: neither the event loop nor the shared
    # ORM thread waits on the embedding.
    grounding = await database_sync_to_async(grounding_find, thread_sensitive=False)(question)
    reply.sources = grounding.sources()
    if grounding.verbatim:
        return await approved_reply_send(reply, grounding.approved, start=start)
    messages = grounding.messages(history)
    try:
        target = await database_sync_to_async(active_serving_target)()
        async for event in gateway.reply_stream(messages, target):
            if event.kind == "token":
                if reply.ttft_ms is None:
                    reply.ttft_ms = round((time.perf_counter() - start) * 1000)
                reply.text += event.text
                frame = {"type": "token", "message_id": str(reply.message_id), "text": event.text}
                await frame_publish(group, frame)
            elif event.kind == "done":
                reply.token_count = event.token_count
                reply.truncated = event.truncated
            else:
                raise RuntimeError(event.text)
    except (ModelLoadError, RuntimeError) as exc:
        log.error("Reply generation failed for %s: %s", conversation_id, exc)
        await frame_publish(
            group,
            {
                "type": "error",
                "code": "generation_failed",
                "detail": "The assistant could not answer just now. Please try again, "
                "or ask for a human agent.",
            },
        )
        return None
    if not reply.text.strip():
        # The model said nothing visible; say something useful rather than store a blank
        # reply (appended, so the streamed tokens still add up to the stored text).
        piece = EMPTY_REPLY_FALLBACK if not reply.text else " " + EMPTY_REPLY_FALLBACK
        reply.text += piece
        frame = {"type": "token", "message_id": str(reply.message_id), "text": piece}
        await frame_publish(group, frame)
    reply.generation_ms = round((time.perf_counter() - start) * 1000)
    return await database_sync_to_async(bot_message_store)(
        reply=reply, version_id=target.version_id
    )


# Word-sized pieces, leading whitespace attached, so the pieces join back to the text.
_PIECE = re.compile(r"\s*\S+")


async def approved_reply_send(reply: BotReply, match: AnswerMatch, *, start: float) -> Message:
    """Answer with the approved text itself, streamed word by word like a generated reply,
    stored as reply_kind "approved" (no model version wrote it)."""
    group = conversation_group(reply.conversation_id)
    for piece in _PIECE.findall(match.answer):
        if reply.ttft_ms is None:
            reply.ttft_ms = round((time.perf_counter() - start) * 1000)
        reply.text += piece
        await frame_publish(
            group, {"type": "token", "message_id": str(reply.message_id), "text": piece}
        )
    reply.kind = "approved"
    reply.generation_ms = round((time.perf_counter() - start) * 1000)
    await database_sync_to_async(answer_used)(answer_id=match.answer_id)
    return await database_sync_to_async(bot_message_store)(reply=reply, version_id=None)
