"""Every app's default periodic jobs, stored in django-celery-beat so admins can edit them
(Django admin > Periodic tasks). `setup_schedule` creates them once and never overwrites."""

from django_celery_beat.models import IntervalSchedule, PeriodicTask

# (name, task, every N minutes)
DEFAULT_JOBS = [
    ("Retrain when enough new feedback", "training.tasks.retrain_if_due", 60),
    ("Fail runs whose worker died", "training.tasks.reap_stale_runs", 5),
    ("Roll back a live version that does worse", "training.tasks.monitor_live_quality", 30),
    ("Purge conversations past retention", "feedback.conversations_purge", 24 * 60),
    ("Sync the knowledge index with the database", "chatbot.tasks.knowledge_index_sync", 10),
    ("Mark replies lost in flight as failed", "chatbot.tasks.pending_replies_settle", 5),
    ("Delete expired browser sessions", "chatbot.tasks.sessions_clear", 24 * 60),
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
