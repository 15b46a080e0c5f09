"""When a customer's words call for a human: a plain, predictable rule (no model)."""

import re

from feedback.models import ConversationReview

Reason = ConversationReview.HandoffReason

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


# A yes to the bot's own offer of a human (chatbot.services.EMPTY_REPLY_FALLBACK).
ACCEPTS_OFFER = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|please|ok|okay|y|connect me|i would|i'd like that)\b",
    re.IGNORECASE,
)


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
