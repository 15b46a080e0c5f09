"""The serving side of model versions: which folder serves which version."""

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from training.models import ModelVersion
from training.registry import RegistryError, base_version_ensure, version_rollback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingTarget:
    version_id: int
    version_number: int
    artifact_path: str
    base_path: str


def base_model_path() -> Path:
    """The configured base model folder, converting the shipped default on first use."""
    if settings.CHAT_BASE_MODEL_PATH:
        return Path(settings.CHAT_BASE_MODEL_PATH)
    from chatbot.serving.default_model import default_model_convert

    return default_model_convert(Path(settings.DEFAULT_MODEL_DIR))


def serving_target(version: ModelVersion) -> ServingTarget:
    base = str(base_model_path())
    return ServingTarget(
        version_id=version.pk,
        version_number=version.number,
        artifact_path=version.artifact_path or base,
        base_path=version.base_path or base,
    )


def active_serving_target() -> ServingTarget:
    return serving_target(base_version_ensure())


def serving_failure_rollback(*, target: ServingTarget, error: str) -> bool:
    """The active version `target` failed to load: put the version before it back in
    service (the gateway still holds its engine), recording why in the registry. True when
    a retry makes sense (rolled back now, or already by a concurrent reply); False when there
    is nothing earlier to serve."""
    with transaction.atomic():
        active = (
            ModelVersion.objects.select_for_update()
            .filter(status=ModelVersion.Status.ACTIVE)
            .first()
        )
        if active is None or active.pk != target.version_id:
            return active is not None
        try:
            restored = version_rollback(
                actor="serving", reason=f"v{active.number} failed to load: {error}"
            )
        except RegistryError as exc:
            log.error("v%s failed to load and cannot be rolled back: %s", active.number, exc)
            return False
    log.error("v%s failed to load (%s); rolled back to v%s", active.number, error, restored.number)
    return True
