from django.core.management.base import BaseCommand

from feedback.exports import EXPORTS, jsonl_write


class Command(BaseCommand):
    help = (
        "Write feedback as JSONL: --format sft (chat examples, corrections applied), "
        "dpo (preference pairs) or regression (evaluation cases)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=sorted(EXPORTS), required=True)
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")

    def handle(self, *args, format, output, **options):
        records = EXPORTS[format]()
        if output:
            with open(output, "w", encoding="utf-8") as stream:
                count = jsonl_write(records, stream)
            self.stderr.write(f"Wrote {count} {format} records to {output}.")
        else:
            jsonl_write(records, self.stdout)
