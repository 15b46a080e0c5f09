"""The Celery application; configuration comes from Django settings (CELERY_*)."""

from celery import Celery

from chatbot.settings_select import settings_module_select

settings_module_select()

app = Celery("chatbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
