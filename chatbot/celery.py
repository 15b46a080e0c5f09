"""The Celery application; configuration comes from Django settings (CELERY_*)."""

import logging
import os
import sys

from celery import Celery
from celery.signals import celeryd_init

from chatbot.settings_select import settings_module_select

settings_module_select()

app = Celery("chatbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


@celeryd_init.connect
def _background_threads(**kwargs) -> None:
    """A worker's torch threads sleep while they wait instead of spinning (libgomp reads this
    when torch loads, later in a task): a spinning torch job beside the model server stalled
    its replies even in the idle CPU class (training/priority.py, bench_contention.py)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        log.warning("torch loaded before the worker started: its threads may spin")
