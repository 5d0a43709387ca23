"""Job reads. Object-level authorization lives here: users see their own jobs, staff see all."""
from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from .models import Job, JobItem


def job_list(*, user) -> QuerySet[Job]:
    jobs = Job.objects.select_related("owner", "model_version")
    return jobs if user.is_staff else jobs.filter(owner=user)


def job_get(*, user, job_id) -> Job:
    """The job, or 404 when it does not exist *or* belongs to someone else (no existence leak)."""
    job = job_list(user=user).filter(pk=job_id).first()
    if job is None:
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
