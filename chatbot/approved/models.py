"""Approved answers (app label: chatbot)."""

from django.conf import settings
from django.db import models


class ApprovedAnswer(models.Model):
    """The shop's answer to a customer question, as an agent wrote or approved it.

    One per bot reply: a newer correction of the same reply replaces the text; revoking
    takes it out of the memory (the row and its history stay).
    """

    class Origin(models.TextChoices):
        CORRECTION = "correction", "Corrected by an agent"
        APPROVED_REPLY = "approved_reply", "Bot reply approved by an agent"

    id = models.BigAutoField(primary_key=True)
    message = models.OneToOneField(
        "chatbot.Message", on_delete=models.CASCADE, related_name="approved_answer"
    )
    question = models.TextField(help_text="The customer's question (personal data masked).")
    answer = models.TextField(help_text="What the bot answers (personal data masked).")
    # float32 little-endian, L2-normalised MiniLM embedding of `question`.
    embedding = models.BinaryField()
    origin = models.CharField(max_length=20, choices=Origin.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_name = models.CharField(max_length=150, blank=True)
    active = models.BooleanField(default=True, db_index=True)
    revoked_by_name = models.CharField(max_length=150, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    times_used = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return f"Approved answer {self.pk}: {self.question[:60]}"
