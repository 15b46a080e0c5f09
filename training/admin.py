from django.contrib import admin

from chatbot.admin import RecordAdmin
from training.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(RecordAdmin):
    """View only: versions change through the registry (training.registry), which gates,
    audits and switches serving; the dashboard has the buttons."""

    list_display = ("number", "status", "parent", "data_snapshot", "created_by", "created_at")
    list_filter = ("status",)
