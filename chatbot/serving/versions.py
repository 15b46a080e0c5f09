"""The serving side of model versions: which folder serves which version."""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from training.models import ModelVersion
from training.registry import base_version_ensure


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
