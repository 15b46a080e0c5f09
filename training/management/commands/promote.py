from django.core.management.base import BaseCommand, CommandError

from training.models import ModelVersion
from training.registry import RegistryError, version_promote


class Command(BaseCommand):
    help = "Promote a model version (a candidate; --override for a rejected one)."

    def add_arguments(self, parser):
        parser.add_argument("version", type=int, help="version number, e.g. 3")
        parser.add_argument("--override", action="store_true")
        parser.add_argument("--reason", default="promoted from the command line")
        parser.add_argument("--by", default="cli")

    def handle(self, *args, version, override, reason, by, **options):
        try:
            target = ModelVersion.objects.get(number=version)
            promoted = version_promote(
                version_id=target.pk, actor=by, reason=reason, override=override
            )
        except ModelVersion.DoesNotExist as exc:
            raise CommandError(f"There is no v{version}.") from exc
        except RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"v{promoted.number} is now active."))
