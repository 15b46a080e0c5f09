import os
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatbot.serving.cluster import static_urls
from chatbot.serving.host import HostState, host_run
from chatbot.serving.model_server import (
    ConversionError,
    model_link,
    server_command,
    server_env,
    server_spawn,
)
from chatbot.serving.versions import active_serving_target


class Command(BaseCommand):
    help = (
        "Run the model server (llama-server, router mode) with the active version published; "
        "with Redis, also announce it and load each promoted version (README 'Scaling out')."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="", help="listen address (default MODEL_SERVER_URL)")
        parser.add_argument(
            "--advertise",
            default="",
            help="address web processes use (default MODEL_SERVER_ADVERTISE_URL, else --url)",
        )

    def handle(self, *args, url: str, advertise: str, **options):
        listen = url or next(iter(static_urls()), "") or "http://127.0.0.1:8081"
        address = urlsplit(listen)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        target = active_serving_target()
        try:
            self.stdout.write(f"Serving v{target.version_number} from {model_link(target)}")
            command = server_command(host=host, port=port)
        except ConversionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.flush()
        if not settings.REDIS_URL:
            # One host, nothing to announce to: the router is this process, signals reach it.
            os.execve(command[0], command, server_env())
        log_path = Path(settings.DATA_DIR) / f"llama-server-{port}.log"
        proc = server_spawn(host=host, port=port, log_path=log_path)
        local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        public = advertise or settings.MODEL_SERVER_ADVERTISE_URL or local
        self.stdout.write(f"llama-server up (log {log_path}); announcing {public}")
        self.stdout.flush()
        code = host_run(proc, HostState(url=local, advertise=public.rstrip("/")))
        if code:
            raise CommandError(f"llama-server stopped (exit {code})")
