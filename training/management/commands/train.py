import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.config import config_arguments_add, config_from_options
from training.data.snapshot import DatasetError
from training.pipeline import artifact_dir, starting_point
from training.registry import base_version_ensure
from training.train import TrainingError, finetune


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
        parent, base_path = starting_point(
            base_version_ensure(), incremental=cfg.incremental and not options["from_base"]
        )
        base_path = options["base"] or base_path
        output = Path(options["output"]) if options["output"] else artifact_dir("run")
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
