"""Privacy (issue 13): deleting what users sent and what we computed from it, keeping the record.

- ``job_purge``: delete a job's items (inputs, results, errors) and the free text on the job row
  (string params such as a literature ``question``, the upload's file name and skipped examples,
  the error message); keep the row, its counts, model versions and every audit event; status
  becomes ``purged``. A job still running is stopped first (its pending items go with the rest;
  a chunk in flight finds no pending item left and stores nothing). Idempotent. Audited as
  ``job.purge`` with the reason.
- ``retention_days`` / ``jobs_expired`` / ``purge_expired``: ``MEDASSIST_RETENTION_DAYS`` per kind
  (``"diagnosis=30,literature=365,default=0"``; 0 or absent: kept for ever) applied to final jobs
  by ``manage.py purge_expired``, which is meant to run periodically (see the README).
- ``user_purge``: deactivate a user, purge every job of theirs, delete their tokens and their corpus
  documents (``knowledge.services.corpus_delete_documents``), audited as ``user.purge``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from medassist.audit.services import audit_record
from medassist.knowledge.services import corpus_delete_documents

from .models import Job, JobItem

__all__ = ["DEFAULT_KEY", "job_purge", "retention_days", "jobs_expired", "purge_expired", "UserPurge", "user_purge"]

DEFAULT_KEY = "default"  # MEDASSIST_RETENTION_DAYS entry for kinds not named
_SOURCE_KEPT = ("type", "format", "records", "skipped")  # counts and formats, never names or text


def _scrubbed_params(params: dict) -> dict:
    # Knobs (numbers, booleans, choices lists) say how the job ran; any string may be free text.
    return {k: v for k, v in (params or {}).items() if isinstance(v, (bool, int, float)) or v is None}


@transaction.atomic
def job_purge(*, job: Job, reason: str, actor=None, actor_name: str = "", ip: str | None = None) -> Job:
    """Delete ``job``'s inputs and results now (see the module docstring); returns the purged job."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status == Job.Status.PURGED:
        return job
    previous = job.status
    items_deleted, _ = JobItem.objects.filter(job=job).delete()
    now = timezone.now()
    job.status = Job.Status.PURGED
    job.purged_at = now
    job.finished_at = job.finished_at or now
    job.params = _scrubbed_params(job.params)
    job.source = {k: v for k, v in (job.source or {}).items() if k in _SOURCE_KEPT}
    job.error = ""
    job.status_detail = {"purged": {"reason": reason, "previous_status": previous}}
    job.save(update_fields=["status", "purged_at", "finished_at", "params", "source", "error", "status_detail"])
    audit_record(action="job.purge", actor=actor, actor_name=actor_name, object_type="jobs.job", object_id=job.pk,
                 ip=ip, detail={"reason": reason, "previous_status": previous, "items_deleted": items_deleted,
                                "total_items": job.total_items})
    return job


def retention_days(kind: str) -> int:
    """Days a final job of ``kind`` keeps its inputs and results (0: for ever)."""
    configured = settings.MEDASSIST_RETENTION_DAYS
    return int(configured.get(kind, configured.get(DEFAULT_KEY, 0)) or 0)


def jobs_expired(*, now: dt.datetime | None = None):
    """Final, not yet purged jobs whose kind's retention has passed since they finished."""
    now = now or timezone.now()
    final = [s for s in Job.FINAL_STATUSES if s != Job.Status.PURGED]
    jobs = Job.objects.filter(status__in=final, purged_at__isnull=True)
    kinds = set(jobs.values_list("kind", flat=True).distinct())
    expired = Job.objects.none()
    for kind in sorted(kinds):
        days = retention_days(kind)
        if days > 0:
            cutoff = now - dt.timedelta(days=days)
            # A job that never finished properly (no finished_at) counts from its creation.
            expired = expired | jobs.filter(kind=kind, finished_at__lt=cutoff) | jobs.filter(
                kind=kind, finished_at__isnull=True, created_at__lt=cutoff)
    return expired.order_by("created_at")


def purge_expired(*, now: dt.datetime | None = None, dry_run: bool = False, actor_name: str = "") -> dict[str, int]:
    """Purge every expired job (one transaction each); {kind: jobs purged (or due, with dry_run)}."""
    done: dict[str, int] = {}
    for job in jobs_expired(now=now).only("pk", "kind").iterator(chunk_size=500):
        if not dry_run:
            job_purge(job=job, reason=f"retention: {retention_days(job.kind)} days", actor_name=actor_name)
        done[job.kind] = done.get(job.kind, 0) + 1
    return done


def _tokens_delete(user) -> int:
    # Whichever token apps are installed (DRF's plain tokens, knox's hashed ones): none may outlive this.
    from django.apps import apps

    deleted = 0
    for label in ("authtoken.Token", "knox.AuthToken"):
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        deleted += model.objects.filter(user=user).delete()[0]
    return deleted


@dataclass
class UserPurge:
    username: str
    jobs_purged: int
    documents_deleted: int
    tokens_deleted: int


def user_purge(*, user, actor=None, actor_name: str = "", reason: str = "user data deletion") -> UserPurge:
    """Deactivate ``user`` and delete their data: every job's inputs and results, their tokens and their
    own corpus documents. The user row stays (inactive) so audit events keep naming them."""
    purged = 0
    for job in Job.objects.filter(owner=user).exclude(status=Job.Status.PURGED).only("pk"):
        job_purge(job=job, reason=reason, actor=actor, actor_name=actor_name)
        purged += 1
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        tokens = _tokens_delete(user)
        documents = corpus_delete_documents(owner_id=user.pk)
        audit_record(action="user.purge", actor=actor, actor_name=actor_name, object_type="auth.user",
                     object_id=user.pk, detail={"reason": reason, "jobs_purged": purged,
                                                "documents_deleted": documents, "tokens_deleted": tokens})
    return UserPurge(username=user.get_username(), jobs_purged=purged, documents_deleted=documents,
                     tokens_deleted=tokens)
