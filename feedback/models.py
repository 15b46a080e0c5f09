"""What agents and customers say about conversations, and the audit trail of agent actions.

Nothing here ever edits a Message: corrections, ratings and flags sit beside the original.
"""

from django.conf import settings
from django.db import models

from chatbot.models import Conversation, Message

AGENT_GROUP_NAME = "Support agents"


class ConversationReview(models.Model):
    """Per-conversation handling by agents: who holds it, who it is assigned to, reviews,
    the customer's rating. (Why it was handed off is on the Conversation.)"""

    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="review", primary_key=True
    )
    # The agent answering live while the conversation's status is "agent".
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    customer_rating = models.PositiveSmallIntegerField(null=True, blank=True)
    customer_rated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("use_console", "Can use the agent console")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(customer_rating__isnull=True)
                | models.Q(customer_rating__gte=1, customer_rating__lte=5),
                name="customer_rating_1_to_5",
            )
        ]

    def __str__(self) -> str:
        return f"Review of {self.conversation}"


class Correction(models.Model):
    """What the bot should have said. Several may exist; the newest one is used."""

    id = models.BigAutoField(primary_key=True)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="corrections")
    text = models.TextField()
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Correction of {self.message_id}: {self.text[:60]}"


class MessageRating(models.Model):
    class Source(models.TextChoices):
        AGENT = "agent", "Agent"
        CUSTOMER = "customer", "Customer"

    class Value(models.TextChoices):
        GOOD = "good", "Good"
        BAD = "bad", "Bad"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="ratings")
    source = models.CharField(max_length=10, choices=Source.choices)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    value = models.CharField(max_length=4, choices=Value.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            # One rating per agent per reply, and one from the customer; re-rating replaces it.
            models.UniqueConstraint(
                fields=["message", "agent"],
                condition=models.Q(source="agent"),
                name="one_agent_rating_per_message",
            ),
            models.UniqueConstraint(
                fields=["message"],
                condition=models.Q(source="customer"),
                name="one_customer_rating_per_message",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} rated {self.message_id} {self.value}"


class Flag(models.Model):
    class Reason(models.TextChoices):
        WRONG_FACTS = "wrong_facts", "Wrong facts"
        RUDE = "rude", "Rude"
        UNSAFE = "unsafe", "Unsafe"
        LEAKED_DATA = "leaked_data", "Leaked data"
        OTHER = "other", "Other"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="flags")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    note = models.CharField(max_length=500, blank=True)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_reason_display()} on {self.message_id}"


class AgentNote(models.Model):
    """A private note beside a conversation; never shown to the customer."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="agent_notes"
    )
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.text[:60]


class CannedReply(models.Model):
    title = models.CharField(max_length=80, unique=True)
    text = models.TextField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title"]
        verbose_name_plural = "canned replies"

    def __str__(self) -> str:
        return self.title


class RegressionCase(models.Model):
    """An evaluation case every future model must pass: the prompt and the expected reply.

    The prompt and reply are copies, so a case outlives retention purges of its source
    conversation; deleting a customer's data deletes the cases derived from it.
    """

    prompt = models.JSONField(help_text="Chat messages [{role, content}] before the reply.")
    expected = models.TextField()
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.OneToOneField(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="regression_case"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Regression case {self.pk}: {self.expected[:60]}"


class AuditEvent(models.Model):
    """Who did what, when. Ids, not foreign keys: the trail outlives deleted data."""

    class Action(models.TextChoices):
        TAKE_OVER = "take_over", "Took over"
        HAND_BACK = "hand_back", "Handed back to the bot"
        CLOSE = "close", "Closed"
        ASSIGN = "assign", "Assigned"
        AGENT_MESSAGE = "agent_message", "Sent a message"
        CORRECT = "correct", "Corrected a reply"
        RATE = "rate", "Rated a reply"
        FLAG = "flag", "Flagged a reply"
        NOTE = "note", "Added a note"
        REVIEW = "review", "Marked reviewed"
        REGRESSION_ADD = "regression_add", "Added to the regression set"
        CUSTOMER_DATA_DELETE = "customer_data_delete", "Deleted a customer's data"
        PURGE = "purge", "Purged old conversations"
        ANSWER_REVOKE = "answer_revoke", "Revoked an approved answer"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=30, choices=Action.choices, db_index=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    message_id = models.UUIDField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.get_action_display().lower()}"
