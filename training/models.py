"""The model-version registry: every checkpoint the chat side can serve."""

from django.db import models


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        REJECTED = "rejected", "Rejected"
        RETIRED = "retired", "Retired"

    number = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    # A folder holding a full model, or a LoRA adapter over `base_path`.
    artifact_path = models.CharField(max_length=500)
    base_path = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    data_snapshot = models.CharField(max_length=100, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="active"),
                name="one_active_model_version",
            )
        ]

    def __str__(self) -> str:
        return f"v{self.number} ({self.status})"


class SeedExample(models.Model):
    """A customer/agent exchange imported as seed corpus (e.g. the Bitext dev set)."""

    source = models.CharField(max_length=100, db_index=True)
    external_id = models.CharField(max_length=100)
    intent = models.CharField(max_length=100, blank=True)
    category = models.CharField(max_length=100, blank=True)
    customer = models.TextField()
    agent = models.TextField()
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="unique_seed_example")
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.external_id}"


class DatasetSnapshot(models.Model):
    """A versioned, cleaned training set: files under DATA_DIR/datasets/<name>/."""

    name = models.CharField(max_length=100, unique=True)
    path = models.CharField(max_length=500)
    config = models.JSONField(default=dict, blank=True)
    # Rows in, rows dropped by each rule, rows out, per split.
    report = models.JSONField(default=dict, blank=True)
    train_count = models.PositiveIntegerField(default=0)
    validation_count = models.PositiveIntegerField(default=0)
    preference_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name
