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


class VersionEvent(models.Model):
    """Audit trail of the registry: who promoted, rejected or rolled back what, and why."""

    class Action(models.TextChoices):
        REGISTERED = "registered", "Registered"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected"
        ROLLED_BACK = "rolled_back", "Rolled back"
        OVERRIDDEN = "overridden", "Promoted by override"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=150)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.version} {self.action} by {self.actor}"


class TrainingRun(models.Model):
    """One retraining job: from the request through training and evaluation to the verdict."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATES = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    requested_by = models.CharField(max_length=150)
    trigger = models.CharField(max_length=32, default="manual")  # manual | schedule | cli
    # data | train | evaluate_candidate | evaluate_active | gate | done (training.selectors.STAGES)
    stage = models.CharField(max_length=32, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    stage_timings = models.JSONField(default=dict, blank=True)  # {stage: seconds} when done
    progress = models.FloatField(default=0.0)  # of the current stage
    step = models.PositiveIntegerField(default=0)  # training steps or evaluated cases
    total_steps = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True)  # [{"step", "loss", "val_loss"?}]
    config = models.JSONField(default=dict, blank=True)
    candidate = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    outcome = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Always True: with the constraint below, at most one queued or running run can exist.
    exclusive = models.BooleanField(default=True, editable=False)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)  # hostname:pid running it
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("manage_training", "Can start, cancel and judge training runs")]
        constraints = [
            # One training run at a time, enforced by the database itself.
            models.UniqueConstraint(
                fields=["exclusive"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_unfinished_training_run",
            )
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"


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
