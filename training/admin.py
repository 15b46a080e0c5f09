from django.contrib import admin

from training.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("number", "status", "parent", "data_snapshot", "created_by", "created_at")
    list_filter = ("status",)
    readonly_fields = ("created_at", "activated_at")
