from django.contrib import admin

from training.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """View only: versions change through the registry (training.registry), which gates,
    audits and switches serving; the dashboard has the buttons."""

    list_display = ("number", "status", "parent", "data_snapshot", "created_by", "created_at")
    list_filter = ("status",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
