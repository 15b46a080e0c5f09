from django.conf import settings
from django.core.management.base import BaseCommand

from feedback.services import conversations_purge


class Command(BaseCommand):
    help = "Delete conversations older than the retention period (FEEDBACK_RETENTION_DAYS)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="override the setting")

    def handle(self, *args, days, **options):
        days = settings.FEEDBACK_RETENTION_DAYS if days is None else days
        if days <= 0:
            self.stdout.write("Retention is off (0 days): nothing purged.")
            return
        count = conversations_purge(older_than_days=days)
        self.stdout.write(f"Purged {count} conversations older than {days} days.")
