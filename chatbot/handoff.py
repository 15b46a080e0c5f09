"""Handing a conversation to a human: the words rule (plain and predictable, no model), the
write that stops the bot, and the status frame every status change sends.

The agents' side (take over, hand back, close) is in feedback/services/takeover.py; it
builds its status frames here too, naming the agent.
"""

import re

from django.db import transaction
from django.utils import timezone

from chatbot.live import AGENTS_GROUP, conversation_group, frame_publish_on_commit
from chatbot.models import Conversation, Message

Status = Conversation.Status
Reason = Conversation.HandoffReason

# The bot's reply when it has nothing useful to say: it offers a human, and a yes to that
# offer brings one in (ACCEPTS_OFFER).
EMPTY_REPLY_FALLBACK = (
    "I'm sorry, I don't have a good answer to that. Would you like me to connect you "
    "with a human agent?"
)

# "I want a human", "can I speak to someone", "transfer me to an agent", ...
ASKS_FOR_HUMAN = [
    re.compile(r"\b(human|real person|representative|operator)\b", re.IGNORECASE),
    re.compile(
        r"\b(talk|speak|chat|connect|transfer|put)\b.{0,25}"
        r"\b(agent|someone|somebody|person|staff|support team|manager)\b",
        re.IGNORECASE,
    ),
]
# Words that need a person's judgement whatever the bot could say.
FLAGGED_WORDS = re.compile(
    r"\b(lawyers?|sue|suing|legal action|chargeback|fraud|scam(med)?|stolen|police|"
    r"suicid\w*|self[- ]harm)\b",
    re.IGNORECASE,
)
ACCEPTS_OFFER = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|please|ok|okay|y|connect me|i would|i'd like that)\b",
    re.IGNORECASE,
)

STATUS_NOTICE = {
    Status.BOT: "The assistant is answering again.",
    Status.WAITING: "We're finding a person to help you. Please stay on this page.",
    Status.AGENT: "{agent} from our support team has joined the chat.",
    Status.CLOSED: "This conversation was closed. Thanks for chatting with us!",
}


def handoff_reason_for(text: str, *, human_offered: bool = False) -> tuple[str, str] | None:
    """(reason, detail) if this customer text should bring in a human, else None.

    `human_offered`: the bot's previous reply admitted it had no answer and offered a human.
    """
    if human_offered and ACCEPTS_OFFER.search(text):
        return Reason.BOT_UNSURE, "the bot had no answer and the customer accepted a human"
    for pattern in ASKS_FOR_HUMAN:
        if match := pattern.search(text):
            return Reason.CUSTOMER_ASKED, f"asked in words: “{match.group(0)[:60]}”"
    if match := FLAGGED_WORDS.search(text):
        return Reason.FLAGGED_WORDS, f"flagged word: “{match.group(0)[:40]}”"
    return None


def status_notice(status: str, *, agent_name: str | None = None) -> str:
    """What the customer reads when the conversation's status changes."""
    return STATUS_NOTICE[Status(status)].format(agent=agent_name or "An agent")


def status_frame(conversation: Conversation, *, agent_name: str | None = None) -> dict:
    """The live frame of the conversation's status; `agent_name`: the agent holding it."""
    return {
        "type": "status",
        "conversation_id": str(conversation.id),
        "status": conversation.status,
        "agent_name": agent_name,
        "handoff_reason": conversation.handoff_reason or None,
        "notice": status_notice(conversation.status, agent_name=agent_name),
    }


def status_publish(conversation: Conversation, *, agent_name: str | None = None) -> None:
    """Send the status frame to the customer and the consoles once the write commits."""
    frame = status_frame(conversation, agent_name=agent_name)
    frame_publish_on_commit(conversation_group(conversation.id), frame)
    frame_publish_on_commit(AGENTS_GROUP, frame)


def handoff_record(conversation: Conversation, *, reason: str, detail: str = "") -> None:
    """Note why a human is brought in (the caller saves); the first reason is kept."""
    if not conversation.handoff_reason:
        conversation.handoff_reason = reason
        conversation.handoff_detail = detail[:200]
        conversation.handoff_at = timezone.now()


@transaction.atomic
def human_request(*, conversation_id, reason: str, detail: str = "") -> Conversation | None:
    """Stop the bot: the conversation waits for a human. None if a human is already
    involved (waiting or with an agent)."""
    conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
    if conversation.status in (Status.WAITING, Status.AGENT):
        return None
    conversation.status = Status.WAITING
    conversation.handoff_reason = reason
    conversation.handoff_detail = detail[:200]
    conversation.handoff_at = timezone.now()
    conversation.save(
        update_fields=["status", "handoff_reason", "handoff_detail", "handoff_at", "updated_at"]
    )
    status_publish(conversation)
    return conversation


def handoff_check(*, message: Message) -> Conversation | None:
    """Apply the words rule to a stored customer message; the conversation, now waiting for
    a human, when it called for one."""
    previous = (
        Message.objects.filter(
            conversation_id=message.conversation_id,
            role=Message.Role.BOT,
            created_at__lte=message.created_at,
        )
        .order_by("-created_at")
        .values_list("text", flat=True)
        .first()
    )
    offered = previous is not None and previous.endswith(EMPTY_REPLY_FALLBACK)
    found = handoff_reason_for(message.text, human_offered=offered)
    if found is None:
        return None
    reason, detail = found
    return human_request(conversation_id=message.conversation_id, reason=reason, detail=detail)
