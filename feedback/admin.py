from collections import Counter

from django.contrib import admin, messages

from chatbot.admin import ConversationAdmin
from chatbot.models import Conversation
from feedback.models import (
    AgentNote,
    AuditEvent,
    CannedReply,
    ConversationReview,
    Correction,
    Flag,
    MessageRating,
    RegressionCase,
)
from feedback.services import customer_data_delete


@admin.action(
    description="Delete ALL data of these conversations' customers",
    permissions=["delete_customer_data"],
)
def customer_data_delete_action(modeladmin, request, queryset):
    """Used on the Conversation admin: erase each selected conversation's customer."""
    totals: Counter[str] = Counter()
    for session_key in set(queryset.values_list("session_key", flat=True)):
        totals.update(customer_data_delete(session_key=session_key, actor=request.user))
    modeladmin.message_user(
        request,
        "Deleted {conversations} conversations, {messages} messages, {regression_cases} "
        "regression cases, {snapshot_rows} dataset snapshot rows, {export_rows} exported rows "
        "and {evaluation_samples} evaluation samples.".format_map(totals),
        messages.SUCCESS,
    )


# The Conversation admin (chatbot) with the action above: deleting a customer's data reaches
# feedback's rows, dataset snapshots and exports, which chatbot does not know about.
admin.site.unregister(Conversation)


@admin.register(Conversation)
class ConversationWithCustomerDataAdmin(ConversationAdmin):
    actions = [customer_data_delete_action]

    def has_delete_customer_data_permission(self, request) -> bool:
        return request.user.has_perm("chatbot.delete_customer_data")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Feedback is written through the console (audited); admin shows it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "action", "conversation_id", "message_id")
    list_filter = ("action", "actor_name")
    search_fields = ("actor_name", "conversation_id", "message_id")
    date_hierarchy = "created_at"

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Correction)
class CorrectionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "agent", "message", "short_text")
    search_fields = ("text",)
    list_select_related = ("agent", "message")

    @admin.display(description="correction")
    def short_text(self, obj):
        return obj.text[:80]


@admin.register(MessageRating)
class MessageRatingAdmin(ReadOnlyAdmin):
    list_display = ("updated_at", "source", "agent", "value", "message")
    list_filter = ("source", "value")


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "reason", "agent", "note", "message")
    list_filter = ("reason",)


@admin.register(AgentNote)
class AgentNoteAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "agent", "conversation", "text")


@admin.register(ConversationReview)
class ConversationReviewAdmin(ReadOnlyAdmin):
    list_display = (
        "conversation",
        "handled_by",
        "assigned_to",
        "reviewed_at",
        "customer_rating",
    )
    list_filter = ("customer_rating",)


@admin.register(CannedReply)
class CannedReplyAdmin(admin.ModelAdmin):
    list_display = ("title", "is_active", "text")
    list_editable = ("is_active",)
    search_fields = ("title", "text")


@admin.register(RegressionCase)
class RegressionCaseAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "created_by", "is_active", "short_expected")
    list_filter = ("is_active",)
    list_editable = ("is_active",)
    readonly_fields = ("conversation", "message", "created_by", "created_at", "updated_at")
    search_fields = ("expected",)

    @admin.display(description="expected reply")
    def short_expected(self, obj):
        return obj.expected[:80]
