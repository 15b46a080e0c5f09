import time

from django.core.management.base import BaseCommand, CommandError

from training import runs
from training.models import TrainingRun
from training.selectors import run_eta


class Command(BaseCommand):
    help = "Queue a retraining run on the Celery 'training' queue (one run at a time)."

    def add_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument(
            "--inline", action="store_true", help="run it in this process instead of a worker"
        )
        parser.add_argument("--by", default="cli", help="who asked (recorded on the run)")
        parser.add_argument(
            "--full",
            action="store_true",
            help="train from the base model on all rows, not incrementally from the active one",
        )

    def handle(self, *args, wait=False, inline=False, by="cli", full=False, **options):
        try:
            config = {"incremental": False} if full else {}
            # Inline runs here, so nothing goes to the trainer's queue.
            run = runs.run_request(
                requested_by=by, trigger="cli", config=config, enqueue=not inline
            )
        except runs.TrainingBusy as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Run {run.pk} queued.")
        if inline:
            TrainingRun.objects.filter(pk=run.pk).update(task_id="inline")
            runs.run_execute(run.pk)
            wait = True
        if not wait:
            return
        seen = None
        while True:
            run.refresh_from_db()
            line = f"[{run.status}] {run.stage} {run.step}/{run.total_steps} ({run.progress:.0%})"
            if run.loss_history:
                line += f" loss {run.loss_history[-1].get('loss', float('nan')):.4f}"
            if line != seen:
                eta = run_eta(run)["eta_seconds"]
                self.stdout.write(line + (f" ETA {eta} s" if eta is not None else ""))
                seen = line
            if run.status not in TrainingRun.ACTIVE_STATES:
                break
            time.sleep(2)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error or run.outcome}")
        self.stdout.write(self.style.SUCCESS(run.outcome))
