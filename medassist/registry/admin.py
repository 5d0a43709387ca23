"""Django admin for model versions, with an audited 'promote' action."""
from django.contrib import admin, messages

from medassist.audit.services import client_ip

from .models import ModelVersion
from .services import model_version_promote


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "role", "name", "format", "status", "size_bytes", "created_at", "promoted_at")
    list_filter = ("role", "status", "format")
    search_fields = ("name", "checksum")
    readonly_fields = ("status", "promoted_at", "created_at", "checksum", "size_bytes")
    actions = ["promote"]

    @admin.action(description="Promote the selected version (retires the active one of its role)")
    def promote(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        version = model_version_promote(version=queryset.get(), actor=request.user, ip=client_ip(request),
                                        reason="promoted in Django admin")
        self.message_user(request, f"{version.label} is now active.", messages.SUCCESS)
