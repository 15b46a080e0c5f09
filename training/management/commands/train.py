import json
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.config import config_arguments_add, config_from_options
from training.data.snapshot import DatasetError
from training.train import TrainingError, active_starting_point, finetune


class Command(BaseCommand):
    help = (
        "Fine-tune a LoRA adapter on a dataset snapshot, starting from the active model "
        "version. Re-running with the same --output resumes from the last checkpoint."
    )

    def add_arguments(self, parser):
        parser.add_argument("--snapshot", default="", help="Snapshot name (default: newest).")
        parser.add_argument("--output", default="", help="Artifact folder (default: dated).")
        parser.add_argument("--base", default="", help="Base model folder (default: active).")
        parser.add_argument(
            "--from-base",
            action="store_true",
            help="Start from the base model, not from the active version's adapter.",
        )
        config_arguments_add(parser)

    def handle(self, *args, **options):
        cfg = config_from_options(options)
        parent, base_path = active_starting_point()
        if options["from_base"]:
            parent = None
        base_path = options["base"] or base_path
        output = Path(
            options["output"]
            or Path(settings.ARTIFACTS_DIR) / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        )
        self.stdout.write(f"Training from {parent or 'the base model'} ({base_path}) -> {output}")
        try:
            result = finetune(
                cfg,
                snapshot_id=options["snapshot"],
                base_path=base_path,
                parent_artifact=parent,
                output_dir=output,
            )
        except (TrainingError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(result.metrics, indent=2))
        self.stdout.write(f"Artifact: {result.artifact_path} ({result.steps} steps)")
