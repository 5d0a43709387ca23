"""Job services: every write to jobs and items goes through here.

- ``job_validate`` checks a whole submission before anything is stored (field-level errors).
- ``job_submit`` stores the job, its items and one ``JobChunk`` row per chunk in one transaction and,
  on commit, sends one Celery task per chunk (ids only); a broker that is down raises
  ``BrokerUnavailable`` with the job stored (``medassist.jobs.reconcile`` sends it later).
- ``job_process_chunk`` is what a worker runs for one chunk: it claims the chunk row (a copy of a
  chunk that already ran is dropped, one that runs elsewhere looks again once that delivery's heartbeat
  would be stale; past MEDASSIST_MAX_DELIVERIES its items fail), heartbeats while it runs, skips items
  already done (a redelivered chunk is normal with ``acks_late``), runs the kind's handler on the
  batch, isolates a failing item, and stores results and counters in one transaction (locking the
  job, then its items), so each item counts once.
- ``job_finalize_if_done`` moves a job to its final state exactly once (a conditional UPDATE).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from medassist.audit.services import audit_params, audit_record
from medassist.common.parsers import JsonLimits, JsonTooDeep, UploadError, json_problems, loads_strict, parse_upload
from medassist.common.redaction import with_redactions
from medassist.kinds import ItemFailure, Kind, available_kinds, get_kind
from medassist.knowledge.visibility import reading_as
from medassist.registry.models import ModelVersion

from .models import Job, JobChunk, JobItem
from .privacy import submission_privacy_errors, submission_redact

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
    # Bounds (issue 13): say the size, never echo a 20,000-character value back.
    if error.validator == "maxLength":
        return path, f"is {len(error.instance):,} characters long; the limit is {error.validator_value:,}"
    if error.validator == "maxItems":
        return path, f"has {len(error.instance):,} entries; the limit is {error.validator_value:,}"
    if error.validator == "maxProperties":
        return path, f"has {len(error.instance):,} keys; the limit is {error.validator_value:,}"
    if error.validator == "anyOf" and error.context:  # the closest branch's reason, e.g. a finding too long
        return _schema_error_message(min(error.context, key=lambda e: (e.validator == "type", len(e.path))))
    if len(error.message) > 300:
        return path, error.message[:300] + "…"
    return path, error.message


def _path(prefix: str, parts: list) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _item_limits(kind: Kind) -> JsonLimits:
    """Bounds on every string, list, object and level of one item (issue 13); the text field keeps its own
    message (``MEDASSIST_MAX_CHARS_PER_ITEM``)."""
    max_chars = settings.MEDASSIST_MAX_CHARS_PER_ITEM
    return JsonLimits(max_string=max_chars, max_total=4 * max_chars + 10_000,
                      skip_length=frozenset([kind.text_field] if kind.text_field else []))


PARAMS_LIMITS = JsonLimits(max_depth=4, max_string=2_000, max_list=100, max_keys=50, max_total=20_000)


def _integers(value, schema: dict):
    """5.0 where the schema says integer becomes 5: JSON Schema counts 5.0 as an integer, and a handler
    that slices or ranges with it then fails every item with a TypeError (issue 12)."""
    if not isinstance(schema, dict):
        return value
    types = schema.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    if (isinstance(value, float) and "integer" in types and "number" not in types and value.is_integer()
            and abs(value) < 2 ** 53):
        return int(value)
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        for key, sub in schema["properties"].items():
            if key in value:
                value[key] = _integers(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [_integers(v, schema["items"]) for v in value]
    return value


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
    for parts, message in json_problems(params, PARAMS_LIMITS):
        errors.setdefault(_path("params", parts), []).append(message)
    if errors:  # NaN passes "minimum" and "maximum": never let such a value reach the schema or the kind
        raise SubmissionInvalid(errors)
    params = _integers(params, kind.params_schema)
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
    limits = _item_limits(kind)
    for index, raw in enumerate(items):
        item = kind.normalize_item(raw)
        problems = json_problems(item, limits)
        for parts, message in problems:
            errors.setdefault(_path(f"items[{index}]", parts), []).append(message)
        if problems:
            if len(errors) >= MAX_REPORTED_ERRORS:
                errors["non_field_errors"] = [f"stopped after {MAX_REPORTED_ERRORS} errors; fix these and submit again"]
                break
            continue
        item = _integers(item, kind.item_schema)
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
    errors.update(submission_privacy_errors(user=user, params=params))  # privacy (issue 13)
    if errors:
        raise SubmissionInvalid(errors)
    # Stored with the defaults filled in: the job records what it ran with, and workers read it as is.
    # Privacy (issue 13): with ``redact``, identifiers leave the free text before anything is stored.
    return ValidSubmission(kind=kind, items=submission_redact(kind=kind, items=clean,
                                                              params=kind.params_with_defaults(params)),
                           params=kind.params_with_defaults(params), source=source or {"type": "inline"})


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
            params = loads_strict(params) if params.strip() else {}
        except json.JSONDecodeError as exc:
            raise SubmissionInvalid({"params": [f"is not valid JSON ({exc.msg} at column {exc.colno})"]}) from None
        except JsonTooDeep:
            raise SubmissionInvalid({"params": ["is nested too deeply"]}) from None
        except ValueError as exc:  # NaN, Infinity, 1e400
            raise SubmissionInvalid({"params": [f"is not valid JSON: {exc}"]}) from None
    try:
        # The file object itself: read in blocks, decompressed within the same byte budget (issue 13).
        parsed = parse_upload(content, filename, max_items=settings.MEDASSIST_MAX_ITEMS_PER_JOB, max_bytes=limit)
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


class BrokerUnavailable(Exception):
    """The job is stored but the broker took none (or not all) of its chunks: ``reconcile`` sends them once
    the broker is back, and a retry with the same Idempotency-Key returns this job (sending them itself)."""

    def __init__(self, job: Job, error: Exception):
        super().__init__(f"the broker is unreachable ({type(error).__name__}: {error})")
        self.job = job


def chunk_time_limit(kind: Kind | None) -> int:
    """Hard time limit of one delivery of this kind's chunks (what Celery kills it at), seconds."""
    if kind is not None and kind.time_limit:
        return kind.time_limit + 120
    return settings.MEDASSIST_CHUNK_TIME_LIMIT


def chunks_send(chunks: list[JobChunk], *, queue: str) -> int:
    """Hand claimed chunks to the broker, one task each (ids only); marks each one sent as ``queued``.

    The caller has claimed them (a conditional UPDATE), so two callers never send the same chunk for the
    same reason. Raises the broker's error after marking what was sent; the rest stay ``pending``.
    """
    from celery import current_app  # the app of config/celery.py, made current when config is imported

    sent = []
    try:
        for chunk in chunks:
            kind = get_kind(chunk.job.kind)
            limits = {}
            if kind is not None and kind.time_limit:  # else the task's own (MEDASSIST_CHUNK_*_TIME_LIMIT)
                limits = {"soft_time_limit": kind.time_limit, "time_limit": chunk_time_limit(kind)}
            current_app.send_task(PROCESS_CHUNK_TASK, args=[str(chunk.job_id), chunk.start, chunk.end], queue=queue,
                                  **limits)
            sent.append(chunk.pk)
    finally:
        unsent = [chunk.pk for chunk in chunks if chunk.pk not in set(sent)]
        if unsent:  # back to "never sent": reconcile (or an idempotent replay) sends them later
            JobChunk.objects.filter(pk__in=unsent, state=JobChunk.State.QUEUED).update(
                state=JobChunk.State.PENDING, enqueued_at=None)
        if sent:  # never back from running or done: a worker may have claimed it already
            JobChunk.objects.filter(pk__in=sent, state__in=[JobChunk.State.PENDING, JobChunk.State.QUEUED]).update(
                state=JobChunk.State.QUEUED, enqueued_at=timezone.now())
    return len(sent)


def _enqueue_chunks(job: Job) -> None:
    """Send the job's chunks that were never sent (at submit, and again on an idempotent replay)."""
    # Claimed first (marked with this call's own timestamp), so a reconcile pass running meanwhile
    # leaves them alone instead of sending them a second time.
    now = timezone.now()
    JobChunk.objects.filter(job=job, state=JobChunk.State.PENDING).update(state=JobChunk.State.QUEUED,
                                                                           enqueued_at=now)
    chunks = list(JobChunk.objects.filter(job=job, state=JobChunk.State.QUEUED, enqueued_at=now))
    for chunk in chunks:
        chunk.job = job
    chunks_send(chunks, queue=job.queue)


def _chunk_size(kind: Kind, submission: ValidSubmission) -> int:
    """Items per chunk: the kind's choice for these params; model-sized chunks when the items themselves
    call for a language model (e.g. abstracts with their own questions); else the default."""
    size = kind.chunk_size_for(submission.params)
    if size is None and ModelVersion.Role.GENERATOR in kind.item_roles(submission.params, submission.items):
        size = settings.MEDASSIST_MODEL_CHUNK_SIZE
    return size or settings.MEDASSIST_CHUNK_SIZE


def job_submit(*, owner, submission: ValidSubmission, idempotency_key: str | None = None,
               ip: str | None = None) -> tuple[Job, bool]:
    """Store the job, its items and its chunks atomically; send the chunks once committed.

    Returns ``(job, created)``; with an ``idempotency_key`` already used by this owner, the first
    job is returned and nothing new is stored (its chunks never sent, e.g. after a broker outage, are
    sent now). Raises ``BrokerUnavailable`` (the job *is* stored) when the broker takes no chunk.
    """
    if idempotency_key:
        existing = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if existing:
            if not existing.is_final:
                _send_after_commit(existing)
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
            limit = chunk_time_limit(kind)
            JobChunk.objects.bulk_create(
                JobChunk(job=job, start=start, end=min(start + job.chunk_size, job.total_items), time_limit=limit)
                for start in range(0, job.total_items, job.chunk_size))
            audit_record(action="job.submit", actor=owner, object_type="jobs.job", object_id=job.pk, ip=ip,
                         detail={"kind": kind.name, "items": job.total_items, "source": submission.source.get("type"),
                                 "params": audit_params(submission.params)})  # no free text (issue 13)
    except IntegrityError:
        # Two concurrent retries with the same key: the other one won; return its job.
        if idempotency_key:
            existing = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
            if existing:
                return existing, False
        raise
    log.info("job submitted", extra={"job": str(job.pk), "kind": kind.name, "items": job.total_items})
    _send_after_commit(job)
    return job, True


def _send_after_commit(job: Job) -> None:
    """Send the job's unsent chunks once the surrounding transaction (if any) commits; a broker that
    cannot be reached raises ``BrokerUnavailable`` to the caller when there is no surrounding transaction."""
    failure: list[Exception] = []

    def send():
        try:
            _enqueue_chunks(job)
        except Exception as exc:  # kombu's OperationalError, a refused connection, a timeout...
            log.warning("broker unreachable at submit; reconcile sends the chunks later",
                        extra={"job": str(job.pk), "error": type(exc).__name__})
            failure.append(exc)

    transaction.on_commit(send)  # runs now outside a transaction, at commit inside one
    if failure:
        raise BrokerUnavailable(job, failure[0])


@transaction.atomic
def job_cancel(*, job: Job, actor, ip: str | None = None) -> Job:
    """Stop a job: unstarted items are cancelled; chunks already running finish but store nothing new.

    Lock order, everywhere: the job row, then its items (``_store_outcomes`` does the same).
    """
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
        # A purged job (DELETE, issue 13) stops like a cancelled one.
        return Job.objects.filter(pk=self.job_id, status__in=[Job.Status.CANCELLED, Job.Status.PURGED]).exists()


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
    """Write results of items still pending and bump counters, in one transaction: counted once.

    Lock order, as everywhere: the job row first, then its items (``job_cancel`` does the same), so a
    cancel racing a chunk's results waits for it instead of deadlocking.
    """
    if not Job.objects.select_for_update().filter(pk=job_id).exists():
        return 0, 0
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
    # Another delivery runs this chunk: look again in this many seconds (it may die meanwhile).
    retry_in: float | None = None


def died_reason(deliveries: int) -> str:
    return f"worker process died {deliveries} times while processing this chunk"


def time_limit_reason(limit: int) -> str:
    return f"processing took longer than the {limit} s hard time limit per chunk; the worker stopped it"


def dead_delivery_reason(chunk: JobChunk) -> str:
    """Why the chunk's last, dead delivery means it must not run again ("" when it should run again).

    ``chunk`` as read before anyone claimed it again: ``running`` with a stale heartbeat. Used by
    ``reconcile`` and by a redelivered copy of the chunk alike, so both give the same reason.
    """
    if chunk.state != JobChunk.State.RUNNING or not chunk.started_at or not chunk.heartbeat_at:
        return ""
    ran_for = (chunk.heartbeat_at - chunk.started_at).total_seconds()
    # It beat until about its hard limit: Celery's pool (or the delivery's own watchdog) stopped it there.
    if ran_for >= chunk.time_limit - 2 * settings.MEDASSIST_HEARTBEAT_INTERVAL:
        return time_limit_reason(chunk.time_limit)
    if chunk.deliveries >= settings.MEDASSIST_MAX_DELIVERIES:
        return died_reason(chunk.deliveries)
    return ""


def _chunk_claim(*, job_id, start: int, end: int, resumed: bool) -> tuple[JobChunk | None, str, str]:
    """Claim the chunk for this delivery (a conditional UPDATE: two deliveries never both run it).

    ``(chunk, "", verdict)``: this delivery owns it; ``verdict`` is why the previous, dead delivery
    means it must not run again (``dead_delivery_reason``; "" to run it). ``(chunk, reason, "")``:
    another delivery ran it or runs it (heartbeating), so this copy is dropped. ``(None, "", "")``: no
    chunk row (a range that is no chunk, e.g. in a test); run it.
    ``resumed``: this delivery is a retry after a database outage, not a new delivery (not counted).
    """
    for _ in range(5):  # the row changed between our read and our claim (e.g. reconcile sent it): read again
        chunk = JobChunk.objects.filter(job_id=job_id, start=start, end=end).first()
        if chunk is None:
            return None, "", ""
        now = timezone.now()
        stale = now - timedelta(seconds=settings.MEDASSIST_HEARTBEAT_TIMEOUT)
        if chunk.state == JobChunk.State.DONE:
            return chunk, "chunk already done", ""
        if chunk.state == JobChunk.State.RUNNING and chunk.heartbeat_at >= stale and not resumed:
            return chunk, "another delivery of this chunk is running", ""
        # The previous delivery as it ended: decisive, since this claim takes over from exactly it.
        verdict = "" if resumed else dead_delivery_reason(chunk)
        claimed = JobChunk.objects.filter(pk=chunk.pk, state=chunk.state, started_at=chunk.started_at,
                                          heartbeat_at=chunk.heartbeat_at).update(
            state=JobChunk.State.RUNNING, deliveries=F("deliveries") + (0 if resumed else 1), started_at=now,
            heartbeat_at=now)
        if claimed:
            chunk.refresh_from_db()
            return chunk, "", verdict
    chunk.refresh_from_db()
    return chunk, "another delivery of this chunk is running", ""


def _chunk_done(*, job_id, start: int, end: int) -> None:
    JobChunk.objects.filter(job_id=job_id, start=start, end=end).exclude(state=JobChunk.State.DONE).update(
        state=JobChunk.State.DONE, finished_at=timezone.now())


class _Heartbeat:
    """While a delivery runs, a thread writes its chunk's ``heartbeat_at`` every
    MEDASSIST_HEARTBEAT_INTERVAL seconds; it stops with the process, which is how ``reconcile`` tells a
    dead delivery (a killed worker or pool child) from a slow one.

    It is also the hard time limit's second line. Celery's pool kills a child at the chunk's hard limit,
    but only if the pool's timer fires (and a solo pool has no time limits at all). A delivery still
    running MEDASSIST_HARD_LIMIT_GRACE seconds past its limit stops beating, so reconcile fails its items
    with the time-limit reason, and, with ``kill_on_overrun``, SIGKILLs its own process so the hung work
    does not hold a pool slot forever (the pool starts a fresh child; a redelivered copy finds the chunk
    done or gives it up for the same reason).
    """

    def __init__(self, chunk: JobChunk, *, kill_on_overrun: bool = False):
        self.chunk_id = chunk.pk
        self.deadline = time.monotonic() + chunk.time_limit + settings.MEDASSIST_HARD_LIMIT_GRACE
        self.time_limit = chunk.time_limit
        self.kill_on_overrun = kill_on_overrun
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{chunk.pk}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self):
        try:
            while not self._stop.wait(settings.MEDASSIST_HEARTBEAT_INTERVAL):
                if time.monotonic() > self.deadline:
                    log.error("chunk delivery outlived its hard time limit; it stops heartbeating",
                              extra={"chunk": self.chunk_id, "time_limit": self.time_limit,
                                     "killing_process": self.kill_on_overrun})
                    if self.kill_on_overrun:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return
                try:
                    JobChunk.objects.filter(pk=self.chunk_id, state=JobChunk.State.RUNNING).update(
                        heartbeat_at=timezone.now())
                except DatabaseError as exc:  # an outage: the delivery itself decides what to do
                    log.warning("heartbeat not written", extra={"chunk": self.chunk_id, "error": type(exc).__name__})
        finally:
            connection.close()  # this thread's own connection


def job_process_chunk(*, job_id, start: int, end: int, runtime, heartbeat: bool | str = False,
                      resumed: bool = False) -> ChunkReport:
    """Process items ``start <= index < end`` of a job (what one Celery task does).

    The delivery first claims the chunk row; a copy of a chunk another delivery finished is dropped, one
    of a chunk another delivery is running reports ``retry_in``. The (MEDASSIST_MAX_DELIVERIES + 1)th
    delivery of a chunk whose deliveries all died fails its pending items instead of running them again.
    ``heartbeat``: beat while running (the worker does); ``"kill_on_overrun"``: and SIGKILL this process
    if it outlives its hard time limit (a Celery pool child; see ``_Heartbeat``).
    """
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return ChunkReport(skipped="job no longer exists")
    if job.is_final:
        _chunk_done(job_id=job_id, start=start, end=end)
        return ChunkReport(skipped=f"job is {job.status}")
    chunk, skip, verdict = _chunk_claim(job_id=job_id, start=start, end=end, resumed=resumed)
    if skip:
        retry_in = None
        if chunk.state == JobChunk.State.RUNNING:  # until that delivery's heartbeat would have gone stale
            silent = (timezone.now() - chunk.heartbeat_at).total_seconds()
            retry_in = max(1.0, settings.MEDASSIST_HEARTBEAT_TIMEOUT - silent + 1.0)
        return ChunkReport(skipped=skip, retry_in=retry_in)
    cap = settings.MEDASSIST_MAX_DELIVERIES
    if not verdict and chunk is not None and chunk.deliveries > cap:
        verdict = died_reason(cap)
    if verdict:  # the previous delivery ran into its hard limit, or the MEDASSIST_MAX_DELIVERIES-th died
        failed = job_fail_chunk(job_id=job_id, start=start, end=end, reason=verdict)
        return ChunkReport(processed=failed, failed=failed, skipped=f"gave up: {verdict}")
    if job.status == Job.Status.QUEUED:
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(status=Job.Status.RUNNING,
                                                                       started_at=timezone.now())
    items = list(JobItem.objects.filter(job_id=job_id, index__gte=start, index__lt=end,
                                        status=JobItem.Status.PENDING).order_by("index"))
    if not items:
        _chunk_done(job_id=job_id, start=start, end=end)
        job_finalize_if_done(job_id=job_id)
        return ChunkReport(skipped="all items already processed")
    kind = get_kind(job.kind)
    params = job.params  # stored with the kind's defaults at submit
    roles = kind.required_roles(params, [item.input for item in items])
    runtime.ensure_kind_loaded(kind)
    runtime.refresh(roles)
    started = time.perf_counter()
    # Privacy (issue 13): the kind's selectors see the corpus as the job's owner; results list what was redacted.
    beat = _Heartbeat(chunk, kill_on_overrun=heartbeat == "kill_on_overrun") if heartbeat and chunk else nullcontext()
    with beat, reading_as(job.owner_id):
        outcomes = with_redactions([item.input for item in items],
                                   _run_isolated(kind, [item.input for item in items], params, runtime, JobContext(job_id)))
    per_item_ms = (time.perf_counter() - started) * 1000 / len(items)
    versions = {role: runtime.versions[role] for role in roles}
    succeeded, failed = _store_outcomes(job_id=job_id, items=items, outcomes=outcomes,
                                        durations_ms=[per_item_ms] * len(items), versions=versions,
                                        main_role=kind.main_role(versions))
    _chunk_done(job_id=job_id, start=start, end=end)
    job_finalize_if_done(job_id=job_id)
    return ChunkReport(processed=succeeded + failed, succeeded=succeeded, failed=failed)


def job_fail_chunk(*, job_id, start: int, end: int, reason: str) -> int:
    """Mark a chunk's unfinished items failed with a reason a user can read (worker-side failure)."""
    items = list(JobItem.objects.filter(job_id=job_id, index__gte=start, index__lt=end,
                                        status=JobItem.Status.PENDING).order_by("index"))
    outcomes = [ItemFailure(reason)] * len(items)
    _, failed = _store_outcomes(job_id=job_id, items=items, outcomes=outcomes, durations_ms=[0.0] * len(items),
                                versions={}, main_role=None)
    _chunk_done(job_id=job_id, start=start, end=end)
    job_finalize_if_done(job_id=job_id)
    return failed
