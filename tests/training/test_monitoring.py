from datetime import timedelta

import pytest
from django.utils import timezone

from chatbot.models import Conversation, Message
from feedback.models import Correction, MessageRating
from training.models import ModelVersion, VersionEvent
from training.monitoring import live_quality_check, version_live_numbers
from training.registry import base_version_ensure

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(settings):
    settings.LIVE_MONITOR_MIN_REPLIES = 40
    settings.LIVE_MONITOR_ALPHA = 0.01
    now = timezone.now()
    v1 = base_version_ensure()
    v1.status = "retired"
    v1.activated_at = now - timedelta(days=3)
    v1.save()
    v2 = ModelVersion.objects.create(
        number=2, status="active", parent=v1, artifact_path="", activated_at=now - timedelta(days=1)
    )
    return v1, v2


def replies(version, count, *, bad, when, correct_some=False):
    """`count` bot replies by `version`, the first `bad` of them thumbed down."""
    conversation = Conversation.objects.create(session_key=f"s-{version.number}-{count}-{bad}")
    for i in range(count):
        message = Message.objects.create(
            conversation=conversation,
            role="bot",
            text=f"reply {i}",
            created_at=when + timedelta(seconds=i),
            model_version=version,
        )
        if i < bad:
            if correct_some and i % 2:
                Correction.objects.create(message=message, text="better answer")
            else:
                MessageRating.objects.create(message=message, source="customer", value="bad")


def test_live_numbers_count_thumbs_down_and_corrections(versions):
    _, v2 = versions
    replies(v2, 10, bad=4, when=v2.activated_at, correct_some=True)
    numbers = version_live_numbers(v2)
    assert numbers.replies == 10 and numbers.conversations == 1
    assert numbers.bad_replies == 4
    assert numbers.thumbs_down_share == pytest.approx(0.2)
    assert numbers.correction_share == pytest.approx(0.2)


def test_clearly_worse_version_is_rolled_back_with_the_reason(versions):
    v1, v2 = versions
    replies(v1, 100, bad=5, when=v1.activated_at + timedelta(hours=1))
    replies(v2, 100, bad=30, when=v2.activated_at + timedelta(minutes=5))
    verdict = live_quality_check()
    assert verdict.rolled_back, verdict.reason
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == ("active", "retired")
    event = VersionEvent.objects.get(version=v2, action="rolled_back")
    assert event.actor == "live monitor" and "z-test" in event.reason


def test_similar_numbers_keep_the_new_version(versions):
    v1, v2 = versions
    replies(v1, 100, bad=10, when=v1.activated_at + timedelta(hours=1))
    replies(v2, 100, bad=12, when=v2.activated_at + timedelta(minutes=5))
    verdict = live_quality_check()
    assert not verdict.rolled_back and "no clear regression" in verdict.reason
    v2.refresh_from_db()
    assert v2.status == "active"


def test_too_few_replies_decides_nothing(versions):
    v1, v2 = versions
    replies(v1, 10, bad=0, when=v1.activated_at + timedelta(hours=1))
    replies(v2, 10, bad=10, when=v2.activated_at + timedelta(minutes=5))
    verdict = live_quality_check()
    assert not verdict.rolled_back and "not enough replies" in verdict.reason
