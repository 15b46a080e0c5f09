from django.core.management.base import BaseCommand, CommandError

from training.models import ModelVersion
from training.registry import RegistryError, version_rollback


class Command(BaseCommand):
    help = "Put the previously active model version (or --to VERSION) back in service."

    def add_arguments(self, parser):
        parser.add_argument("--to", type=int, dest="to_version", help="version number")
        parser.add_argument("--reason", default="rolled back from the command line")
        parser.add_argument("--by", default="cli")

    def handle(self, *args, to_version=None, reason="", by="cli", **options):
        try:
            target_id = (
                ModelVersion.objects.get(number=to_version).pk if to_version is not None else None
            )
            restored = version_rollback(actor=by, reason=reason, to_version_id=target_id)
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(f"There is no v{to_version}.") from exc
        except RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"v{restored.number} is active again."))
