import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chatbot.serving.loading import ModelLoadError
from chatbot.serving.model_server import ConversionError
from chatbot.serving.versions import ServingTarget, base_model_path
from training.data.snapshot import DatasetError, snapshot_get
from training.evaluate import evaluate_artifact, evaluate_served, evaluation_cases, reports_table


class Command(BaseCommand):
    help = (
        "Evaluate one or more models on a snapshot's frozen evaluation set: JSON plus a table. "
        "Use `base` for the base model, e.g. `evaluate base var/artifacts/run-...`."
    )

    def add_arguments(self, parser):
        parser.add_argument("artifacts", nargs="+", help="Artifact folders, or `base`.")
        parser.add_argument("--snapshot", default="", help="Snapshot name (default: newest).")
        parser.add_argument("--limit", type=int, default=200, help="General (seed) cases; 0 = all.")
        parser.add_argument("--max-new-tokens", type=int, default=64)
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--bf16", type=int, choices=(0, 1), default=None, help="Default: auto.")
        parser.add_argument("--base", default="", help="Base model folder (default: configured).")
        parser.add_argument("--json", default="", help="Also write the reports to this file.")
        parser.add_argument(
            "--served",
            action="store_true",
            help="Score each model as customers get it from a model server: its GGUF "
            "(MODEL_SERVER_QUANT, made if missing) on a llama-server of its own.",
        )

    def handle(self, *args, **options):
        base = options["base"] or str(base_model_path())
        try:
            snapshot = snapshot_get(options["snapshot"])
            cases = evaluation_cases(snapshot.pk, limit=options["limit"])
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        reports = []
        for artifact in options["artifacts"]:
            path = base if artifact == "base" else artifact
            try:
                if options["served"]:
                    target = ServingTarget(
                        version_id=0, version_number=0, artifact_path=path, base_path=base
                    )
                    report = evaluate_served(
                        target, cases=cases, max_new_tokens=options["max_new_tokens"]
                    )
                else:
                    report = evaluate_artifact(
                        path,
                        base_path=base,
                        cases=cases,
                        max_new_tokens=options["max_new_tokens"],
                        batch_size=options["batch_size"],
                        bf16=None if options["bf16"] is None else bool(options["bf16"]),
                    )
            except (ModelLoadError, ConversionError) as exc:
                raise CommandError(f"Refused {artifact}: {exc}") from exc
            reports.append(report)
        data = {"snapshot": snapshot.name, "reports": [r.to_dict() for r in reports]}
        self.stdout.write(json.dumps(data, indent=2))
        if options["json"]:
            Path(options["json"]).write_text(json.dumps(data, indent=2))
        self.stdout.write(f"\nSnapshot {snapshot.name}: {len(cases)} evaluation cases\n")
        self.stdout.write(reports_table(reports))
