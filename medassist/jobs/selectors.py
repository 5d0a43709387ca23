"""Job reads. Object-level authorization lives here: users see their own jobs; only a user with the
``jobs.view_all_jobs`` permission (given through a group) sees everyone's. Staff status alone does not:
the API and the Django admin both read jobs through ``job_list``."""
from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from medassist.audit.services import audit_record

from .models import Job, JobItem

VIEW_ALL_JOBS = "jobs.view_all_jobs"


def can_view_all_jobs(user) -> bool:
    return bool(user and user.is_active and user.has_perm(VIEW_ALL_JOBS))


def job_list(*, user) -> QuerySet[Job]:
    jobs = Job.objects.select_related("owner", "model_version")
    if not getattr(user, "is_authenticated", False):  # anonymous (e.g. the schema generator): nothing
        return jobs.none()
    return jobs if can_view_all_jobs(user) else jobs.filter(owner=user)


def job_get(*, user, job_id, ip: str | None = None) -> Job:
    """The job, or 404 when it does not exist *or* belongs to someone else (no existence leak).

    A 404 for a job that exists but is another user's is probing, and is audited (issue 13:
    ``job.not_found``, with the caller's ``ip``); the answer stays the same 404.
    """
    job = job_list(user=user).filter(pk=job_id).first()
    if job is None:
        if Job.objects.filter(pk=job_id).exists():
            audit_record(action="job.not_found", actor=user, object_type="jobs.job", object_id=job_id, ip=ip,
                         detail={"reason": "another user's job"})
        raise Http404("No such job.")
    return job


def job_items(*, job: Job, status: str | None = None) -> QuerySet[JobItem]:
    items = JobItem.objects.filter(job=job).order_by("index")
    return items.filter(status=status) if status else items


def job_progress(job: Job) -> dict:
    """Counts, percent done and a naive ETA from the rate so far."""
    processed = job.processed_items
    percent = round(100.0 * processed / job.total_items, 1) if job.total_items else 100.0
    eta = None
    if job.started_at and not job.is_final and processed:
        from django.utils import timezone

        elapsed = (timezone.now() - job.started_at).total_seconds()
        eta = round(elapsed / processed * (job.total_items - processed), 1)
    return {
        "total": job.total_items, "succeeded": job.succeeded_items, "failed": job.failed_items,
        "processed": processed, "remaining": job.total_items - processed, "percent": percent, "eta_seconds": eta,
    }
