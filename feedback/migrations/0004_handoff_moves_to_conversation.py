# Why and when a human was brought in moves from ConversationReview to Conversation (which
# owns the status it changes): copied over, then removed here.

from django.db import migrations


def handoff_copy(apps, schema_editor):
    Conversation = apps.get_model("chatbot", "Conversation")
    ConversationReview = apps.get_model("feedback", "ConversationReview")
    reviews = ConversationReview.objects.exclude(handoff_reason="")
    for review in reviews.iterator(chunk_size=1000):
        Conversation.objects.filter(pk=review.conversation_id).update(
            handoff_reason=review.handoff_reason,
            handoff_detail=review.handoff_detail,
            handoff_at=review.handoff_at,
        )


def handoff_copy_back(apps, schema_editor):
    Conversation = apps.get_model("chatbot", "Conversation")
    ConversationReview = apps.get_model("feedback", "ConversationReview")
    for conversation in Conversation.objects.exclude(handoff_reason="").iterator(chunk_size=1000):
        ConversationReview.objects.update_or_create(
            conversation_id=conversation.pk,
            defaults={
                "handoff_reason": conversation.handoff_reason,
                "handoff_detail": conversation.handoff_detail,
                "handoff_at": conversation.handoff_at,
            },
        )


class Migration(migrations.Migration):
    dependencies = [
        ("chatbot", "0006_conversation_handoff"),
        ("feedback", "0003_answer_revoke_action"),
    ]

    operations = [
        migrations.RunPython(handoff_copy, handoff_copy_back),
        migrations.RemoveField(model_name="conversationreview", name="handoff_at"),
        migrations.RemoveField(model_name="conversationreview", name="handoff_detail"),
        migrations.RemoveField(model_name="conversationreview", name="handoff_reason"),
    ]
