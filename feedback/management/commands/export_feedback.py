from django.core.management.base import BaseCommand, CommandError

from feedback.exports import EXPORTS, export_records, export_write, jsonl_write


class Command(BaseCommand):
    help = (
        "Write feedback as JSONL: --format sft (reviewed chat examples, corrections applied), "
        "corrections (single-turn question -> correction), dpo (preference pairs) or "
        "regression (evaluation cases)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=sorted(EXPORTS), required=True)
        parser.add_argument(
            "--output",
            "-o",
            help="file name in FEEDBACK_EXPORT_DIR, where deleting a customer's data also "
            "removes their rows (default: standard output, which nothing tracks)",
        )
        parser.add_argument(
            "--include-thumbs-up",
            action="store_true",
            help="sft: also keep bot replies a customer liked that nobody rated bad or flagged",
        )

    def handle(self, *args, format, output, include_thumbs_up, **options):
        if output:
            try:
                path, count = export_write(
                    format=format, name=output, include_thumbs_up=include_thumbs_up
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stderr.write(f"Wrote {count} {format} records to {path}.")
        else:
            records = export_records(format=format, include_thumbs_up=include_thumbs_up)
            jsonl_write(records, self.stdout)
