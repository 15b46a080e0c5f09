"""Live support numbers per model version, and automatic rollback of a worse version.

After promotion, each version's replies are judged by what happened to them in service:
customer ratings, thumbs-down, handoffs to a human and agent corrections. A promoted
version whose share of bad replies is clearly higher than its predecessor's, by a
one-sided two-proportion z-test over the configured window, is rolled back.
"""

import logging
import math
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db.models import Avg, Q

from chatbot.models import Conversation, Message
from training.models import ModelVersion
from training.registry import version_rollback

log = logging.getLogger(__name__)


@dataclass
class LiveNumbers:
    version: int
    replies: int
    conversations: int
    mean_customer_rating: float | None
    thumbs_down_share: float
    handoff_share: float
    correction_share: float
    bad_replies: int  # thumbed down, rated bad by an agent, corrected or flagged

    @property
    def bad_share(self) -> float:
        return self.bad_replies / self.replies if self.replies else 0.0


def version_live_numbers(version: ModelVersion, *, since=None, until=None) -> LiveNumbers:
    from feedback.models import ConversationReview

    replies = Message.objects.filter(role=Message.Role.BOT, model_version=version)
    if since:
        replies = replies.filter(created_at__gte=since)
    if until:
        replies = replies.filter(created_at__lt=until)
    total = replies.count()
    conversation_ids = replies.values("conversation_id").distinct()
    conversations = conversation_ids.count()
    reviews = ConversationReview.objects.filter(conversation_id__in=conversation_ids)

    def count(condition: Q) -> int:
        return replies.filter(condition).distinct().count()

    return LiveNumbers(
        version=version.number,
        replies=total,
        conversations=conversations,
        mean_customer_rating=reviews.aggregate(avg=Avg("customer_rating"))["avg"],
        thumbs_down_share=count(Q(ratings__source="customer", ratings__value="bad")) / total
        if total
        else 0.0,
        handoff_share=Conversation.objects.filter(
            pk__in=conversation_ids, handoff_at__isnull=False
        ).count()
        / conversations
        if conversations
        else 0.0,
        correction_share=count(Q(corrections__isnull=False)) / total if total else 0.0,
        bad_replies=count(
            Q(ratings__value="bad") | Q(corrections__isnull=False) | Q(flags__isnull=False)
        ),
    )


def worse_p_value(new: LiveNumbers, old: LiveNumbers) -> float:
    """One-sided p-value that `new` has a higher bad-reply share than `old`."""
    pooled = (new.bad_replies + old.bad_replies) / (new.replies + old.replies)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / new.replies + 1 / old.replies))
    if spread == 0:
        return 1.0
    z = (new.bad_share - old.bad_share) / spread
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass
class LiveVerdict:
    rolled_back: bool
    reason: str
    active: dict | None = None
    predecessor: dict | None = None


def predecessor_of(version: ModelVersion) -> ModelVersion | None:
    """The version that was in service just before `version` was activated."""
    if not version.activated_at:
        return None
    return (
        ModelVersion.objects.filter(
            status=ModelVersion.Status.RETIRED, activated_at__lt=version.activated_at
        )
        .order_by("-activated_at")
        .first()
    )


def live_quality_check() -> LiveVerdict:
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    previous = predecessor_of(active) if active else None
    if not active or not active.activated_at or not previous:
        return LiveVerdict(False, "no predecessor to compare with")
    window = timedelta(days=settings.LIVE_MONITOR_WINDOW_DAYS)
    new = version_live_numbers(active, since=active.activated_at)
    old = version_live_numbers(
        previous, since=active.activated_at - window, until=active.activated_at
    )
    verdict = LiveVerdict(False, "", asdict(new), asdict(old))
    minimum = settings.LIVE_MONITOR_MIN_REPLIES
    if new.replies < minimum or old.replies < minimum:
        verdict.reason = f"not enough replies yet ({new.replies} and {old.replies}; need {minimum})"
        return verdict
    p_value = worse_p_value(new, old)
    summary = (
        f"bad-reply share v{new.version} {new.bad_share:.1%} ({new.bad_replies}/{new.replies}) "
        f"vs v{old.version} {old.bad_share:.1%} ({old.bad_replies}/{old.replies}), "
        f"one-sided two-proportion z-test p={p_value:.4f}"
    )
    if p_value >= settings.LIVE_MONITOR_ALPHA:
        verdict.reason = f"no clear regression: {summary}"
        return verdict
    reason = f"live regression: {summary} < alpha {settings.LIVE_MONITOR_ALPHA}"
    version_rollback(actor="live monitor", reason=reason, to_version_id=previous.pk)
    log.warning("Rolled back v%s to v%s: %s", new.version, old.version, reason)
    mail_admins(f"Model v{new.version} rolled back to v{old.version}", reason, fail_silently=True)
    verdict.rolled_back = True
    verdict.reason = reason
    return verdict
