"""Read-only Django admin for the audit trail (filters, search, CSV export, chain verification), and the
admin login form that says when the failed-login throttle refused an attempt."""
import csv

from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpResponse

from .backends import BLOCKED_FLAG
from .models import AuditEvent
from .services import audit_record, audit_verify_chain, client_ip


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "action", "actor_username", "object_type", "object_id", "model_version", "ip")
    list_filter = ("action", "actor_username", ("created_at", admin.DateFieldListFilter))
    search_fields = ("actor_username", "object_id", "object_type", "model_version", "ip")
    date_hierarchy = "created_at"
    actions = ["export_csv", "verify_chain"]
    list_per_page = 100

    # Append-only: nobody, superusers included, adds, edits or deletes events here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Export selected events as CSV")
    def export_csv(self, request, queryset):
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
        fields = ["id", "created_at", "action", "actor_id", "actor_username", "object_type", "object_id",
                  "model_version", "ip", "detail", "prev_hash", "hash"]
        writer = csv.writer(response)
        writer.writerow(fields)
        for event in queryset.order_by("id").iterator():
            writer.writerow([getattr(event, f) for f in fields])
        audit_record(action="results.export", actor=request.user, object_type="audit.auditevent",
                     ip=client_ip(request), detail={"format": "csv", "rows": queryset.count()})
        return response

    @admin.action(description="Verify the whole hash chain")
    def verify_chain(self, request, queryset):
        report = audit_verify_chain()
        audit_record(action="audit.verify", actor=request.user, ip=client_ip(request),
                     detail={"ok": report.ok, "checked": report.checked, "broken_id": report.broken_id,
                             "broken_count": report.broken_count,
                             "broken_ids": [b.id for b in report.broken[:100]]})
        if report.ok:
            self.message_user(request, f"Audit chain OK: {report.checked} events verified.", messages.SUCCESS)
        else:
            ids = ", ".join(str(b.id) for b in report.broken[:20])
            self.message_user(request, f"Audit chain BROKEN at event {report.broken_id}: {report.reason}. "
                              f"{report.broken_count} broken events ({ids}).", messages.ERROR)


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The admin login form, saying so when the failed-login throttle (backends.py) refused the attempt."""

    def get_invalid_login_error(self):
        if getattr(self.request, BLOCKED_FLAG, False):
            return ValidationError("Too many failed logins from this address or for this account. "
                                   "Try again in a few minutes.", code="throttled")
        return super().get_invalid_login_error()


admin.site.login_form = ThrottledAdminLoginForm
