"""The jobs API as the portal sees it: status codes, stored rows, field-level errors, authorization."""
import gzip
import io
import json

import pytest
from django.test import override_settings

from medassist.audit.models import AuditEvent
from medassist.jobs.models import Job, JobItem
from medassist.kinds import get_kind

ABSTRACT = ("Patients with type 2 diabetes mellitus were randomized to metformin or placebo. "
            "Metformin reduced HbA1c by 1.1% at 24 weeks. We conclude that metformin is effective.")


def submit(api, body, **extra):
    return api.post("/api/v1/jobs/", body, format="json", **extra)


def upload(api, name, data: bytes, kind="literature", params=None):
    payload = {"kind": kind, "file": io.BytesIO(data)}
    payload["file"].name = name
    if params is not None:
        payload["params"] = json.dumps(params)
    return api.post("/api/v1/jobs/", payload, format="multipart")


def assert_nothing_stored():
    assert Job.objects.count() == 0
    assert JobItem.objects.count() == 0


def test_submit_returns_202_and_stores_job_and_items(api, alice):
    response = submit(api, {"kind": "literature", "items": [ABSTRACT, {"text": ABSTRACT, "pmid": "1", "title": "T"}],
                            "params": {"summary_sentences": 2}})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["progress"] == {"total": 2, "succeeded": 0, "failed": 0, "processed": 0, "remaining": 2,
                                "percent": 0.0, "eta_seconds": None}
    assert response["Location"].endswith(f"/api/v1/jobs/{body['id']}/")
    job = Job.objects.get(pk=body["id"])
    assert job.owner == alice and job.kind == "literature" and job.queue == "batch"
    assert list(job.items.order_by("index").values_list("input", flat=True)) == [
        {"text": ABSTRACT}, {"text": ABSTRACT, "pmid": "1", "title": "T"}]
    assert AuditEvent.objects.filter(action="job.submit", object_id=str(job.pk), actor_username="alice").exists()


def test_idempotency_key_returns_the_first_job(api):
    first = submit(api, {"kind": "literature", "items": [ABSTRACT]}, HTTP_IDEMPOTENCY_KEY="batch-7")
    again = submit(api, {"kind": "literature", "items": [ABSTRACT]}, HTTP_IDEMPOTENCY_KEY="batch-7")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1 and JobItem.objects.count() == 1


@pytest.mark.parametrize("body, field, fragment", [
    ({"kind": "nope", "items": [ABSTRACT]}, "kind", "unknown job kind 'nope'"),
    ({"kind": "noop", "items": [ABSTRACT]}, "kind", "unknown job kind 'noop'"),  # run_diagnostics only
    ({"kind": "literature", "items": [ABSTRACT, {"text": "   "}]}, "items[1].text", "must not be empty"),
    ({"kind": "literature", "items": [{"title": "no text"}]}, "items[0].text", "this field is required"),
    ({"kind": "literature", "items": [{"text": 5}]}, "items[0].text", "must be of type string"),
    ({"kind": "literature", "items": []}, "items", "at least one item is required"),
    ({"kind": "literature", "items": "abc"}, "items", "must be a list"),
    ({"kind": "literature", "items": [ABSTRACT], "params": {"summary_sentences": 0}}, "params.summary_sentences",
     "less than the minimum"),
    ({"kind": "literature", "items": [ABSTRACT], "params": {"colour": "red"}}, "params", "unknown parameter"),
])
def test_invalid_submissions_get_field_errors_and_store_nothing(api, body, field, fragment):
    response = submit(api, body)
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert field in errors, errors
    assert any(fragment in message for message in errors[field]), errors
    assert_nothing_stored()


def test_malformed_json_is_a_400(api):
    response = api.post("/api/v1/jobs/", data='{"kind": "literature", "items": [', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert_nothing_stored()


@override_settings(MEDASSIST_MAX_ITEMS_PER_JOB=3)
def test_too_many_items_is_a_413(api):
    response = submit(api, {"kind": "literature", "items": [ABSTRACT] * 4})
    assert response.status_code == 413
    assert "the limit is 3 per job" in response.json()["errors"]["items"][0]
    assert_nothing_stored()


@override_settings(MEDASSIST_MAX_CHARS_PER_ITEM=50)
def test_item_over_the_character_limit_names_the_item(api):
    response = submit(api, {"kind": "literature", "items": ["short enough abstract text", ABSTRACT]})
    assert response.status_code == 400
    assert response.json()["errors"]["items[1].text"] == [f"is {len(ABSTRACT):,} characters long; the limit is 50"]
    assert_nothing_stored()


@override_settings(MEDASSIST_MAX_UPLOAD_BYTES=1000)
def test_oversized_upload_is_a_413(api):
    response = upload(api, "big.jsonl", (json.dumps({"text": ABSTRACT}) + "\n").encode() * 20)
    assert response.status_code == 413
    assert "file" in response.json()["errors"]
    assert_nothing_stored()


@pytest.mark.parametrize("name, data, fragment", [
    ("broken.xml", b"<MedlineCitationSet><MedlineCitation><PMID>1</PMID>", "not well-formed XML"),
    ("no-text.csv", b"id,title\n1,Some title\n", "CSV has no text column"),
    ("latin1.csv", "text\nfi\u00e8vre et c\u00e9phal\u00e9e\n".encode("latin-1"), "not UTF-8"),
    ("latin1.jsonl", json.dumps({"text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"), "not UTF-8"),
    ("empty.jsonl", b"", "empty"),
])
def test_bad_files_get_a_file_error_and_store_nothing(api, name, data, fragment):
    response = upload(api, name, data)
    assert response.status_code == 400, response.content
    assert any(fragment in message for message in response.json()["errors"]["file"]), response.json()
    assert_nothing_stored()


def test_csv_and_gzipped_jsonl_uploads_are_accepted(api):
    csv_body = b'pmid,title,abstract\n11,"A title","' + ABSTRACT.encode() + b'"\n'
    response = upload(api, "batch.csv", csv_body, params={"summary_sentences": 1})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.source["format"] == "csv" and job.params["summary_sentences"] == 1
    # Stored with the kind's defaults filled in: the job records exactly what it ran with.
    assert job.params == get_kind("literature").params_with_defaults({"summary_sentences": 1})
    assert job.items.get().input["pmid"] == "11"
    jsonl = gzip.compress((json.dumps({"text": ABSTRACT, "id": "a"}) + "\n" + json.dumps(ABSTRACT) + "\n").encode())
    response = upload(api, "batch.jsonl.gz", jsonl)
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).total_items == 2


def test_upload_params_must_be_json(api):
    payload = {"kind": "literature", "file": io.BytesIO(b'{"text": "x y z"}\n'), "params": "{not json"}
    payload["file"].name = "a.jsonl"
    response = api.post("/api/v1/jobs/", payload, format="multipart")
    assert response.status_code == 400 and "params" in response.json()["errors"]
    assert_nothing_stored()


def test_requests_without_valid_credentials_are_refused_and_audited(client, db):
    assert client.get("/api/v1/jobs/").status_code in (401, 403)
    response = client.get("/api/v1/jobs/", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code in (401, 403)
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.detail["via"] == "token" and "not-a-real-token" not in json.dumps(event.detail)


def test_cross_user_access_is_a_404_for_every_job_endpoint(api, make_user, client_for):
    job_id = submit(api, {"kind": "literature", "items": [ABSTRACT]}).json()["id"]
    mallory = client_for(make_user("mallory"))
    for path in ("", "results/", "results.jsonl", "results.csv"):
        assert mallory.get(f"/api/v1/jobs/{job_id}/{path}").status_code == 404, path
    assert mallory.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 404
    assert Job.objects.get(pk=job_id).status == "queued"  # the refused cancel changed nothing
    assert mallory.get("/api/v1/jobs/").json()["count"] == 0
    staff = client_for(make_user("root", staff=True))  # staff status alone shows no one else's jobs
    assert staff.get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert staff.get("/api/v1/jobs/").json()["count"] == 0
    auditor = client_for(make_user("auditor", perms=("jobs.view_all_jobs",)))
    assert auditor.get(f"/api/v1/jobs/{job_id}/").status_code == 200
    assert auditor.get("/api/v1/jobs/").json()["count"] == 1


def test_list_filters_by_kind_status_and_created_range(api):
    job_id = submit(api, {"kind": "literature", "items": [ABSTRACT]}).json()["id"]
    assert api.get("/api/v1/jobs/?kind=literature").json()["count"] == 1
    assert api.get("/api/v1/jobs/?status=succeeded").json()["count"] == 0
    assert api.get("/api/v1/jobs/?status=queued").json()["results"][0]["id"] == job_id
    assert api.get("/api/v1/jobs/?created_after=2000-01-01T00:00:00Z").json()["count"] == 1
    assert api.get("/api/v1/jobs/?created_before=2000-01-01T00:00:00Z").json()["count"] == 0


def test_cancel_stops_pending_items_and_is_audited(api):
    job_id = submit(api, {"kind": "literature", "items": [ABSTRACT] * 3}).json()["id"]
    response = api.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert set(JobItem.objects.filter(job_id=job_id).values_list("status", flat=True)) == {"cancelled"}
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 409
    assert AuditEvent.objects.filter(action="job.cancel", object_id=job_id).count() == 1


def test_view_results_and_exports_are_audited(api):
    job_id = submit(api, {"kind": "literature", "items": [ABSTRACT]}).json()["id"]
    api.get(f"/api/v1/jobs/{job_id}/")
    api.get(f"/api/v1/jobs/{job_id}/results/")
    b"".join(api.get(f"/api/v1/jobs/{job_id}/results.csv").streaming_content)
    actions = list(AuditEvent.objects.filter(object_id=job_id).values_list("action", flat=True))
    assert actions == ["job.submit", "job.view", "results.read", "results.export"]


def test_results_status_filter_is_validated(api):
    job_id = submit(api, {"kind": "literature", "items": [ABSTRACT]}).json()["id"]
    response = api.get(f"/api/v1/jobs/{job_id}/results/?status=bogus")
    assert response.status_code == 400 and "status" in response.json()["errors"]


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"/api/v1/jobs/" in schema.content
    assert api.get("/api/v1/docs/").status_code == 200


def test_submissions_are_throttled_per_user(api, make_user, client_for, monkeypatch):
    from medassist.jobs.apis import SubmitRateThrottle

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "2/min", "user": "1000/min"})
    assert [submit(api, {"kind": "literature", "items": [ABSTRACT]}).status_code for _ in range(3)] == [202, 202, 429]
    assert api.get("/api/v1/jobs/").status_code == 200  # reads are not submissions
    assert submit(client_for(make_user("bob")), {"kind": "literature", "items": [ABSTRACT]}).status_code == 202
    assert Job.objects.count() == 3
