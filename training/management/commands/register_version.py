from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chatbot.serving.loading import ModelLoadError, artifact_check
from chatbot.serving.model_server import ConversionError, version_files_publish
from chatbot.serving.versions import base_model_path, serving_target
from training.models import ModelVersion
from training.registry import base_version_ensure, version_create, version_reject


class Command(BaseCommand):
    help = (
        "Register a model folder made elsewhere (a LoRA adapter or a full model) as a candidate "
        "version: its files go to the artifact store (and its GGUF is made when model servers "
        "serve), as a retraining run does. Promote it with `promote`."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--base", default="", help="its base model (default: configured)")
        parser.add_argument("--by", default="cli")

    def handle(self, *args, folder: Path, base: str, by: str, **options):
        folder = folder.resolve()
        try:
            artifact_check(folder)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from exc
        version = version_create(
            parent=base_version_ensure(),
            artifact_path=str(folder),
            base_path=base or str(base_model_path()),
            created_by=f"registered by {by}",
        )
        try:
            version_files_publish(serving_target(version))
        except (ConversionError, ModelLoadError, OSError) as exc:
            version_reject(version_id=version.pk, actor=by, reason=f"could not publish: {exc}")
            raise CommandError(f"v{version.number} could not be published: {exc}") from exc
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.CANDIDATE)
        self.stdout.write(self.style.SUCCESS(f"v{version.number} registered as a candidate."))
