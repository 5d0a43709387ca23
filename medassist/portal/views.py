"""The portal's pages: thin views over the same services and selectors as the API (never the API over HTTP).

Object-level access is the selectors': ``job_get`` is a 404 for another user's job, as in the API.
Submissions go through ``job_validate``/``job_validate_upload`` and ``job_submit``, so a form shows the
API's field messages and a refused submission stores nothing. Downloads are the API's export views,
called in-process with the signed-in session.
"""
from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_POST

from medassist.audit.services import client_ip
from medassist.jobs import apis
from medassist.jobs.models import Job, JobItem
from medassist.jobs.selectors import job_get, job_items, job_list, job_progress
from medassist.jobs.services import (
    BrokerUnavailable,
    JobNotCancellable,
    SubmissionInvalid,
    job_cancel,
    job_read_record,
    job_submit,
    job_validate,
    job_validate_upload,
)
from medassist.kinds import available_kinds, get_kind
from medassist.registry.models import ModelVersion
from medassist.registry.services import model_version_list

from . import render as draw
from .forms import attach_errors, param_fields, params_from_form, pasted_items

signed_in = login_required(login_url=reverse_lazy("portal:login"))

# Sign-in throttle: this many failed attempts per (client IP, username) within the window lock that pair
# out until the window has passed, whatever the password (a slow brute force is still audited by Django).
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_SECONDS = 300
JOBS_PER_PAGE = 20
RESULTS_PER_PAGE = 25
RESULT_SORTS = {"index": "index", "-index": "-index", "status": "status", "duration": "duration_ms",
                "-duration": "-duration_ms", "answer": "result__answer__label"}


class LoginView(auth_views.LoginView):
    """Django's login view, throttled per client IP and username."""

    template_name = "portal/login.html"
    redirect_authenticated_user = True

    def _key(self) -> str:
        username = (self.request.POST.get("username") or "").strip().lower()[:150]
        return f"portal-login-failures:{client_ip(self.request)}:{username}"

    def post(self, request, *args, **kwargs):
        if cache.get(self._key(), 0) >= LOGIN_FAILURES_ALLOWED:
            # An unbound form: a locked-out attempt is not even checked against the password.
            form = self.get_form_class()(request, initial={"username": request.POST.get("username", "")})
            locked = f"Too many failed sign-in attempts. Try again in {LOGIN_WINDOW_SECONDS // 60} minutes."
            return self.render_to_response(self.get_context_data(form=form, locked=locked), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        cache.add(key, 0, LOGIN_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, LOGIN_WINDOW_SECONDS)
        return self.render_to_response(self.get_context_data(form=form), status=400)

    def form_valid(self, form):
        cache.delete(self._key())
        return super().form_valid(form)

    def get_default_redirect_url(self):
        return reverse("portal:jobs")


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("portal:login")


# --- jobs ---------------------------------------------------------------------------------------------------

def _progress(job: Job) -> dict:
    return {"status": job.status, "status_display": job.get_status_display(), "is_final": job.is_final,
            **job_progress(job)}


@signed_in
def jobs(request):
    queryset = job_list(user=request.user).order_by("-created_at")
    kind = request.GET.get("kind") or ""
    status = request.GET.get("status") or ""
    if kind in available_kinds(user=request.user):
        queryset = queryset.filter(kind=kind)
    if status in Job.Status.values:
        queryset = queryset.filter(status=status)
    page = Paginator(queryset, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"job": job, "progress": _progress(job)} for job in page]
    return render(request, "portal/jobs.html", {
        "page": page, "rows": rows, "kinds": available_kinds(user=request.user), "statuses": Job.Status.choices,
        "kind": kind, "status": status, "query": _query(request, exclude="page"),
    })


@signed_in
def job_progress_json(request, job_id):
    return JsonResponse(_progress(job_get(user=request.user, job_id=job_id)))


@signed_in
@require_POST
def job_cancel_view(request, job_id):
    job = job_get(user=request.user, job_id=job_id)
    try:
        job_cancel(job=job, actor=request.user, ip=client_ip(request))
        messages.success(request, "The job was cancelled: items not yet started will not run.")
    except JobNotCancellable as exc:
        messages.error(request, f"The job cannot be cancelled: {exc}.")
    target = request.POST.get("next") or ""
    return redirect(target if target.startswith("/") and not target.startswith("//") else reverse("portal:jobs"))


@signed_in
def job_new(request):
    kinds = [get_kind(name) for name in available_kinds(user=request.user)]
    names = [k.name for k in kinds]
    chosen = request.POST.get("kind") or request.GET.get("kind") or "literature"
    kind = get_kind(chosen) if chosen in names else get_kind(names[0])
    fields = param_fields(kind.params_schema)
    context = {"kinds": kinds, "kind": kind, "fields": fields, "errors": {}, "pasted": "", "status": 200}
    if request.method == "POST":
        params = params_from_form(fields, request.POST)
        upload = request.FILES.get("file")
        pasted = request.POST.get("text") or ""
        context["pasted"] = pasted
        try:
            if upload is not None and pasted.strip():
                raise SubmissionInvalid({"file": ["send either a file or pasted text, not both"]})
            if upload is not None:
                submission = job_validate_upload(user=request.user, kind_name=kind.name, content=upload,
                                                 filename=upload.name or "", size=upload.size, params=params)
            else:
                items = pasted_items(pasted)
                if not items:
                    raise SubmissionInvalid({"file": ["upload a file or paste text (one item per paragraph)"]})
                submission = job_validate(user=request.user, kind_name=kind.name, items=items, params=params)
        except SubmissionInvalid as exc:
            rest = attach_errors(fields, exc.errors)
            context["errors"] = _input_errors(rest)
            context["status"] = exc.status_code
        else:
            job = _submit(request, submission)
            return redirect("portal:job", job_id=job.pk)
    return render(request, "portal/job_new.html", context, status=context["status"])


def _submit(request, submission) -> Job:
    """Store and queue a checked submission. With the broker down the job is still stored (reconcile sends it
    once the queue is back, issue 12): say so on the job page instead of failing the request."""
    try:
        job, _ = job_submit(owner=request.user, submission=submission, ip=client_ip(request))
    except BrokerUnavailable as exc:
        messages.warning(request, "The job queue is unreachable right now. The job was stored and will start "
                                  "by itself once the queue is back.")
        return exc.job
    messages.success(request, f"Job submitted: {job.total_items:,} item(s).")
    return job


def _input_errors(errors: dict[str, list[str]]) -> dict:
    """Errors of the input (file/pasted items) and the rest, for display next to the input and above the form."""
    out = {"input": [], "other": []}
    for path, messages_ in errors.items():
        if path in ("file", "items") or path.startswith("items["):
            prefix = "" if path in ("file", "items") else f"{path}: "
            out["input"].extend(prefix + m for m in messages_)
        else:
            out["other"].extend(f"{path}: {m}" if path != "non_field_errors" else m for m in messages_)
    return out


def _query(request, *, exclude: str) -> str:
    params = request.GET.copy()
    params.pop(exclude, None)
    return params.urlencode()


def _filtered_items(request, job: Job):
    """The job's items with the table's filters (status, concept name, answer label) and sort applied."""
    status = request.GET.get("status") or ""
    concept = (request.GET.get("concept") or "").strip()
    answer = request.GET.get("answer") or ""
    items = job_items(job=job, status=status if status in JobItem.Status.values else None)
    if concept:
        # Exact concept name, case-insensitive, on the stored JSON text (same layout on SQLite and Postgres).
        needle = '"name": ' + json.dumps(concept)
        items = items.annotate(result_text=Cast("result", TextField())).filter(result_text__icontains=needle)
    if answer:
        items = items.filter(result__answer__label=answer)
    sort = request.GET.get("sort") or "index"
    items = items.order_by(RESULT_SORTS.get(sort, "index"), "index")
    return items, {"status": status, "concept": concept, "answer": answer, "sort": sort}


def _charts(job: Job) -> dict:
    """Top concepts and answer distribution over every item (only the JSON keys needed are read)."""
    items = JobItem.objects.filter(job=job, status=JobItem.Status.SUCCEEDED)
    concepts = draw.top_concepts(items.values_list("result__concepts", flat=True).iterator(chunk_size=500))
    answers = draw.answer_distribution(items.values_list("result__answer__label", flat=True).iterator(chunk_size=500))
    return {"concepts": concepts,
            "concepts_svg": draw.bar_chart(concepts, title="Top concepts (abstracts mentioning each)"),
            "answers": answers,
            "answers_svg": draw.bar_chart(answers, title="Answer distribution", colours=draw.BAR_COLOURS)
            if answers else None}


@signed_in
def job_detail(request, job_id):
    job = job_get(user=request.user, job_id=job_id)
    items, filters = _filtered_items(request, job)
    page = Paginator(items.only("index", "input", "status", "result", "error", "duration_ms"),
                     RESULTS_PER_PAGE).get_page(request.GET.get("page"))
    job_read_record(job=job, actor=request.user, action="job.view", ip=client_ip(request),
                    detail={"via": "portal", "page": page.number})
    rows = [_row(job, item) for item in page]
    context = {"job": job, "progress": _progress(job), "page": page, "rows": rows, "filters": filters,
               "item_statuses": JobItem.Status.values, "query": _query(request, exclude="page"),
               "sort_query": _query(request, exclude="sort"), "sorts": RESULT_SORTS}
    if job.kind == "literature":
        context["charts"] = _charts(job)
    elif job.kind in ("diagnosis", "hypothesis") and job.is_final:
        first = job_items(job=job).filter(status=JobItem.Status.SUCCEEDED).first()
        context["first_result"] = first.result if first else None
        if job.kind == "hypothesis" and first:
            context["graph_svg"] = draw.abc_graph(first.result)
    return render(request, "portal/job_detail.html", context)


def _row(job: Job, item: JobItem) -> dict:
    source = item.input if isinstance(item.input, dict) else {"text": item.input}
    result = item.result if isinstance(item.result, dict) else {}
    title = source.get("title") or source.get("symptoms") or source.get("start") or (source.get("text") or "")[:90]
    answer = result.get("answer") or {}
    names = [c.get("name") for c in result.get("concepts") or []]
    return {"item": item, "title": title, "pmid": source.get("pmid"), "answer": answer.get("label"),
            "concepts": names[:4], "more_concepts": max(0, len(names) - 4)}


@signed_in
def job_item(request, job_id, index: int):
    job = job_get(user=request.user, job_id=job_id)
    item = job_items(job=job).filter(index=index).first()
    if item is None:
        raise Http404("No such item.")
    job_read_record(job=job, actor=request.user, action="results.read", ip=client_ip(request),
                    detail={"via": "portal", "item": index})
    source = item.input if isinstance(item.input, dict) else {"text": item.input}
    result = item.result if isinstance(item.result, dict) else {}
    heading = source.get("title") or source.get("symptoms") or source.get("start") or f"Item {index}"
    context = {"job": job, "item": item, "source": source, "result": result, "heading": heading,
               "previous": index - 1 if index > 0 else None,
               "next": index + 1 if index + 1 < job.total_items else None,
               "result_json": json.dumps({k: v for k, v in result.items() if k != "embedding"}, indent=2,
                                         ensure_ascii=False)}
    if job.kind == "literature" and source.get("text"):
        context["marked"] = draw.marked_text(source["text"], draw.literature_spans(result))
    return render(request, "portal/job_item.html", context)


@signed_in
def job_download(request, job_id, fmt: str):
    """The API's streamed export (same columns, same audit record), for the signed-in session."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    view = {"csv": apis.JobResultsCsvApi, "jsonl": apis.JobResultsJsonlApi}.get(fmt)
    if view is None:
        raise Http404("No such format.")
    return view.as_view()(request, job_id=job_id)


# --- diagnosis ----------------------------------------------------------------------------------------------

@signed_in
def diagnosis(request):
    """A single case: symptoms, age, sex (and, under "Advanced", the kind's params) -> a diagnosis job on the
    interactive queue; its job page polls until the ranking is there."""
    values = {"symptoms": "", "age": "", "sex": ""}
    fields = param_fields(get_kind("diagnosis").params_schema)
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        values = {name: (request.POST.get(name) or "").strip() for name in values}
        params = params_from_form(fields, request.POST)
        item: dict = {"symptoms": values["symptoms"]}
        if values["age"]:
            item["age"] = int(values["age"]) if values["age"].lstrip("-").isdigit() else values["age"]
        if values["sex"]:
            item["sex"] = values["sex"]
        try:
            submission = job_validate(user=request.user, kind_name="diagnosis", items=[item], params=params)
        except SubmissionInvalid as exc:
            status = exc.status_code
            for path, messages_ in attach_errors(fields, exc.errors).items():
                name = path.removeprefix("items[0]").lstrip(".") or "symptoms"
                errors.setdefault(name if name in values else "other", []).extend(messages_)
        else:
            job = _submit(request, submission)
            return redirect("portal:job", job_id=job.pk)
    recent = job_list(user=request.user).filter(kind="diagnosis").order_by("-created_at")[:5]
    return render(request, "portal/diagnosis.html", {"values": values, "errors": errors, "recent": recent,
                                                     "fields": fields, "advanced_open": any(f.errors for f in fields)},
                  status=status)


# --- models -------------------------------------------------------------------------------------------------

def _flat_metrics(metrics, prefix: str = "") -> list[tuple[str, str]]:
    """Nested metrics as (dotted name, value) rows; long lists are summarised."""
    rows = []
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            rows.extend(_flat_metrics(value, f"{prefix}{key}."))
    elif isinstance(metrics, list):
        rows.append((prefix.rstrip("."), f"{len(metrics)} values" if len(metrics) > 6 else json.dumps(metrics)))
    else:
        rows.append((prefix.rstrip("."), f"{metrics:.4g}" if isinstance(metrics, float) else str(metrics)))
    return rows


@signed_in
def models_page(request):
    versions = list(model_version_list())
    active = [{"version": v, "metrics": _flat_metrics(v.metrics)[:40]} for v in versions
              if v.status == ModelVersion.Status.ACTIVE]
    others = [v for v in versions if v.status != ModelVersion.Status.ACTIVE]
    return render(request, "portal/models.html", {"active": active, "others": others})
