import logging

from django.apps import AppConfig
from django.conf import settings

log = logging.getLogger("chatbot")


class ChatbotConfig(AppConfig):
    name = "chatbot"
    verbose_name = "Customer chat"

    def ready(self) -> None:
        if settings.EMBEDDED_SERVICES:
            log.info(
                "Embedded default in use (%s): set DATABASE_URL and REDIS_URL for "
                "PostgreSQL and Redis.",
                ", ".join(settings.EMBEDDED_SERVICES),
            )
