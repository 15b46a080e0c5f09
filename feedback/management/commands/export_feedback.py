from django.core.management.base import BaseCommand

from feedback.exports import EXPORTS, jsonl_write


class Command(BaseCommand):
    help = (
        "Write feedback as JSONL: --format sft (reviewed chat examples, corrections applied), "
        "corrections (single-turn question -> correction), dpo (preference pairs) or "
        "regression (evaluation cases)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=sorted(EXPORTS), required=True)
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")
        parser.add_argument(
            "--include-thumbs-up",
            action="store_true",
            help="sft: also keep bot replies a customer liked that nobody rated bad or flagged",
        )

    def handle(self, *args, format, output, include_thumbs_up, **options):
        kwargs = {"include_thumbs_up": include_thumbs_up} if format == "sft" else {}
        records = EXPORTS[format](**kwargs)
        if output:
            with open(output, "w", encoding="utf-8") as stream:
                count = jsonl_write(records, stream)
            self.stderr.write(f"Wrote {count} {format} records to {output}.")
        else:
            jsonl_write(records, self.stdout)
