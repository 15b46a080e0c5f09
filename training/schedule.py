"""The default periodic jobs, stored in django-celery-beat so admins can edit them."""

from django_celery_beat.models import IntervalSchedule, PeriodicTask

DEFAULT_JOBS = [
    ("Retrain when enough new feedback", "training.tasks.retrain_if_due", 60),
    ("Fail runs whose worker died", "training.tasks.reap_stale_runs", 5),
    ("Roll back a live version that does worse", "training.tasks.monitor_live_quality", 30),
]


def schedule_ensure() -> list[str]:
    """Create each default job once; an existing job (maybe edited by an admin) is kept."""
    report = []
    for name, task, minutes in DEFAULT_JOBS:
        every, _ = IntervalSchedule.objects.get_or_create(
            every=minutes, period=IntervalSchedule.MINUTES
        )
        job, created = PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": every}
        )
        report.append(f"{'created' if created else 'kept'}: {name} ({job.task})")
    return report
