from django.core.management.base import BaseCommand

from chatbot.knowledge import store


class Command(BaseCommand):
    help = "Rebuild the faiss index from the database (optionally re-embedding every article)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reembed",
            action="store_true",
            help="Re-split and re-embed all articles first (after changing chunking/model).",
        )

    def handle(self, *args, reembed: bool, **options):
        if reembed:
            self.stdout.write(f"Re-embedded {store.articles_reembed()} articles.")
        result = store.index_sync(rebuild=True)
        self.stdout.write(
            f"Index rebuilt: {result.kind}, {result.count} passages at {store.index_path()}"
        )
