from django.contrib import admin

from chatbot.models import Conversation, Message
from feedback.admin import customer_data_delete_action


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "role",
        "text",
        "model_version",
        "token_count",
        "time_to_first_token_ms",
    )
    readonly_fields = fields
    ordering = ("created_at",)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "created_at", "updated_at", "message_count")
    list_filter = ("status",)
    search_fields = ("id", "messages__text")
    readonly_fields = ("id", "session_key", "created_at", "updated_at")
    inlines = [MessageInline]
    actions = [customer_data_delete_action]

    @admin.display(description="messages")
    def message_count(self, obj):
        return obj.messages.count()


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "role",
        "short_text",
        "conversation",
        "model_version",
        "token_count",
    )
    list_filter = ("role", "model_version")
    search_fields = ("text",)
    readonly_fields = ("id", "conversation", "created_at")
    list_select_related = ("conversation", "model_version")

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]
