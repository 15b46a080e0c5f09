"""Project wiring and the customer chat app."""

from chatbot.celery import app as celery_app

__all__ = ["celery_app"]
