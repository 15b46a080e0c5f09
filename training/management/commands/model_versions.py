from django.core.management.base import BaseCommand

from training.selectors import version_evaluation, versions_table

COLUMNS = (("semantic_similarity", "sem.sim"), ("rouge_l", "rougeL"), ("val_loss", "valloss"))


def _cell(value) -> str:
    return f"{value:8.4f}" if isinstance(value, int | float) else " " * 8


class Command(BaseCommand):
    help = "List model versions with their status and key metrics."

    def handle(self, *args, **options):
        names = " ".join(f"{label:>8}" for _, label in COLUMNS)
        self.stdout.write(f"{'ver':4} {'status':10} {'parent':>6} {names}  why")
        for v in versions_table():
            evaluation = version_evaluation(v)
            cells = " ".join(_cell(evaluation.get(key)) for key, _ in COLUMNS)
            parent = f"v{v.parent.number}" if v.parent else ""
            self.stdout.write(
                f"v{v.number:<3} {v.status:10} {parent:>6} {cells}  {v.status_reason[:70]}"
            )
