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
    """Where the version's files are as recorded (on the host that trained it); a base
    model folder this host lacks means this host's own configured base model."""
    base = str(base_model_path())
    recorded_base = version.base_path
    return ServingTarget(
        version_id=version.pk,
        version_number=version.number,
        artifact_path=version.artifact_path or base,
        base_path=recorded_base if recorded_base and Path(recorded_base).exists() else base,
    )


def artifact_name(version_number: int) -> str:
    """The version's name in the artifact store."""
    return f"models/v{version_number}"


def artifact_local(version_number: int, recorded: str) -> Path:
    """The version's folder on this host: a verified copy from the artifact store when the
    store has the version (blocking), else the recorded folder (a single host, or a version
    made before the store). A copy that fails its checksum raises ArtifactError."""
    from chatbot.artifacts import ArtifactMissing, artifact_pull

    try:
        return artifact_pull(artifact_name(version_number), source=recorded)
    except ArtifactMissing:
        return Path(recorded)


def target_fetched(target: ServingTarget) -> ServingTarget:
    """`target` with its files on this host (`artifact_local`); the base model is every
    host's own."""
    from dataclasses import replace

    if target.artifact_path == target.base_path:
        return target
    local = artifact_local(target.version_number, target.artifact_path)
    return replace(target, artifact_path=str(local))


def active_serving_target() -> ServingTarget:
    return serving_target(base_version_ensure())


def version_serving_target(version_id: int) -> ServingTarget:
    return serving_target(ModelVersion.objects.get(pk=version_id))


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
