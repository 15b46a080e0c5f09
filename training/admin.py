import json
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from chatbot.admin import RecordAdmin
from training import selectors
from training.data.snapshot import PREFERENCES_FILE, SPLIT_FILES, DatasetError, snapshot_rows
from training.models import DatasetSnapshot, ModelVersion, TrainingRun, VersionEvent


@admin.register(ModelVersion)
class ModelVersionAdmin(RecordAdmin):
    """View only: versions change through the registry (training.registry), which gates,
    audits and switches serving; the dashboard has the buttons."""

    list_display = ("number", "status", "parent", "data_snapshot", "created_by", "created_at")
    list_filter = ("status",)


class TrainingRecordAdmin(RecordAdmin):
    """View only, never deleted here: runs, events and snapshots are written by the training
    pipeline and the registry (audited there); admin shows them."""


def _version_link(version: ModelVersion | None) -> str:
    if version is None:
        return "-"
    url = reverse("admin:training_modelversion_change", args=[version.pk])
    return format_html('<a href="{}">v{} ({})</a>', url, version.number, version.status)


def _rows_url(snapshot: DatasetSnapshot, **query) -> str:
    url = reverse("admin:training_datasetsnapshot_rows", args=[snapshot.pk])
    return url + ("?" + urlencode(query) if query else "")


def _pretty(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


@admin.register(VersionEvent)
class VersionEventAdmin(TrainingRecordAdmin):
    list_display = ("at", "version_link", "action", "actor", "reason")
    list_filter = ("action", "actor")
    search_fields = ("version__number", "actor", "reason")
    date_hierarchy = "at"
    list_select_related = ("version",)
    fields = ("at", "version_link", "action", "actor", "reason")
    readonly_fields = fields

    @admin.display(description="version", ordering="version__number")
    def version_link(self, event: VersionEvent) -> str:
        return _version_link(event.version)


@admin.register(TrainingRun)
class TrainingRunAdmin(TrainingRecordAdmin):
    list_display = (
        "id",
        "status",
        "trigger",
        "requested_by",
        "stage",
        "steps",
        "candidate_link",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "trigger", "requested_by")
    search_fields = ("id", "requested_by", "outcome", "error")
    date_hierarchy = "created_at"
    list_select_related = ("candidate",)
    fields = (
        "status",
        "trigger",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "stage",
        "stage_started_at",
        "steps",
        "progress",
        "candidate_link",
        "trained_on",
        "outcome",
        "error",
        "stage_timings_pretty",
        "loss_history_pretty",
        "config_pretty",
        "worker",
        "heartbeat_at",
        "task_id",
    )
    readonly_fields = fields

    @admin.display(description="steps")
    def steps(self, run: TrainingRun) -> str:
        return f"{run.step}/{run.total_steps}" if run.total_steps else "-"

    @admin.display(description="candidate", ordering="candidate__number")
    def candidate_link(self, run: TrainingRun) -> str:
        return _version_link(run.candidate)

    @admin.display(description="trained on")
    def trained_on(self, run: TrainingRun) -> str:
        candidate = run.candidate
        snapshot = (
            DatasetSnapshot.objects.filter(name=candidate.data_snapshot).first()
            if candidate
            else None
        )
        if snapshot is None or candidate is None:
            return "-"
        return format_html(
            '<a href="{}">the rows v{} was trained on</a> (snapshot {})',
            _rows_url(snapshot, version=candidate.number),
            candidate.number,
            snapshot.name,
        )

    @admin.display(description="stage timings (s)")
    def stage_timings_pretty(self, run: TrainingRun) -> str:
        return _pretty(run.stage_timings)

    @admin.display(description="loss history")
    def loss_history_pretty(self, run: TrainingRun) -> str:
        return _pretty(run.loss_history)

    @admin.display(description="config")
    def config_pretty(self, run: TrainingRun) -> str:
        return _pretty(run.config)


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(TrainingRecordAdmin):
    list_display = (
        "name",
        "rows",
        "train_count",
        "validation_count",
        "preference_count",
        "versions",
        "created_at",
    )
    search_fields = ("name",)
    date_hierarchy = "created_at"
    fields = (
        "name",
        "created_at",
        "rows",
        "train_count",
        "validation_count",
        "preference_count",
        "versions",
        "browse",
        "path",
        "report_pretty",
        "config_pretty",
    )
    readonly_fields = fields
    rows_per_page = 50

    @admin.display(description="rows (train + validation)")
    def rows(self, snapshot: DatasetSnapshot) -> int:
        return snapshot.train_count + snapshot.validation_count

    @admin.display(description="versions trained on it")
    def versions(self, snapshot: DatasetSnapshot) -> str:
        links = [
            (_version_link(v), _rows_url(snapshot, version=v.number))
            for v in selectors.snapshot_versions(snapshot.name)
        ]
        if not links:
            return "-"
        return format_html_join(", ", '{} (<a href="{}">its rows</a>)', links)

    @admin.display(description="browse rows")
    def browse(self, snapshot: DatasetSnapshot) -> str:
        return format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            ((_rows_url(snapshot, split=split), split) for split in self.splits()),
        )

    @admin.display(description="cleaning report")
    def report_pretty(self, snapshot: DatasetSnapshot) -> str:
        return _pretty(snapshot.report)

    @admin.display(description="data config")
    def config_pretty(self, snapshot: DatasetSnapshot) -> str:
        return _pretty(snapshot.config)

    @staticmethod
    def splits() -> list[str]:
        return [*SPLIT_FILES, PREFERENCES_FILE.removesuffix(".jsonl")]

    def get_urls(self):
        rows = path(
            "<path:object_id>/rows/",
            self.admin_site.admin_view(self.rows_view),
            name="training_datasetsnapshot_rows",
        )
        return [rows, *super().get_urls()]

    def rows_view(self, request, object_id: str):
        """A snapshot's rows, one split at a time, or the rows one version was trained on
        (`?version=N`); searchable (`?q=`) and paged."""
        snapshot = self.get_object(request, object_id)
        if snapshot is None:
            raise Http404("No such dataset snapshot.")
        if not self.has_view_permission(request, snapshot):
            raise PermissionDenied
        split = request.GET.get("split", "train")
        if split not in self.splits():
            raise Http404(f"Unknown split {split[:40]!r}.")
        version, mix, error = None, None, ""
        try:
            if request.GET.get("version"):
                version = ModelVersion.objects.filter(
                    number=request.GET["version"], data_snapshot=snapshot.name
                ).first()
                if version is None:
                    raise Http404("No version of that number was trained on this snapshot.")
                rows, mix = selectors.version_training_rows(version)
            else:
                rows = snapshot_rows(snapshot, split)
        except (DatasetError, ValueError) as exc:
            rows, error = [], str(exc)
        query = request.GET.get("q", "").strip()
        if query:
            rows = [row for row in rows if query.lower() in json.dumps(row).lower()]
        page = Paginator(rows, self.rows_per_page).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Rows of {snapshot.name}",
            "snapshot": snapshot,
            "split": split,
            "splits": self.splits(),
            "version": version,
            "mix": mix,
            "error": error,
            "query": query,
            "page": page,
            "rows": [(row, json.dumps(row, indent=2, ensure_ascii=False)) for row in page],
            "keep": {k: v for k, v in request.GET.items() if k in ("split", "version", "q")},
        }
        return TemplateResponse(request, "admin/training/snapshot_rows.html", context)
