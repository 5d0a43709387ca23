"""Django admin for model versions: checked promotion, forced promotion with a reason, rollback. All audited."""
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html

from medassist.audit.services import client_ip

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
    actions = ["promote", "force_promote", "rollback_role"]

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
                  permissions=["change"])
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
            self.message_user(request, f"{version.label} was not promoted: it scores worse than the active "
                                       f"{exc.active.label}.", messages.ERROR)
            for line in exc.comparison.worse:
                self.message_user(request, line, messages.ERROR)
            self.message_user(request, "To promote it anyway, select it and run 'Force promote', giving a reason.",
                              messages.WARNING)
            return
        self.message_user(request, f"{version.label} is now active.", messages.SUCCESS)

    @admin.action(description="Force promote the selected version (asks for a reason)", permissions=["change"])
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

    @admin.action(description="Roll back this role to the previously active version", permissions=["change"])
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
