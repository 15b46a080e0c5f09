import json

from django.core.management.base import BaseCommand, CommandError

from training.config import config_arguments_add, config_from_options
from training.data.snapshot import DatasetError, dataset_build


class Command(BaseCommand):
    help = "Clean everything the app knows into a versioned training snapshot, with a report."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="", help="Snapshot name (default: dated).")
        config_arguments_add(parser)

    def handle(self, *args, **options):
        cfg = config_from_options(options)
        try:
            snapshot = dataset_build(cfg=cfg, name=options["name"])
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(snapshot.report, indent=2))
        self.stdout.write(
            f"Snapshot {snapshot.name}: {snapshot.train_count} train, "
            f"{snapshot.validation_count} validation, {snapshot.preference_count} preference "
            f"pairs in {snapshot.path}"
        )
