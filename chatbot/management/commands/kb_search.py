from django.core.management.base import BaseCommand

from chatbot.knowledge.selectors import passages_search


class Command(BaseCommand):
    help = "Print the knowledge-base passages nearest to a question, with titles and scores."

    def add_arguments(self, parser):
        parser.add_argument("question")
        parser.add_argument("-k", type=int, default=5, help="How many passages (default 5).")
        parser.add_argument(
            "--min-score",
            type=float,
            default=None,
            help="Similarity threshold (default: KNOWLEDGE_MIN_SCORE; 0 shows everything).",
        )

    def handle(self, *args, question: str, k: int, min_score: float | None, **options):
        hits = passages_search(query=question, k=k, min_score=min_score)
        if not hits:
            self.stdout.write("Nothing relevant above the similarity threshold.")
        for rank, hit in enumerate(hits, 1):
            text = hit.text if len(hit.text) <= 160 else hit.text[:157] + "..."
            self.stdout.write(f"{rank}. {hit.score:.3f}  {hit.title}  [{hit.kind}]\n   {text}")
