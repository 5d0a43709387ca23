"""Django admin for model versions: checked promotion, forced promotion with a reason, rollback. All audited.

Promotion and rollback need the ``registry.promote_modelversion`` permission, as in the API (staff
status and the plain change permission are not enough). What identifies a registered artifact (its
path, config, checksum, role, name and format) is read-only once the version exists: the checksum is
what the workers verify, and changing the path or config would serve files nobody registered.
"""
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html

from medassist.audit.services import client_ip

from .apis import PROMOTE_PERMISSION
from .models import ModelVersion
from .services import (
    PromotionRefused,
    RollbackImpossible,
    compare_versions,
    model_version_active,
    model_version_promote,
    model_version_rollback,
)


class ForcePromoteForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000,
                             help_text="Why this version should be active despite its scores; kept in the audit trail.")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("id", "role", "name", "format", "status", "size_bytes", "created_at", "promoted_at")
    list_filter = ("role", "status", "format")
    search_fields = ("name", "checksum")
    # Metrics are what promotion is checked against: shown, never edited here.
    exclude = ("metrics",)
    readonly_fields = ("status", "promoted_at", "created_at", "checksum", "size_bytes", "metrics_json")
    # Fixed at registration (models_prepare, models_register, a finetune run).
    registered_fields = ("role", "name", "format", "artifact_path", "config", "checksum", "parent")
    actions = ["promote", "force_promote", "rollback_role"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        return tuple(dict.fromkeys((*self.readonly_fields, *self.registered_fields)))

    def has_promote_permission(self, request) -> bool:
        return request.user.is_active and request.user.has_perm(PROMOTE_PERMISSION)

    @admin.display(description="metrics")
    def metrics_json(self, obj):
        return format_html('<pre style="margin:0">{}</pre>', json.dumps(obj.metrics, indent=2, sort_keys=True,
                                                                        ensure_ascii=False))

    def _one(self, request, queryset, verb: str) -> ModelVersion | None:
        if queryset.count() != 1:
            self.message_user(request, f"Select exactly one version to {verb}.", messages.ERROR)
            return None
        return queryset.get()

    @admin.action(description="Promote the selected version (checked against the active one's scores)",
                  permissions=["promote"])
    def promote(self, request, queryset):
        version = self._one(request, queryset, "promote")
        if version is None:
            return
        if version.status == ModelVersion.Status.ACTIVE:
            self.message_user(request, f"{version.label} is already active.", messages.INFO)
            return
        try:
            version = model_version_promote(version=version, actor=request.user, ip=client_ip(request),
                                            reason="promoted in Django admin")
        except PromotionRefused as exc:
            self.message_user(request, f"Not promoted: {exc.summary}.", messages.ERROR)
            for line in exc.comparison.worse:
                self.message_user(request, line, messages.ERROR)
            self.message_user(request, "To promote it anyway, select it and run 'Force promote', giving a reason.",
                              messages.WARNING)
            return
        self.message_user(request, f"{version.label} is now active.", messages.SUCCESS)

    @admin.action(description="Force promote the selected version (asks for a reason)", permissions=["promote"])
    def force_promote(self, request, queryset):
        version = self._one(request, queryset, "force-promote")
        if version is None:
            return None
        if version.status == ModelVersion.Status.ACTIVE:
            self.message_user(request, f"{version.label} is already active.", messages.INFO)
            return None
        # The confirmation page posts back to this action with post=yes and the reason.
        form = ForcePromoteForm(request.POST if request.POST.get("post") else None)
        if form.is_bound and form.is_valid():
            version = model_version_promote(version=version, actor=request.user, ip=client_ip(request),
                                            reason=form.cleaned_data["reason"], force=True)
            self.message_user(request, f"{version.label} is now active (forced).", messages.SUCCESS)
            return None
        active = model_version_active(role=version.role)
        comparison = compare_versions(version, active) if active and active.pk != version.pk else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Force promote a model version",
            "opts": self.model._meta,
            "version": version,
            "active": active,
            "comparison": comparison,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/registry/modelversion/force_promote.html", context)

    @admin.action(description="Roll back this role to the previously active version", permissions=["promote"])
    def rollback_role(self, request, queryset):
        version = self._one(request, queryset, "roll back its role")
        if version is None:
            return
        try:
            restored = model_version_rollback(role=version.role, actor=request.user, ip=client_ip(request),
                                              reason="rolled back in Django admin")
        except RollbackImpossible as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{restored.label} is active again.", messages.SUCCESS)
