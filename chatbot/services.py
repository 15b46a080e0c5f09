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
from django.db.models import Exists, OuterRef
from django.utils import timezone

from chatbot.approved.services import answer_used
from chatbot.approved.store import AnswerMatch
from chatbot.grounding import grounding_find
from chatbot.handoff import EMPTY_REPLY_FALLBACK, handoff_check, status_frame
from chatbot.leases import lease_release, leases_hold, leases_live
from chatbot.live import AGENTS_GROUP, conversation_group, frame_publish, frame_publish_on_commit
from chatbot.models import Conversation, Message
from chatbot.selectors import conversation_history, message_frame_data
from chatbot.serving import gateway
from chatbot.serving.cluster import pool, remote_serving
from chatbot.serving.engine import Event, GenerationParams
from chatbot.serving.loading import ModelLoadError
from chatbot.serving.turns import decode_turns
from chatbot.serving.versions import (
    ServingTarget,
    active_serving_target,
    serving_failure_rollback,
)

log = logging.getLogger(__name__)


class ChatInputError(Exception):
    """A customer message that cannot be accepted; `code` goes into the error frame, with
    `extra` (e.g. retry_after) beside it."""

    def __init__(self, code: str, detail: str, **extra):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


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


@dataclass
class CustomerMessageReceived:
    conversation: Conversation
    message: Message
    started: bool  # the message started the conversation
    answer: bool  # the bot answers it (no human is involved)
    status: dict | None  # the status frame, when the message brought in a human


def customer_message_receive(
    *, session_key: str, conversation: Conversation | None, text: str
) -> CustomerMessageReceived:
    """Everything a customer's message does before the reply: start the conversation if
    there is none, store the message, hand over to a human if its words call for one
    (chatbot/handoff.py), and decide whether the bot answers."""
    started = conversation is None
    if conversation is None:
        conversation = conversation_start(session_key=session_key)
    message = customer_message_log(conversation=conversation, text=text)
    handed_off = handoff_check(message=message)
    return CustomerMessageReceived(
        conversation=conversation,
        message=message,
        started=started,
        answer=bot_should_answer(conversation_id=conversation.id),
        status=status_frame(handed_off) if handed_off else None,
    )


# Conversations with a reply being generated (or queued) in this process, each with the
# customer's session, and the tasks doing it.
_replying: dict[uuid.UUID, str] = {}
_reply_tasks: set[asyncio.Task] = set()
_lease_releases: set[asyncio.Task] = set()


def reply_in_progress(conversation_id) -> bool:
    return conversation_id in _replying


def reply_admit(*, conversation_id: uuid.UUID | None, session_key: str) -> None:
    """Refuse a message that would start a reply now: one reply at a time per conversation
    and per customer session (a session's many sockets included), and at most
    SERVING_MAX_PENDING replies queued or generating in this process."""
    if conversation_id in _replying or session_key in _replying.values():
        raise ChatInputError("busy", "Please wait until the current reply has finished.")
    if len(_replying) >= settings.SERVING_MAX_PENDING:
        wait = overload_retry_seconds()
        raise ChatInputError(
            "overloaded",
            f"The assistant is answering many customers right now; try again in {wait} s.",
            retry_after=wait,
        )


def overload_retry_seconds() -> int:
    """The retry hint for a refused message: when a reply joining the line now would get its
    turn, once the line's pace is measured (turns.py), else CHAT_OVERLOAD_RETRY_SECONDS."""
    turns = decode_turns(decoding_slots)
    estimate = turns.wait_estimate(turns.waiting + 1)
    return max(1, estimate) if estimate is not None else settings.CHAT_OVERLOAD_RETRY_SECONDS


def decoding_slots() -> int:
    """Replies decoded at once: the model servers' slots, or the in-process engine's batch."""
    if remote_serving():
        return settings.MODEL_SERVER_SLOTS * max(1, pool.known_count())
    return settings.SERVING_MAX_BATCH


def bot_reply_start(*, conversation_id: uuid.UUID, session_key: str = "") -> asyncio.Task:
    """Start generating the bot's reply as a task of its own.

    The task is not tied to any socket: a customer who disconnects mid-stream still gets
    the whole reply stored.
    """
    _replying[conversation_id] = session_key
    task = asyncio.get_running_loop().create_task(_reply_leased(conversation_id=conversation_id))
    _reply_tasks.add(task)

    def forget(done: asyncio.Task) -> None:
        _reply_tasks.discard(done)
        _replying.pop(conversation_id, None)

    task.add_done_callback(forget)
    return task


async def _reply_leased(*, conversation_id: uuid.UUID) -> Message | None:
    """bot_reply_generate holding the conversation's reply lease (chatbot/leases.py), so
    other hosts can tell a reply in flight from one lost with its process."""
    keeper = asyncio.get_running_loop().create_task(_lease_keep(conversation_id))
    try:
        return await bot_reply_generate(conversation_id=conversation_id)
    finally:
        keeper.cancel()
        # Not awaited: the conversation takes its next message as soon as the reply ends.
        release = asyncio.get_running_loop().create_task(
            _lease_call(lease_release, conversation_id)
        )
        _lease_releases.add(release)
        release.add_done_callback(_lease_releases.discard)


async def _lease_keep(conversation_id: uuid.UUID) -> None:
    while True:
        await _lease_call(leases_hold, [conversation_id])
        await asyncio.sleep(settings.CHAT_REPLY_LEASE_SECONDS / 3)


async def _lease_call(action, argument) -> None:
    try:
        await database_sync_to_async(action, thread_sensitive=False)(argument)
    except Exception:  # noqa: BLE001 - without Redis a lapsed lease only delays the sweep
        log.warning("Reply lease update failed", exc_info=True)


async def bot_reply_generate(*, conversation_id: uuid.UUID) -> Message | None:
    """Stream a reply to the conversation's group token by token, then store it whole.

    Whatever goes wrong (model, engine, database, channel layer), the customer's message
    never stays silently unanswered: it is marked `reply_failed_at`, the customer gets an
    error frame and the agents hear of it (see `reply_failure_report`).
    """
    try:
        return await _bot_reply_generate(conversation_id)
    except Exception as exc:  # noqa: BLE001 - every failure ends in a report
        log.exception("Reply generation failed for %s", conversation_id)
        await reply_failure_report(conversation_id=conversation_id, error=exc)
        return None


async def _bot_reply_generate(conversation_id: uuid.UUID) -> Message:
    group = conversation_group(conversation_id)

    async def queued(position: int, wait_seconds: int | None) -> None:
        frame = {"type": "queued", "position": position, "wait_seconds": wait_seconds}
        await token_publish(group, frame)

    # The reply joins the line for the engine's slots at once (a customer who must wait
    # hears it before anything else) and streams from the engine only on its turn
    # (chatbot/serving/turns.py); an approved answer given word for word needs no slot.
    ticket = await decode_turns(decoding_slots).join(queued)
    try:
        history = await database_sync_to_async(conversation_history)(
            conversation_id=conversation_id
        )
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
        await ticket.wait()
        target = await _model_reply_stream(
            messages, reply, group=group, start=start, params=grounding.params()
        )
    finally:
        ticket.leave()
    if not reply.text.strip():
        # The model said nothing visible; say something useful rather than store a blank
        # reply (appended, so the streamed tokens still add up to the stored text).
        piece = EMPTY_REPLY_FALLBACK if not reply.text else " " + EMPTY_REPLY_FALLBACK
        reply.text += piece
        frame = {"type": "token", "message_id": str(reply.message_id), "text": piece}
        await token_publish(group, frame)
    reply.generation_ms = round((time.perf_counter() - start) * 1000)
    return await database_sync_to_async(bot_message_store)(
        reply=reply, version_id=target.version_id
    )


async def _model_reply_stream(
    messages: list[dict],
    reply: BotReply,
    *,
    group: str,
    start: float,
    params: GenerationParams | None = None,
) -> ServingTarget:
    """Stream the active version's reply into `reply`; returns the version that wrote it.

    A version that will not load is never served: the registry rolls back to the one before
    (whose engine is still loaded) and the reply comes from that one.
    """
    for _attempt in range(3):
        target = await database_sync_to_async(active_serving_target)()
        try:
            stream = gateway.reply_stream(messages, target, params)
            event: Event | None = await anext(stream)  # a load failure shows here, before any token
        except ModelLoadError as exc:
            rolled_back = await database_sync_to_async(serving_failure_rollback)(
                target=target, error=str(exc)
            )
            if not rolled_back:
                raise
            continue
        pieces = TokenPieces(reply, group)
        try:
            while event is not None:
                if event.kind == "token":
                    if reply.ttft_ms is None:
                        reply.ttft_ms = round((time.perf_counter() - start) * 1000)
                    reply.text += event.text
                    await pieces.add(event.text)
                elif event.kind == "done":
                    reply.token_count = event.token_count
                    reply.truncated = event.truncated
                else:
                    raise RuntimeError(event.text)
                event = await anext(stream, None)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator; cancels the request if we stopped early
            await pieces.flush()  # what the model wrote reaches the customer, error or not
        return target
    raise ModelLoadError("no version of the model could be loaded")


class TokenPieces:
    """A reply's tokens on their way to the customer, several to a frame.

    The first token goes out at once; later ones are held until CHAT_TOKEN_FRAME_SECONDS
    have passed since the last frame, and go out with the next token after that (or when
    the reply ends): a piece waits at most one engine step. Each frame costs the web
    process a channel-layer message and a socket frame per watcher, CPU the model server
    on the same cores would otherwise use (README "Model server")."""

    def __init__(self, reply: BotReply, group: str):
        self.reply, self.group = reply, group
        self.held = ""
        self.sent_at: float | None = None

    async def add(self, text: str) -> None:
        self.held += text
        now = time.perf_counter()
        if self.sent_at is None or now - self.sent_at >= settings.CHAT_TOKEN_FRAME_SECONDS:
            await self.flush(now)

    async def flush(self, now: float | None = None) -> None:
        if not self.held:
            return
        frame = {"type": "token", "message_id": str(self.reply.message_id), "text": self.held}
        self.held, self.sent_at = "", now or time.perf_counter()
        await token_publish(self.group, frame)


async def token_publish(group: str, frame: dict) -> None:
    """Publish a streaming frame; a channel-layer error loses the live frame, never the
    reply (it is still stored, and shown on reconnect)."""
    try:
        await frame_publish(group, frame)
    except Exception:  # noqa: BLE001
        log.warning("Could not publish a %s frame to %s", frame["type"], group, exc_info=True)


REPLY_FAILED_DETAIL = (
    "The assistant could not answer just now. Please try again, or ask for a human agent."
)


def reply_failed_mark(*, conversation_id, before=None) -> list[str]:
    """Mark the conversation's unanswered customer messages (none but customer messages
    after them), optionally only those created before `before`; returns their ids."""
    messages = Message.objects.filter(conversation_id=conversation_id)
    answered = messages.exclude(role=Message.Role.CUSTOMER).order_by("-created_at").first()
    pending = messages.filter(role=Message.Role.CUSTOMER, reply_failed_at__isnull=True)
    if answered:
        pending = pending.filter(created_at__gt=answered.created_at)
    if before is not None:
        pending = pending.filter(created_at__lt=before)
    ids = [str(pk) for pk in pending.values_list("pk", flat=True)]
    Message.objects.filter(pk__in=ids).update(reply_failed_at=timezone.now())
    return ids


async def reply_failure_report(*, conversation_id, error: BaseException | str) -> None:
    """Mark the unanswered message, tell the customer and the agents. Each step is tried
    even if another fails (the database or Redis may be the thing that broke)."""
    message_ids: list[str] = []
    try:
        message_ids = await database_sync_to_async(reply_failed_mark)(
            conversation_id=conversation_id
        )
    except Exception:  # noqa: BLE001 - the startup sweep marks it later
        log.exception("Could not mark the failed reply of %s", conversation_id)
    await reply_failure_announce(conversation_id=conversation_id, message_ids=message_ids)


async def reply_failure_announce(*, conversation_id, message_ids: list[str]) -> None:
    error = {"type": "error", "code": "generation_failed", "detail": REPLY_FAILED_DETAIL}
    await token_publish(conversation_group(conversation_id), error)
    notice = {
        "type": "reply_failed",
        "conversation_id": str(conversation_id),
        "message_ids": message_ids,
    }
    await token_publish(AGENTS_GROUP, notice)


def pending_replies_settle(*, before, conversation_id: uuid.UUID | None = None) -> int:
    """Mark failed the customer messages still waiting for a reply that no process is
    generating any more (called when a web process starts, for messages older than its
    start; by beat for ones pending too long; when a socket opens a conversation, for
    that one); each conversation hears of it. A conversation whose reply lease is live
    (a process on some host is answering it) is left alone."""
    from asgiref.sync import async_to_sync

    answered = Message.objects.filter(
        conversation_id=OuterRef("conversation_id"), created_at__gt=OuterRef("created_at")
    ).exclude(role=Message.Role.CUSTOMER)
    pending = Message.objects.filter(
        role=Message.Role.CUSTOMER,
        reply_failed_at__isnull=True,
        created_at__lt=before,
        conversation__status=Conversation.Status.BOT,
    )
    if conversation_id is not None:
        pending = pending.filter(conversation_id=conversation_id)
    conversations = set(pending.exclude(Exists(answered)).values_list("conversation_id", flat=True))
    live = leases_live(conversations)
    conversations = {c for c in conversations if str(c) not in live and c not in _replying}
    marked = 0
    for conversation_id in conversations:
        ids = reply_failed_mark(conversation_id=conversation_id, before=before)
        marked += len(ids)
        if ids:
            async_to_sync(reply_failure_announce)(conversation_id=conversation_id, message_ids=ids)
    if marked:
        log.warning("Marked %s unanswered customer messages as failed replies", marked)
    return marked


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
        await token_publish(
            group, {"type": "token", "message_id": str(reply.message_id), "text": piece}
        )
    reply.kind = "approved"
    reply.generation_ms = round((time.perf_counter() - start) * 1000)
    await database_sync_to_async(answer_used)(answer_id=match.answer_id)
    return await database_sync_to_async(bot_message_store)(reply=reply, version_id=None)
