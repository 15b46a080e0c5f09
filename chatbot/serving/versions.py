"""The serving side of model versions: which folder serves which version.

Serving reads the registry (training's) through one small interface, `VersionRegistry`:
the active version, read only, and the rollback when a version fails to load. The training
app connects its implementation when Django starts (training/apps.py), so chatbot never
imports training.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from django.conf import settings


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


class Version(Protocol):
    """A registered model version as serving sees it (training.models.ModelVersion)."""

    pk: int
    number: int
    artifact_path: str
    base_path: str


def serving_target(version: Version) -> ServingTarget:
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


class VersionRegistry(Protocol):
    def active_version(self) -> Version | None:
        """The version in service; None only before the registry has any (read only)."""
        ...

    def version_get(self, version_id: int) -> Version | None:
        """A version by id (read only)."""
        ...

    def load_failure_rollback(self, *, version_id: int, error: str) -> bool:
        """Version `version_id` failed to load: put the one before it back in service if it
        is still the active one. True when a retry makes sense (rolled back now, or already
        by a concurrent reply); False when there is nothing earlier to serve."""
        ...


_registry: VersionRegistry | None = None


def registry_connect(registry: VersionRegistry) -> None:
    """Called once when Django starts, by the app that owns the registry (training)."""
    global _registry
    _registry = registry


def _connected() -> VersionRegistry:
    if _registry is None:
        raise RuntimeError("No model-version registry connected (is 'training' installed?)")
    return _registry


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
    """What serves the next reply: the active version (a read; never writes)."""
    version = _connected().active_version()
    if version is None:
        raise RuntimeError("The model-version registry is empty: run `manage.py migrate`.")
    return serving_target(version)


def version_serving_target(version_id: int) -> ServingTarget:
    """What serves a reply asked of version `version_id` (a read)."""
    version = _connected().version_get(version_id)
    if version is None:
        raise LookupError(f"No model version with id {version_id}.")
    return serving_target(version)


def serving_failure_rollback(*, target: ServingTarget, error: str) -> bool:
    """The active version `target` failed to load: the registry puts the version before it
    back in service (the gateway still holds its engine). See VersionRegistry."""
    return _connected().load_failure_rollback(version_id=target.version_id, error=error)
