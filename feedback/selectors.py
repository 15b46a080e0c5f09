"""Reads for the agent console (callers have already checked the user is an agent)."""

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db.models import (
    Count,
    Exists,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)

from chatbot.models import ApprovedAnswer, Conversation, Message
from feedback.agents import CONSOLE_PERMISSION
from feedback.models import (
    AGENT_GROUP_NAME,
    AgentNote,
    AuditEvent,
    CannedReply,
    ConversationReview,
    Correction,
    Flag,
    MessageRating,
)

QUEUE_FILTERS = {
    "needs_human": "Needs a human",
    "flagged": "Flagged",
    "rated_bad": "Rated badly",
    "unreviewed": "Not reviewed",
    "mine": "Assigned to me",
    "reply_failed": "Bot reply failed",
}


@dataclass(frozen=True)
class QueueQuery:
    filters: frozenset[str] = frozenset()
    status: str = ""
    text: str = ""

    @classmethod
    def from_params(cls, params) -> "QueueQuery":
        status = params.get("status", "")
        return cls(
            filters=frozenset(f for f in params.getlist("filter") if f in QUEUE_FILTERS),
            status=status if status in Conversation.Status.values else "",
            text=params.get("q", "").strip()[:200],
        )


def conversation_queue(*, query: QueueQuery, agent, limit: int = 100) -> QuerySet:
    """Conversations for the console list, most recently active first."""
    last = Message.objects.filter(conversation=OuterRef("pk")).order_by("-created_at", "-id")
    queryset = (
        Conversation.objects.select_related("review", "review__assigned_to", "review__handled_by")
        .annotate(
            message_count=Count("messages", distinct=True),
            last_text=Subquery(last.values("text")[:1]),
            last_role=Subquery(last.values("role")[:1]),
            is_flagged=Exists(Flag.objects.filter(message__conversation=OuterRef("pk"))),
            has_bad_rating=Exists(
                MessageRating.objects.filter(
                    message__conversation=OuterRef("pk"), value=MessageRating.Value.BAD
                )
            ),
            has_correction=Exists(Correction.objects.filter(message__conversation=OuterRef("pk"))),
            has_failed_reply=Exists(
                Message.objects.filter(conversation=OuterRef("pk"), reply_failed_at__isnull=False)
            ),
        )
        .order_by("-updated_at")
    )
    if query.status:
        queryset = queryset.filter(status=query.status)
    if "needs_human" in query.filters:
        queryset = queryset.filter(status=Conversation.Status.WAITING)
    if "flagged" in query.filters:
        queryset = queryset.filter(is_flagged=True)
    if "rated_bad" in query.filters:
        queryset = queryset.filter(Q(has_bad_rating=True) | Q(review__customer_rating__lte=2))
    if "unreviewed" in query.filters:
        queryset = queryset.filter(Q(review__isnull=True) | Q(review__reviewed_at__isnull=True))
    if "reply_failed" in query.filters:
        queryset = queryset.filter(has_failed_reply=True)
    if "mine" in query.filters:
        queryset = queryset.filter(review__assigned_to=agent)
    if query.text:
        matching = Message.objects.filter(conversation=OuterRef("pk"), text__icontains=query.text)
        by_id = Q(pk__startswith=query.text) if _looks_like_id(query.text) else Q()
        queryset = queryset.filter(Q(Exists(matching)) | by_id)
    return queryset[:limit]


def _looks_like_id(text: str) -> bool:
    return len(text) >= 4 and all(c in "0123456789abcdef-" for c in text.lower())


def waiting_count() -> int:
    return Conversation.objects.filter(status=Conversation.Status.WAITING).count()


@dataclass
class ConversationDetail:
    conversation: Conversation
    review: ConversationReview
    messages: list[Message]
    notes: list[AgentNote]
    audit: list[AuditEvent]
    canned_replies: list[CannedReply]
    agents: list = field(default_factory=list)


def conversation_detail(*, conversation_id) -> ConversationDetail | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    review = ConversationReview.objects.select_related(
        "handled_by", "assigned_to", "reviewed_by"
    ).filter(conversation=conversation).first() or ConversationReview(conversation=conversation)
    messages = list(
        conversation.messages.select_related("model_version").prefetch_related(
            Prefetch(
                "corrections",
                queryset=Correction.objects.select_related("agent").order_by("-created_at", "-id"),
            ),
            Prefetch("ratings", queryset=MessageRating.objects.select_related("agent")),
            Prefetch("flags", queryset=Flag.objects.select_related("agent")),
            "regression_case",
        )
    )
    return ConversationDetail(
        conversation=conversation,
        review=review,
        messages=messages,
        notes=list(AgentNote.objects.filter(conversation=conversation).select_related("agent")),
        audit=list(AuditEvent.objects.filter(conversation_id=conversation.id)[:50]),
        canned_replies=list(CannedReply.objects.filter(is_active=True)),
        agents=agents_list(),
    )


def agents_list() -> list:
    """Active staff who may use the console (group members and superusers)."""
    app_label, codename = CONSOLE_PERMISSION.split(".")
    can = (
        Q(groups__name=AGENT_GROUP_NAME)
        | Q(
            user_permissions__codename=codename, user_permissions__content_type__app_label=app_label
        )
        | Q(groups__permissions__codename=codename)
        | Q(is_superuser=True)
    )
    return list(
        get_user_model()
        .objects.filter(can, is_active=True, is_staff=True)
        .distinct()
        .order_by("username")
    )


ANSWER_STATES = {"active": "In use", "revoked": "Revoked", "all": "All"}


@dataclass(frozen=True)
class AnswerQuery:
    state: str = "active"
    text: str = ""

    @classmethod
    def from_params(cls, params) -> "AnswerQuery":
        state = params.get("state", "active")
        return cls(
            state=state if state in ANSWER_STATES else "active",
            text=params.get("q", "").strip()[:200],
        )


def approved_answers(*, query: AnswerQuery, limit: int = 200) -> QuerySet:
    """The approved-answer memory for the console, most recently changed first."""
    queryset = ApprovedAnswer.objects.select_related("message")
    if query.state != "all":
        queryset = queryset.filter(active=query.state == "active")
    if query.text:
        queryset = queryset.filter(
            Q(question__icontains=query.text) | Q(answer__icontains=query.text)
        )
    return queryset.order_by("-updated_at", "-id")[:limit]
