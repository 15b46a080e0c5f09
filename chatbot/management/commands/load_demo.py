import json
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from chatbot.models import Conversation, Message

DEMO_SESSION = "demo-data"


class Command(BaseCommand):
    help = "Load a few demo conversations (idempotent: skipped when already loaded)."

    @transaction.atomic
    def handle(self, *args, **options):
        if Conversation.objects.filter(session_key=DEMO_SESSION).exists():
            self.stdout.write("Demo conversations already loaded.")
            return
        demo = json.loads((Path(__file__).parents[2] / "demo" / "conversations.json").read_text())
        start = timezone.now() - timedelta(hours=len(demo))
        for i, turns in enumerate(demo):
            conversation = Conversation.objects.create(
                session_key=DEMO_SESSION, status=Conversation.Status.CLOSED
            )
            for j, (role, text) in enumerate(turns):
                Message.objects.create(
                    conversation=conversation,
                    role=role,
                    text=text,
                    created_at=start + timedelta(hours=i, seconds=20 * j),
                )
        self.stdout.write(f"Loaded {len(demo)} demo conversations.")
