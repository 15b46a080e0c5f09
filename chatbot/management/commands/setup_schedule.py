from django.core.management.base import BaseCommand

from chatbot.schedule import schedule_ensure


class Command(BaseCommand):
    help = "Create the default Celery beat schedule (kept if admins already edited it)."

    def handle(self, *args, **options):
        for line in schedule_ensure():
            self.stdout.write(line)
