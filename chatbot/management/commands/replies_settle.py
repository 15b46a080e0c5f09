from django.core.management.base import BaseCommand
from django.utils import timezone

from chatbot.services import pending_replies_settle


class Command(BaseCommand):
    help = (
        "Mark failed the customer messages left without a reply (run before the web process "
        "starts: replies in flight when it stopped are gone; each conversation is told)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            default=0,
            help="only messages at least this many seconds old (default: all)",
        )

    def handle(self, *args, older_than, **options):
        before = timezone.now() - timezone.timedelta(seconds=older_than)
        marked = pending_replies_settle(before=before)
        self.stdout.write(f"{marked} unanswered customer messages marked as failed replies")
