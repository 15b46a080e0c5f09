from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.data.sources import seed_examples_import

# The seed corpus shipped with the project (Bitext, CDLA-Sharing-1.0: see PROVENANCE.md there).
SHIPPED_CORPUS = Path(__file__).resolve().parents[2] / "seed_data" / "bitext-cs-2000.jsonl"


class Command(BaseCommand):
    help = (
        "Import a JSONL file of customer/agent turns as seed corpus (idempotent); with no "
        "path, the seed corpus shipped in training/seed_data."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, nargs="?", default=SHIPPED_CORPUS)
        parser.add_argument("--source", default="", help="Corpus name (default: file stem).")

    def handle(self, *args, path: Path, source: str, **options):
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        try:
            created, skipped = seed_examples_import(path=path, source=source)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Imported {created} seed examples ({skipped} skipped) from {path}.")
