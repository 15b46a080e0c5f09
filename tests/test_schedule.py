import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from chatbot.celery import app
from chatbot.schedule import DEFAULT_JOBS

pytestmark = pytest.mark.django_db


def test_setup_schedule_creates_every_job_once_and_keeps_admin_edits():
    call_command("setup_schedule")
    assert PeriodicTask.objects.count() == len(DEFAULT_JOBS)
    app.loader.import_default_modules()
    for job in PeriodicTask.objects.all():
        assert job.task in app.tasks, f"{job.task} is not a registered task"
    edited = PeriodicTask.objects.get(task="training.tasks.retrain_if_due")
    edited.enabled = False
    edited.save()
    call_command("setup_schedule")
    assert PeriodicTask.objects.count() == len(DEFAULT_JOBS)
    assert not PeriodicTask.objects.get(pk=edited.pk).enabled
