"""Writes for the chat: each stores its data and pushes the matching live event."""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.knowledge.selectors import hits_sources
from chatbot.live import AGENTS_GROUP, conversation_group, frame_publish, frame_publish_on_commit
from chatbot.models import Conversation, Message
from chatbot.prompting import chat_messages, system_prompt
from chatbot.selectors import conversation_history, message_frame_data
from chatbot.serving import gateway
from chatbot.serving.loading import ModelLoadError
from chatbot.serving.versions import ServingTarget, active_serving_target

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


@transaction.atomic
def bot_message_store(*, reply: BotReply, target: ServingTarget) -> Message:
    """Store a finished bot reply in one write, with the version that produced it."""
    message = Message.objects.create(
        id=reply.message_id,
        conversation_id=reply.conversation_id,
        role=Message.Role.BOT,
        text=reply.text,
        created_at=reply.started_at,
        model_version_id=target.version_id,
        token_count=reply.token_count,
        time_to_first_token_ms=reply.ttft_ms,
        generation_ms=reply.generation_ms,
        truncated=reply.truncated,
        sources=reply.sources,
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


async def knowledge_retrieve(*, history: list[tuple[str, str]]) -> list | None:
    """Knowledge-base passages for the last customer message; None when retrieval is off
    or failed (the reply then goes ahead without it).

    Runs in a pool thread with its own database connection, not on the event loop nor on
    the shared ORM thread: embedding the question, or rebuilding a missing index, delays
    only this reply.
    """
    from chatbot.knowledge.selectors import passages_search

    question = next((text for role, text in reversed(history) if role == "customer"), None)
    if not settings.KNOWLEDGE_RETRIEVAL or not question:
        return None
    try:
        return await database_sync_to_async(passages_search, thread_sensitive=False)(query=question)
    except Exception:  # noqa: BLE001 - a broken index must not stop the chat
        log.exception("Knowledge retrieval failed; answering without it")
        return None


async def bot_reply_generate(*, conversation_id: uuid.UUID) -> Message | None:
    """Stream a reply to the conversation's group token by token, then store it whole."""
    group = conversation_group(conversation_id)
    history = await database_sync_to_async(conversation_history)(conversation_id=conversation_id)
    reply = BotReply(
        message_id=uuid.uuid4(), conversation_id=conversation_id, started_at=timezone.now()
    )
    start = time.perf_counter()
    hits = await knowledge_retrieve(history=history)
    reply.sources = hits_sources(hits or [])
    messages = chat_messages(history, system=system_prompt(hits))
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
    return await database_sync_to_async(bot_message_store)(reply=reply, target=target)
