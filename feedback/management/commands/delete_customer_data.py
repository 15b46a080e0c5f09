from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from chatbot.models import Conversation
from feedback.services import customer_data_delete


class Command(BaseCommand):
    help = "Delete everything stored about one customer, found by session or by a conversation."

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--session", help="the customer's session key")
        who.add_argument("--conversation", help="any conversation id of that customer")

    def handle(self, *args, session, conversation, **options):
        if conversation:
            try:
                session = Conversation.objects.get(pk=conversation).session_key
            except (Conversation.DoesNotExist, ValueError, ValidationError) as exc:
                raise CommandError(f"No conversation {conversation}.") from exc
        counts = customer_data_delete(session_key=session)
        self.stdout.write(
            f"Deleted {counts['conversations']} conversations, {counts['messages']} messages, "
            f"{counts['regression_cases']} regression cases, "
            f"{counts['snapshot_rows']} dataset snapshot rows."
        )
