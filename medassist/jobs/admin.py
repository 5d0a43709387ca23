"""Django admin for jobs: read-only item inline (first 200 items) and filters."""
from django.contrib import admin

from medassist.audit.services import audit_record, client_ip

from .models import Job, JobItem
from .selectors import job_list


class JobItemInline(admin.TabularInline):
    model = JobItem
    fields = ("index", "status", "error", "duration_ms", "attempts", "finished_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    ordering = ("index",)

    def get_queryset(self, request):
        # A job can hold 50,000 items: show the first 200 here; the API pages through all of them.
        queryset = super().get_queryset(request)
        job_id = getattr(request, "_medassist_job_id", None)
        if job_id is None:
            return queryset.none()
        first = queryset.filter(job_id=job_id).order_by("index").values_list("id", flat=True)[:200]
        return queryset.filter(id__in=list(first))

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "owner", "total_items", "succeeded_items", "failed_items", "created_at",
                    "finished_at")
    list_filter = ("kind", "status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "owner__username", "idempotency_key")
    readonly_fields = [f.name for f in Job._meta.fields]
    inlines = [JobItemInline]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def get_queryset(self, request):
        # The API's rule (selectors.job_list): everyone's jobs only with jobs.view_all_jobs; staff
        # status and the model's view permission alone show a user their own jobs.
        return job_list(user=request.user)

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        # Audited (issue 13): a job list read through the admin, like the API's.
        if getattr(response, "status_code", None) == 200 and hasattr(response, "context_data"):
            changelist = response.context_data.get("cl")
            shown = [str(job.pk) for job in changelist.result_list][:100] if changelist else []
            audit_record(action="job.list", actor=request.user, object_type="jobs.job", ip=client_ip(request),
                         detail={"via": "admin", "filters": {k: str(v)[:40] for k, v in request.GET.items()}
                                 if request.GET else {}, "count": changelist.result_count if changelist else None,
                                 "job_ids": shown})
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        request._medassist_job_id = object_id  # lets the inline show only this job's first items
        return super().change_view(request, object_id, form_url, extra_context)
