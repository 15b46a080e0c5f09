"""Conversations and their messages."""

import uuid

from django.db import models


class Conversation(models.Model):
    class Status(models.TextChoices):
        BOT = "bot", "Bot answering"
        WAITING = "waiting", "Waiting for a human"
        AGENT = "agent", "With an agent"
        CLOSED = "closed", "Closed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The customer's browser session: the only key that grants access to the conversation.
    session_key = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BOT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"Conversation {str(self.id)[:8]} ({self.get_status_display()})"

    @property
    def group_name(self) -> str:
        """Channel-layer group that receives this conversation's live events."""
        return f"conversation.{self.id.hex}"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField()
    created_at = models.DateTimeField(db_index=True)
    # Generation facts, set on bot replies only.
    model_version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="messages",
    )
    token_count = models.PositiveIntegerField(null=True, blank=True)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    generation_ms = models.PositiveIntegerField(null=True, blank=True)
    # Set when the reply was cut short (max tokens reached) rather than finished by the model.
    truncated = models.BooleanField(default=False)
    # Knowledge-base articles the reply was grounded in: [{"article_id", "title", "kind",
    # "score"}], best first (see chatbot/knowledge).
    sources = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_role_display()}: {self.text[:60]}"


# Knowledge base (retrieval): defined in chatbot/knowledge, registered with this app.
from chatbot.knowledge.models import Article, Passage  # noqa: E402, F401
