import os
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatbot.serving.model_server import ConversionError, model_link, server_command
from chatbot.serving.versions import active_serving_target


class Command(BaseCommand):
    help = "Run the model server (llama-server, router mode) with the active version published."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="", help="listen address (default MODEL_SERVER_URL)")

    def handle(self, *args, url: str, **options):
        address = urlsplit(url or settings.MODEL_SERVER_URL or "http://127.0.0.1:8081")
        target = active_serving_target()
        try:
            self.stdout.write(f"Serving v{target.version_number} from {model_link(target)}")
            command = server_command(host=address.hostname or "127.0.0.1", port=address.port or 80)
        except ConversionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.flush()
        os.execv(command[0], command)  # the router is this process: signals reach it directly
