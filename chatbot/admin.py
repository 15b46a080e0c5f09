from django.contrib import admin

from chatbot.knowledge import services as knowledge
from chatbot.models import ApprovedAnswer, Article, Conversation, Message, Passage


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


class ViewOnlyAdmin(admin.ModelAdmin):
    """Conversations and messages change through the chat and console services (live
    frames, audit); admin shows them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RecordAdmin(ViewOnlyAdmin):
    """View only, and never deleted here either."""

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(ViewOnlyAdmin):
    """(feedback/admin.py adds the action that deletes a customer's data.)"""

    list_display = ("id", "status", "handoff_reason", "created_at", "updated_at", "message_count")
    list_filter = ("status", "handoff_reason")
    search_fields = ("id", "messages__text")
    # Never session_key: it is the customer's live session cookie.
    fields = (
        "id",
        "status",
        "handoff_reason",
        "handoff_detail",
        "handoff_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = [MessageInline]

    def has_delete_permission(self, request, obj=None):
        # Deleting goes through the customer-data action (snapshots and exports too).
        return False

    @admin.display(description="messages")
    def message_count(self, obj):
        return obj.messages.count()


@admin.register(Message)
class MessageAdmin(RecordAdmin):
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
    list_select_related = ("conversation", "model_version")

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]


# --- Knowledge base ------------------------------------------------------------------------
# Every write goes through chatbot.knowledge.services, which re-indexes in the background.


class PassageInline(admin.TabularInline):
    model = Passage
    extra = 0
    can_delete = False
    fields = ("position", "text")
    readonly_fields = fields
    ordering = ("position",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ("title", "kind", "published", "tags", "updated_at", "passage_count")
    list_filter = ("published", "kind")
    search_fields = ("title", "body", "tags", "slug")
    prepopulated_fields = {"slug": ("title",)}
    readonly_fields = ("created_at", "updated_at")
    fields = ("title", "slug", "kind", "tags", "published", "body", "created_at", "updated_at")
    inlines = [PassageInline]
    actions = ["publish", "unpublish"]

    @admin.display(description="passages")
    def passage_count(self, obj):
        return obj.passages.count()

    def save_model(self, request, obj, form, change):
        knowledge.article_save(article=obj)

    def delete_model(self, request, obj):
        knowledge.article_delete(article=obj)

    def delete_queryset(self, request, queryset):
        for article in queryset:
            knowledge.article_delete(article=article)

    @admin.action(description="Publish selected articles", permissions=["change"])
    def publish(self, request, queryset):
        for article in queryset:
            knowledge.article_publish_set(article=article, published=True)

    @admin.action(description="Unpublish selected articles", permissions=["change"])
    def unpublish(self, request, queryset):
        for article in queryset:
            knowledge.article_publish_set(article=article, published=False)


# --- Approved answers ------------------------------------------------------------------------
# Read-only here: agents correct, edit and revoke them in the console (/agent/answers/), which
# audits every change.


@admin.register(ApprovedAnswer)
class ApprovedAnswerAdmin(RecordAdmin):
    list_display = ("question", "origin", "author_name", "active", "times_used", "updated_at")
    list_filter = ("active", "origin")
    search_fields = ("question", "answer")
    fields = (
        "question",
        "answer",
        "origin",
        "author_name",
        "active",
        "revoked_by_name",
        "revoked_at",
        "times_used",
        "last_used_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
