"""The jobs API under /api/v1/: thin views that parse, call one service or selector, and render.

Every read or write of a job or its results is audited with actor, IP, object and model version.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

import django_filters
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from medassist.audit.services import audit_record, client_ip
from medassist.common.json_parser import StrictJSONParser

from .models import Job, JobItem
from .openapi import job_submit_examples, job_submit_request
from .retention import job_purge
from .selectors import job_get, job_items, job_list
from .serializers import JobItemSerializer, JobSerializer, JobSubmitSerializer, item_ref
from .services import (
    BrokerUnavailable,
    JobNotCancellable,
    SubmissionInvalid,
    job_cancel,
    job_read_record,
    job_submit,
    job_validate,
    job_validate_upload,
)


def _invalid(errors: dict, status_code: int = 400, detail: str = "The submission is invalid; nothing was stored.") -> Response:
    return Response({"detail": detail, "errors": errors}, status=status_code)


class SubmitRateThrottle(UserRateThrottle):
    """Submissions are throttled separately from reads (each one can hold 50,000 items)."""

    scope = "submit"

    def allow_request(self, request, view):
        return request.method != "POST" or super().allow_request(request, view)


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO datetime, compared in UTC: Postgres refuses offsets past +-15:59 that Python accepts
    (``-22:20`` was a 500, found by schemathesis), and the conversion can leave the calendar."""

    def __init__(self, *args, param: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.param = param

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except (OverflowError, ValueError):
                raise ValidationError({self.param: ["is out of range"]}) from None
        return super().filter(qs, value)


class JobFilter(django_filters.FilterSet):
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", param="created_after")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt", param="created_before")

    class Meta:
        model = Job
        fields = ["kind", "status"]


class JobListCreateApi(generics.ListAPIView):
    """GET: your jobs (filters: kind, status, created_after, created_before). POST: submit a job."""

    serializer_class = JobSerializer
    filterset_class = JobFilter
    parser_classes = [StrictJSONParser, MultiPartParser]
    throttle_classes = [UserRateThrottle, SubmitRateThrottle]

    def get_queryset(self):
        return job_list(user=self.request.user)

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        # Audited (issue 13): who listed which jobs; the filters are the schema's, values cut short.
        shown = response.data.get("results", response.data) if isinstance(response.data, dict) else response.data
        audit_record(action="job.list", actor=request.user, object_type="jobs.job", ip=client_ip(request),
                     detail={"filters": {k: str(v)[:40] for k, v in request.query_params.items()
                                         if k in ("kind", "status", "created_after", "created_before", "page")},
                             "count": response.data.get("count") if isinstance(response.data, dict) else None,
                             "job_ids": [str(job["id"]) for job in shown][:100]})
        return response

    @extend_schema(
        # JSON: oneOf the kinds' own items/params schemas, discriminated by kind (medassist.jobs.openapi).
        request={"application/json": job_submit_request(), "multipart/form-data": JobSubmitSerializer},
        examples=job_submit_examples(),
        responses={202: JobSerializer, 200: JobSerializer,
                   503: OpenApiResponse(description="the job queue is unreachable: the job is stored (id, url) and "
                                                    "starts once it is back; retry after Retry-After seconds with "
                                                    "the same Idempotency-Key to get it")},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                                     description="a retried submission with the same key returns the first job")],
    )
    def post(self, request):
        limit = settings.MEDASSIST_MAX_UPLOAD_BYTES
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > limit:
            # Refuse before reading the body.
            field = "file" if request.content_type.startswith("multipart/") else "items"
            return _invalid({field: [f"the request is {declared:,} bytes; the limit is {limit:,} bytes"]}, 413)
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and len(key) > 200:
            return _invalid({"Idempotency-Key": ["must be at most 200 characters"]})
        if key is not None and not key.isprintable():  # a NUL cannot be stored in Postgres (was a 500)
            return _invalid({"Idempotency-Key": ["must hold printable characters only"]})
        data = request.data  # malformed JSON -> ParseError -> 400 with the parser's message
        if not hasattr(data, "get"):
            return _invalid({"non_field_errors": ["the body must be a JSON object with kind, items and params"]})

        upload = request.FILES.get("file")
        try:
            if upload is not None:
                if data.get("items") not in (None, ""):
                    return _invalid({"file": ["send either items or a file, not both"]})
                submission = job_validate_upload(user=request.user, kind_name=data.get("kind"), content=upload,
                                                 filename=upload.name or "", size=upload.size,
                                                 params=data.get("params"))
            else:
                if request.content_type.startswith("multipart/"):
                    return _invalid({"file": ["no file was uploaded (field name: file)"]})
                submission = job_validate(user=request.user, kind_name=data.get("kind"), items=data.get("items"),
                                          params=data.get("params"))
        except SubmissionInvalid as exc:
            return _invalid(exc.errors, exc.status_code)
        try:
            job, created = job_submit(owner=request.user, submission=submission, idempotency_key=key,
                                      ip=client_ip(request))
        except BrokerUnavailable as exc:
            # issue 12 (faults): the job is stored; reconcile sends its chunks once the broker is back,
            # and a retry with the same Idempotency-Key returns this job (sending them itself).
            url = JobSerializer(exc.job, context={"request": request}).data["url"]
            return Response({"detail": "The job queue is unreachable. The job was stored and will start once "
                                       "the queue is back; retry with the same Idempotency-Key to get it.",
                             "id": str(exc.job.pk), "url": url}, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": str(settings.MEDASSIST_BROKER_RETRY_AFTER), "Location": url})
        body = JobSerializer(job, context={"request": request}).data
        headers = {"Location": body["url"]}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK, headers=headers)


class JobDetailApi(APIView):
    @extend_schema(responses=JobSerializer)
    def get(self, request, job_id):
        job = job_get(user=request.user, job_id=job_id, ip=client_ip(request))
        job_read_record(job=job, actor=request.user, action="job.view", ip=client_ip(request))
        return Response(JobSerializer(job, context={"request": request}).data)

    @extend_schema(request=None, responses=JobSerializer,
                   description="Privacy (issue 13): delete the job's inputs and results now (a running job is "
                               "stopped first); the job row, its counts and audit events stay, status \"purged\".")
    def delete(self, request, job_id):
        job = job_get(user=request.user, job_id=job_id, ip=client_ip(request))  # the owner, or jobs.view_all_jobs; else 404
        job = job_purge(job=job, reason="deleted through the API", actor=request.user, ip=client_ip(request))
        return Response(JobSerializer(job, context={"request": request}).data)


class JobCancelApi(APIView):
    @extend_schema(request=None, responses=JobSerializer)
    def post(self, request, job_id):
        job = job_get(user=request.user, job_id=job_id, ip=client_ip(request))
        try:
            job = job_cancel(job=job, actor=request.user, ip=client_ip(request))
        except JobNotCancellable as exc:
            return Response({"detail": f"The job cannot be cancelled: {exc}."}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job, context={"request": request}).data)


def _status_param(request) -> str | None:
    value = request.query_params.get("status") or None
    if value is not None and value not in JobItem.Status.values:
        raise ValidationError({"status": [f"must be one of {', '.join(JobItem.Status.values)}"]})
    return value


class ResultsPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class JobResultsApi(generics.ListAPIView):
    """One page of item results, in input order; filter with ``?status=succeeded|failed|pending|cancelled``."""

    serializer_class = JobItemSerializer
    pagination_class = ResultsPagination
    filter_backends: list = []

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=JobItem.Status.values)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        self.job = job_get(user=self.request.user, job_id=self.kwargs["job_id"], ip=client_ip(self.request))
        return job_items(job=self.job, status=_status_param(self.request))

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        job_read_record(job=self.job, actor=request.user, action="results.read", ip=client_ip(request),
                        detail={"page": request.query_params.get("page", "1"),
                                "status": request.query_params.get("status")})
        return response


class _ExportApi(APIView):
    format_name = ""
    content_type = ""

    def get(self, request, job_id):
        job = job_get(user=request.user, job_id=job_id, ip=client_ip(request))
        items = job_items(job=job, status=_status_param(request)).only(
            "index", "input", "status", "result", "error", "duration_ms")
        job_read_record(job=job, actor=request.user, action="results.export", ip=client_ip(request),
                        detail={"format": self.format_name, "status": request.query_params.get("status")})
        response = StreamingHttpResponse(self.rows(items.iterator(chunk_size=500)), content_type=self.content_type)
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}.{self.format_name}"'
        return response


class JobResultsJsonlApi(_ExportApi):
    """All results as JSON lines, streamed: one object per item, in input order."""

    format_name, content_type = "jsonl", "application/x-ndjson"

    @extend_schema(responses={(200, "application/x-ndjson"): str})
    def get(self, request, job_id):
        return super().get(request, job_id)

    def rows(self, items):
        for item in items:
            yield json.dumps({"index": item.index, "ref": item_ref(item.input), "status": item.status,
                              "result": item.result, "error": item.error or None},
                             ensure_ascii=False, separators=(",", ":")) + "\n"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    """OWASP CSV injection: a text cell a spreadsheet would run as a formula gets a leading apostrophe
    (issue 13). Numbers stay numbers; the JSON column starts with { or "."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class JobResultsCsvApi(_ExportApi):
    """All results as CSV, streamed; the kind-specific result is one JSON column."""

    format_name, content_type = "csv", "text/csv"
    columns = ["index", "id", "pmid", "title", "status", "error", "model_version", "duration_ms", "result_json"]

    @extend_schema(responses={(200, "text/csv"): str})
    def get(self, request, job_id):
        return super().get(request, job_id)

    def rows(self, items):
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def flush():
            value = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            return value

        writer.writerow(self.columns)
        yield flush()
        for item in items:
            ref = item_ref(item.input)
            result = item.result or {}
            writer.writerow([_csv_cell(cell) for cell in (
                item.index, ref.get("id", ""), ref.get("pmid", ""), ref.get("title", ""), item.status,
                item.error, result.get("model_version", "") if isinstance(result, dict) else "",
                item.duration_ms if item.duration_ms is not None else "",
                json.dumps(item.result, ensure_ascii=False) if item.result is not None else "")])
            yield flush()
