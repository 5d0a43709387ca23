"""Job services: every write to jobs and items goes through here.

- ``job_validate`` checks a whole submission before anything is stored (field-level errors).
- ``job_submit`` stores the job and its items in one transaction and, on commit, sends one Celery
  task per chunk (ids only).
- ``job_process_chunk`` is what a worker runs for one chunk: it skips items already done (a
  redelivered chunk is normal with ``acks_late``), runs the kind's handler on the batch, isolates a
  failing item, and stores results and counters in one transaction, so each item counts once.
- ``job_finalize_if_done`` moves a job to its final state exactly once (a conditional UPDATE).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from medassist.audit.services import audit_record
from medassist.common.parsers import UploadError, parse_upload
from medassist.kinds import ItemFailure, Kind, available_kinds, get_kind
from medassist.registry.models import ModelVersion

from .models import Job, JobItem

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50


class SubmissionInvalid(Exception):
    """A submission that cannot be accepted. ``errors`` maps field paths to lists of messages."""

    def __init__(self, errors: dict[str, list[str]], status_code: int = 400):
        super().__init__(errors)
        self.errors = errors
        self.status_code = status_code


class JobNotCancellable(Exception):
    pass


@dataclass
class ValidSubmission:
    kind: Kind
    items: list[dict]
    params: dict
    source: dict = field(default_factory=dict)


def _schema_error_message(error) -> tuple[list, str]:
    """(path, sentence) for one jsonschema error, phrased for the person who sent the data."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return path + [missing], "this field is required"
    if error.validator == "pattern" and error.validator_value == r"\S":
        return path, "must not be empty"
    if error.validator == "additionalProperties":
        return path, error.message.replace("Additional properties are not allowed", "unknown parameter(s):")
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        return path, f"must be of type {expected}"
    return path, error.message


def _path(prefix: str, parts: list) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def job_validate(*, user, kind_name, items, params, source: dict | None = None) -> ValidSubmission:
    """Check everything; raise SubmissionInvalid with field-level messages or return clean data."""
    errors: dict[str, list[str]] = {}
    kind = get_kind(kind_name) if isinstance(kind_name, str) else None
    if kind is None or kind.name not in available_kinds(user=user):
        raise SubmissionInvalid({"kind": [f"unknown job kind {kind_name!r}; available: "
                                          f"{', '.join(available_kinds(user=user))}"]})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise SubmissionInvalid({"params": ["must be a JSON object"]})
    for error in kind.params_validator.iter_errors(params):
        parts, message = _schema_error_message(error)
        errors.setdefault(_path("params", parts), []).append(message)
    if not errors:
        for field_name, message in kind.check_params(kind.params_with_defaults(params)):
            errors.setdefault(f"params.{field_name}", []).append(message)

    if not isinstance(items, list):
        raise SubmissionInvalid({"items": ["must be a list of items (or upload a file)"], **errors})
    if not items:
        raise SubmissionInvalid({"items": ["at least one item is required"], **errors})
    if kind.max_items and len(items) > kind.max_items:
        raise SubmissionInvalid({"items": [f"a {kind.name} job takes at most {kind.max_items} item(s); got {len(items)}"],
                                 **errors})
    limit = settings.MEDASSIST_MAX_ITEMS_PER_JOB
    if len(items) > limit:
        raise SubmissionInvalid({"items": [f"too many items: {len(items):,}; the limit is {limit:,} per job, "
                                           "split the batch into several jobs"]}, status_code=413)

    max_chars = settings.MEDASSIST_MAX_CHARS_PER_ITEM
    clean = []
    for index, raw in enumerate(items):
        item = kind.normalize_item(raw)
        item_errors = list(kind.item_validator.iter_errors(item))
        for error in item_errors:
            parts, message = _schema_error_message(error)
            errors.setdefault(_path(f"items[{index}]", parts), []).append(message)
        if not item_errors:
            for field_name, message in kind.check_item(item):
                errors.setdefault(f"items[{index}].{field_name}", []).append(message)
        if not item_errors and kind.text_field and isinstance(item.get(kind.text_field), str):
            length = len(item[kind.text_field])
            if length > max_chars:
                errors.setdefault(f"items[{index}].{kind.text_field}", []).append(
                    f"is {length:,} characters long; the limit is {max_chars:,}")
        if len(errors) >= MAX_REPORTED_ERRORS:
            errors["non_field_errors"] = [f"stopped after {MAX_REPORTED_ERRORS} errors; fix these and submit again"]
            break
        clean.append(item)
    if errors:
        raise SubmissionInvalid(errors)
    # Stored with the defaults filled in: the job records what it ran with, and workers read it as is.
    return ValidSubmission(kind=kind, items=clean, params=kind.params_with_defaults(params),
                           source=source or {"type": "inline"})


PROCESS_CHUNK_TASK = "medassist.process_chunk"  # workers.tasks.process_chunk, sent by name: no import of workers


def job_validate_upload(*, user, kind_name, content, filename: str, size: int, params) -> ValidSubmission:
    """An uploaded file (JSONL, CSV/TSV, PubMed or MEDLINE XML, optionally gzipped) as a checked submission.

    ``content``: bytes or a file object; ``params`` may be the multipart form's JSON string. Raises
    ``SubmissionInvalid`` (413 for a file over the byte or item limit) before anything is stored.
    """
    limit = settings.MEDASSIST_MAX_UPLOAD_BYTES
    if size > limit:
        raise SubmissionInvalid({"file": [f"the file is {size:,} bytes; the limit is {limit:,} bytes"]}, 413)
    if isinstance(params, str):
        try:
            params = json.loads(params) if params.strip() else {}
        except json.JSONDecodeError as exc:
            raise SubmissionInvalid({"params": [f"is not valid JSON ({exc.msg} at column {exc.colno})"]}) from None
    try:
        parsed = parse_upload(content if isinstance(content, bytes) else content.read(), filename,
                              max_items=settings.MEDASSIST_MAX_ITEMS_PER_JOB)
    except UploadError as exc:
        raise SubmissionInvalid({exc.field: [str(exc)]}, exc.status_code) from None
    if not parsed.items:
        reasons = sorted({s["reason"] for s in parsed.skipped})
        raise SubmissionInvalid({"file": [f"the file holds no usable records ({parsed.records} records, all skipped: "
                                          f"{', '.join(reasons) or 'none found'})"]})
    source = {"type": "file", "filename": filename[:200], "format": parsed.format, "records": parsed.records,
              "skipped": len(parsed.skipped), "skipped_examples": parsed.skipped[:10]}
    return job_validate(user=user, kind_name=kind_name, items=parsed.items, params=params, source=source)


def job_read_record(*, job: Job, actor, action: str, ip: str | None = None, detail: dict | None = None) -> None:
    """Audit a read of a job or its results (``job.view``, ``results.read``, ``results.export``), with the
    model version the results came from."""
    audit_record(action=action, actor=actor, object_type="jobs.job", object_id=job.pk, ip=ip,
                 model_version=job.model_version.label if job.model_version else "", detail=detail)


def _enqueue_chunks(job: Job) -> None:
    from celery import current_app  # the app of config/celery.py, made current when config is imported

    kind = get_kind(job.kind)
    limits = {}
    if kind is not None and kind.time_limit:
        limits = {"soft_time_limit": kind.time_limit, "time_limit": kind.time_limit + 120}
    for start in range(0, job.total_items, job.chunk_size):
        end = min(start + job.chunk_size, job.total_items)
        current_app.send_task(PROCESS_CHUNK_TASK, args=[str(job.id), start, end], queue=job.queue, **limits)


def _chunk_size(kind: Kind, submission: ValidSubmission) -> int:
    """Items per chunk: the kind's choice for these params; model-sized chunks when the items themselves
    call for a language model (e.g. abstracts with their own questions); else the default."""
    size = kind.chunk_size_for(submission.params)
    if size is None and ModelVersion.Role.GENERATOR in kind.item_roles(submission.params, submission.items):
        size = settings.MEDASSIST_MODEL_CHUNK_SIZE
    return size or settings.MEDASSIST_CHUNK_SIZE


def job_submit(*, owner, submission: ValidSubmission, idempotency_key: str | None = None,
               ip: str | None = None) -> tuple[Job, bool]:
    """Store the job and its items atomically; enqueue its chunks once committed.

    Returns ``(job, created)``; with an ``idempotency_key`` already used by this owner, the first
    job is returned and nothing new is stored.
    """
    if idempotency_key:
        existing = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if existing:
            return existing, False
    kind = submission.kind
    try:
        with transaction.atomic():
            job = Job.objects.create(
                owner=owner, kind=kind.name, queue=kind.queue, params=submission.params, source=submission.source,
                total_items=len(submission.items),
                chunk_size=_chunk_size(kind, submission),
                idempotency_key=idempotency_key or None,
            )
            JobItem.objects.bulk_create(
                (JobItem(job=job, index=i, input=item) for i, item in enumerate(submission.items)), batch_size=2000)
            audit_record(action="job.submit", actor=owner, object_type="jobs.job", object_id=job.pk, ip=ip,
                         detail={"kind": kind.name, "items": job.total_items, "source": submission.source.get("type"),
                                 "params": submission.params})
            transaction.on_commit(lambda: _enqueue_chunks(job))
    except IntegrityError:
        # Two concurrent retries with the same key: the other one won; return its job.
        if idempotency_key:
            existing = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if existing:
                return existing, False
        raise
    log.info("job submitted", extra={"job": str(job.pk), "kind": kind.name, "items": job.total_items})
    return job, True


@transaction.atomic
def job_cancel(*, job: Job, actor, ip: str | None = None) -> Job:
    """Stop a job: unstarted items are cancelled; chunks already running finish but store nothing new."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.is_final:
        raise JobNotCancellable(f"job is already {job.status}")
    cancelled = JobItem.objects.filter(job=job, status=JobItem.Status.PENDING).update(
        status=JobItem.Status.CANCELLED, finished_at=timezone.now())
    job.status = Job.Status.CANCELLED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    audit_record(action="job.cancel", actor=actor, object_type="jobs.job", object_id=job.pk, ip=ip,
                 detail={"cancelled_items": cancelled, "processed_items": job.processed_items})
    return job


def job_finalize_if_done(*, job_id) -> bool:
    """Give a job whose items are all processed its final status. True for the one caller that did."""
    finished = Job.objects.filter(
        pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
        total_items__lte=F("succeeded_items") + F("failed_items"),
    ).update(
        status=Case(
            When(failed_items=0, then=Value(Job.Status.SUCCEEDED)),
            When(succeeded_items=0, then=Value(Job.Status.FAILED)),
            default=Value(Job.Status.PARTIALLY_FAILED),
        ),
        finished_at=timezone.now(),
    )
    if not finished:
        return False
    job = Job.objects.get(pk=job_id)
    if job.status == Job.Status.FAILED and not job.error:
        first_error = job.items.filter(status=JobItem.Status.FAILED).values_list("error", flat=True).first() or ""
        job.error = f"every item failed; first error: {first_error}"[:2000]
        Job.objects.filter(pk=job_id).update(error=job.error)
    audit_record(action="job.finish", object_type="jobs.job", object_id=job.pk,
                 model_version=job.model_version.label if job.model_version_id else "",
                 detail={"status": job.status, "succeeded": job.succeeded_items, "failed": job.failed_items})
    log.info("job finished", extra={"job": str(job.pk), "status": job.status,
                                    "succeeded": job.succeeded_items, "failed": job.failed_items})
    return True


class JobContext:
    """What a long-running handler (``Kind.wants_context``) may do with its job while it runs."""

    def __init__(self, job_id):
        self.job_id = job_id

    def report(self, detail: dict) -> None:
        """Live progress (e.g. training step and loss), shown as the job's ``status_detail``."""
        Job.objects.filter(pk=self.job_id).update(status_detail=detail)

    def cancelled(self) -> bool:
        return Job.objects.filter(pk=self.job_id, status=Job.Status.CANCELLED).exists()


def _run_isolated(kind: Kind, inputs: list[dict], params: dict, runtime, context: JobContext | None = None) -> list:
    """Run the handler on the whole batch; if it raises, run item by item so one bad item fails alone."""
    from celery.exceptions import SoftTimeLimitExceeded

    extra = {"context": context} if kind.wants_context else {}
    try:
        results = kind.run(inputs, params, runtime, **extra)
        if len(results) != len(inputs):
            raise RuntimeError(f"handler returned {len(results)} results for {len(inputs)} items")
        return results
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if len(inputs) == 1:  # nothing to isolate: running it again would only repeat the work
            return [ItemFailure(f"{type(exc).__name__}: {exc}"[:2000])]
        log.warning("batch failed; retrying item by item", extra={"kind": kind.name, "items": len(inputs)})
    results = []
    for item in inputs:
        try:
            results.append(kind.run([item], params, runtime, **extra)[0])
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # the item's own failure, stored on the item (never logged: may hold text)
            results.append(ItemFailure(f"{type(exc).__name__}: {exc}"[:2000]))
    return results


def _write_item_rows(rows: list[tuple]) -> None:
    """UPDATE (status, result, error, duration_ms, finished_at, attempts) by id, for many rows at once.

    Django's bulk_update builds a CASE expression per column and row: ~1.7 ms per item here, more
    than the literature handler itself. On Postgres one ``UPDATE ... FROM (VALUES ...)`` statement
    does a whole chunk; elsewhere a parameterised statement per row (cheap on in-process SQLite).
    """
    table = connection.ops.quote_name(JobItem._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(
                cursor.cursor,
                f"UPDATE {table} AS t SET status = v.status, result = v.result::jsonb, error = v.error, "
                "duration_ms = v.duration_ms, finished_at = v.finished_at, attempts = v.attempts "
                "FROM (VALUES %s) AS v(status, result, error, duration_ms, finished_at, attempts, id) "
                "WHERE t.id = v.id", rows, page_size=1000)
        else:
            cursor.executemany(
                f"UPDATE {table} SET status = %s, result = %s, error = %s, duration_ms = %s, finished_at = %s, "
                "attempts = %s WHERE id = %s", rows)


@transaction.atomic
def _store_outcomes(*, job_id, items: list[JobItem], outcomes: list, durations_ms: list[float],
                    versions: dict, main_role: str | None) -> tuple[int, int]:
    """Write results of items still pending and bump counters, in one transaction: counted once."""
    still_pending = set(JobItem.objects.select_for_update()
                        .filter(pk__in=[i.pk for i in items], status=JobItem.Status.PENDING)
                        .values_list("pk", flat=True))
    now = connection.ops.adapt_datetimefield_value(timezone.now())  # raw SQL below: adapt per backend
    succeeded = failed = 0
    to_write = []
    for item, outcome, duration in zip(items, outcomes, durations_ms, strict=True):
        if item.pk not in still_pending:
            continue  # done by another delivery of this chunk, or cancelled meanwhile
        if isinstance(outcome, ItemFailure):
            status, result, error = JobItem.Status.FAILED, None, outcome.message
            failed += 1
        else:
            status, result, error = JobItem.Status.SUCCEEDED, json.dumps(outcome, ensure_ascii=False), ""
            succeeded += 1
        to_write.append((status, result, error, round(duration, 3), now, item.attempts + 1, item.pk))
    if to_write:
        _write_item_rows(to_write)
        Job.objects.filter(pk=job_id).update(succeeded_items=F("succeeded_items") + succeeded,
                                             failed_items=F("failed_items") + failed)
        if versions:
            Job.objects.filter(pk=job_id, model_version__isnull=True).update(
                model_version=versions[main_role] if main_role else None,
                model_versions={role: v.label for role, v in versions.items()})
    return succeeded, failed


@dataclass
class ChunkReport:
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: str = ""


def job_process_chunk(*, job_id, start: int, end: int, runtime) -> ChunkReport:
    """Process items ``start <= index < end`` of a job (what one Celery task does)."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return ChunkReport(skipped="job no longer exists")
    if job.is_final:
        return ChunkReport(skipped=f"job is {job.status}")
    if job.status == Job.Status.QUEUED:
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(status=Job.Status.RUNNING,
                                                                       started_at=timezone.now())
    items = list(JobItem.objects.filter(job_id=job_id, index__gte=start, index__lt=end,
                                        status=JobItem.Status.PENDING).order_by("index"))
    if not items:
        job_finalize_if_done(job_id=job_id)
        return ChunkReport(skipped="all items already processed")
    kind = get_kind(job.kind)
    params = job.params  # stored with the kind's defaults at submit
    roles = kind.required_roles(params, [item.input for item in items])
    runtime.ensure_kind_loaded(kind)
    runtime.refresh(roles)
    started = time.perf_counter()
    outcomes = _run_isolated(kind, [item.input for item in items], params, runtime, JobContext(job_id))
    per_item_ms = (time.perf_counter() - started) * 1000 / len(items)
    versions = {role: runtime.versions[role] for role in roles}
    succeeded, failed = _store_outcomes(job_id=job_id, items=items, outcomes=outcomes,
                                        durations_ms=[per_item_ms] * len(items), versions=versions,
                                        main_role=kind.main_role(versions))
    job_finalize_if_done(job_id=job_id)
    return ChunkReport(processed=succeeded + failed, succeeded=succeeded, failed=failed)


def job_fail_chunk(*, job_id, start: int, end: int, reason: str) -> int:
    """Mark a chunk's unfinished items failed with a reason a user can read (worker-side failure)."""
    items = list(JobItem.objects.filter(job_id=job_id, index__gte=start, index__lt=end,
                                        status=JobItem.Status.PENDING).order_by("index"))
    outcomes = [ItemFailure(reason)] * len(items)
    _, failed = _store_outcomes(job_id=job_id, items=items, outcomes=outcomes, durations_ms=[0.0] * len(items),
                                versions={}, main_role=None)
    job_finalize_if_done(job_id=job_id)
    return failed
