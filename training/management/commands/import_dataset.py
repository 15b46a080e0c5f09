from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.data.sources import seed_examples_import


class Command(BaseCommand):
    help = "Import a JSONL file of customer/agent turns as seed corpus (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--source", default="", help="Corpus name (default: file stem).")

    def handle(self, *args, path: Path, source: str, **options):
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        try:
            created, skipped = seed_examples_import(path=path, source=source)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Imported {created} seed examples ({skipped} skipped) from {path}.")
