from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chatbot.knowledge import services, store


class Command(BaseCommand):
    help = (
        "Import a folder of Markdown files as knowledge-base articles (one per *.md file, "
        "keyed by file name) and index them now."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument(
            "--keep-existing",
            action="store_true",
            help="Leave articles that already exist alone (e.g. edited in the admin).",
        )

    def handle(self, *args, folder: Path, keep_existing: bool, **options):
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        try:
            results = services.kb_import_dir(folder=folder, keep_existing=keep_existing)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        changed = [article for article, did_change in results if did_change]
        # Index here rather than wait for the worker: the command's caller wants it ready.
        # The tasks enqueued on commit then find nothing left to do.
        for article, _ in results:
            store.article_passages_refresh(article_id=article.pk)
        result = store.index_sync()
        self.stdout.write(
            f"Imported {len(results)} articles ({len(changed)} new or changed); "
            f"index: {result.kind}, {result.count} passages."
        )
