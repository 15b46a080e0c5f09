"""Reading and seeding the model-version registry."""

from django.db import IntegrityError, transaction

from training.models import ModelVersion


def base_version_ensure() -> ModelVersion:
    """Return the active version, registering the configured base model as v1 if the
    registry is empty. An empty artifact_path means "the configured base model"."""
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if active:
        return active
    try:
        with transaction.atomic():
            version, _ = ModelVersion.objects.get_or_create(
                number=1,
                defaults={
                    "status": ModelVersion.Status.ACTIVE,
                    "artifact_path": "",
                    "created_by": "system",
                    "status_reason": "base model",
                },
            )
    except IntegrityError:
        version = ModelVersion.objects.get(number=1)
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first() or version
