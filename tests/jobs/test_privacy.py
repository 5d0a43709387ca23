"""Privacy (issue 13): redaction before storage, DELETE of a job, retention, a user's data deletion.

Every note below is synthetic, written by this test: no real patient data.
"""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from medassist.audit.models import AuditEvent
from medassist.common.redaction import redact_text
from medassist.jobs.models import Job, JobItem
from medassist.jobs.services import JobContext, job_process_chunk
from medassist.knowledge.models import Document
from workers.versions import get_runtime

NOTE = ("Mr. John Smith, 58 y/o male, MRN: 00482913, seen on 03/14/2024 by Dr Alice Wong. Call (555) 123-4567 or "
        "j.smith@example.org. c/o chest pain x 3 days, BP 120/80, HR 96, temp 38.5, since March 2024.")
IDENTIFIERS = ("John Smith", "00482913", "03/14/2024", "Alice Wong", "(555) 123-4567", "j.smith@example.org")
CLINICAL = ("58 y/o male", "chest pain x 3 days", "BP 120/80", "HR 96", "temp 38.5", "March 2024")


# --- redaction ---------------------------------------------------------------------------------------------


def test_identifiers_are_replaced_and_clinical_content_stays():
    text, spans = redact_text(NOTE)
    assert not any(value in text for value in IDENTIFIERS)
    assert all(value in text for value in CLINICAL)  # ages, durations, vitals, a month and year are content
    assert text.startswith("Mr. [NAME], 58 y/o male, MRN: [ID], seen on [DATE] by Dr [NAME]. Call [PHONE] or [EMAIL].")
    # Spans point into the text as sent; they carry the type, never the value.
    assert [(s.type, NOTE[s.start:s.end]) for s in spans] == [
        ("name", "John Smith"), ("id", "00482913"), ("date", "03/14/2024"), ("name", "Alice Wong"),
        ("phone", "(555) 123-4567"), ("email", "j.smith@example.org")]


@pytest.mark.parametrize("note, gone, kept", [
    ("Admitted 14 March 2024; Mrs O'Neil, 58-year-old, SSN 123-45-6789, ph +44 20 7946 0958.",
     ("14 March 2024", "O'Neil", "123-45-6789", "+44 20 7946 0958"), ("58-year-old",)),
    ("Follow-up 2024-03-14, Jan 5, 2023 and 5.1.24. Pt ID 7781234. Hb 9.8 g/dL, 2.5 mg/kg, pain 10/10, 1/2 tab.",
     ("2024-03-14", "Jan 5, 2023", "5.1.24", "7781234"), ("Hb 9.8 g/dL", "2.5 mg/kg", "10/10", "1/2 tab")),
    ("In 1234567 screened adults (2019), p<0.001, 95% CI 1.2-3.4, platelets 150000.", (),
     ("1234567", "(2019)", "p<0.001", "1.2-3.4", "150000")),
])
def test_redaction_on_more_synthetic_notes(note, gone, kept):
    text, _ = redact_text(note)
    assert not [value for value in gone if value in text], text
    assert all(value in text for value in kept), text


def test_diagnosis_free_text_is_redacted_before_it_is_stored_by_default(api):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": [{"symptoms": NOTE}]}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["params"]["redact"] is True
    stored = JobItem.objects.get(job_id=response.json()["id"]).input
    assert not any(value in stored["symptoms"] for value in IDENTIFIERS)
    assert "chest pain x 3 days" in stored["symptoms"]
    assert {(r["field"], r["type"]) for r in stored["redactions"]} == {
        ("symptoms", t) for t in ("name", "id", "date", "phone", "email")}
    assert all(set(r) == {"field", "type", "start", "end"} for r in stored["redactions"])

    kept = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": [NOTE], "params": {"redact": False}},
                    format="json")
    assert kept.status_code == 202
    assert JobItem.objects.get(job_id=kept.json()["id"]).input == {"symptoms": NOTE}


def test_literature_redacts_on_request_and_the_result_lists_the_spans(api, alice):
    abstract = {"text": "Case report: Dr Jane Roe (jane.roe@example.org) treated metformin overdose on 2023-02-01.",
                "title": "A case seen by Dr Jane Roe"}
    plain = api.post("/api/v1/jobs/", {"kind": "literature", "items": [abstract], "params": {"embed": False}},
                     format="json")
    assert plain.status_code == 202 and plain.json()["params"]["redact"] is False
    assert JobItem.objects.get(job_id=plain.json()["id"]).input["text"] == abstract["text"]

    response = api.post("/api/v1/jobs/", {"kind": "literature", "items": [abstract],
                                          "params": {"embed": False, "redact": True}}, format="json")
    job_id = response.json()["id"]
    assert JobItem.objects.get(job_id=job_id).input["title"] == "A case seen by Dr [NAME]"
    job_process_chunk(job_id=job_id, start=0, end=1, runtime=get_runtime())
    (row,) = api.get(f"/api/v1/jobs/{job_id}/results/").json()["results"]
    assert row["status"] == "succeeded"
    assert [(r["field"], r["type"]) for r in row["result"]["redactions"]] == [
        ("text", "name"), ("text", "email"), ("text", "date"), ("title", "name")]
    start, end = row["result"]["redactions"][1]["start"], row["result"]["redactions"][1]["end"]
    assert abstract["text"][start:end] == "jane.roe@example.org"
    assert "jane.roe" not in str(row)


# --- DELETE /api/v1/jobs/{id}/ ---------------------------------------------------------------------------------


def _literature_job(api, texts=("Metformin in type 2 diabetes.",)) -> str:
    response = api.post("/api/v1/jobs/", {"kind": "literature", "items": list(texts),
                                          "params": {"embed": False, "question": "Does metformin help?"}},
                        format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_delete_purges_inputs_and_results_keeps_the_row_counts_and_audit(api, alice):
    job_id = _literature_job(api, ["Metformin in type 2 diabetes.", "Aspirin after myocardial infarction."])
    Job.objects.filter(pk=job_id).update(status="succeeded", succeeded_items=2, finished_at=timezone.now())
    response = api.delete(f"/api/v1/jobs/{job_id}/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "purged" and body["progress"]["succeeded"] == 2 and body["progress"]["total"] == 2
    assert "question" not in body["params"] and body["params"]["embed"] is False  # knobs kept, free text not
    assert not JobItem.objects.filter(job_id=job_id).exists()
    assert api.get(f"/api/v1/jobs/{job_id}/results/").json()["results"] == []
    event = AuditEvent.objects.get(action="job.purge", object_id=job_id)
    assert event.actor_username == "alice" and event.detail["items_deleted"] == 2
    assert AuditEvent.objects.filter(action="job.submit", object_id=job_id).exists()  # the trail stays
    # Idempotent: a second DELETE changes nothing and writes no second purge event.
    assert api.delete(f"/api/v1/jobs/{job_id}/").json()["status"] == "purged"
    assert AuditEvent.objects.filter(action="job.purge", object_id=job_id).count() == 1


def test_delete_of_a_running_job_stops_it_and_a_late_chunk_stores_nothing(api):
    job_id = _literature_job(api)
    assert api.delete(f"/api/v1/jobs/{job_id}/").status_code == 200
    report = job_process_chunk(job_id=job_id, start=0, end=1, runtime=get_runtime())
    assert report.processed == 0 and not JobItem.objects.filter(job_id=job_id).exists()
    assert Job.objects.get(pk=job_id).status == "purged"
    assert JobContext(job_id).cancelled()  # a long-running handler (fine-tuning) stops as on cancel


def test_only_the_owner_or_a_job_viewer_may_delete(api, make_user, client_for):
    job_id = _literature_job(api)
    assert client_for(make_user("bob")).delete(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert JobItem.objects.filter(job_id=job_id).exists()
    viewer = client_for(make_user("dpo", perms=("jobs.view_all_jobs",)))
    assert viewer.delete(f"/api/v1/jobs/{job_id}/").json()["status"] == "purged"
    assert AuditEvent.objects.get(action="job.purge", object_id=job_id).actor_username == "dpo"


# --- retention -------------------------------------------------------------------------------------------------


def _finished(api, kind: str, days_ago: float, status: str = "succeeded") -> str:
    items = [{"symptoms": "fever"}] if kind == "diagnosis" else ["Metformin in type 2 diabetes."]
    job_id = api.post("/api/v1/jobs/", {"kind": kind, "items": items}, format="json").json()["id"]
    when = timezone.now() - dt.timedelta(days=days_ago)
    Job.objects.filter(pk=job_id).update(status=status, finished_at=when if status != "running" else None,
                                         created_at=when, succeeded_items=1)
    return job_id


def test_purge_expired_applies_retention_per_kind(api, settings, capsys):
    settings.MEDASSIST_RETENTION_DAYS = {"diagnosis": 30, "default": 0}
    old = _finished(api, "diagnosis", 31)
    recent = _finished(api, "diagnosis", 29)
    running = _finished(api, "diagnosis", 90, status="running")
    literature = _finished(api, "literature", 400)  # default 0: kept for ever
    call_command("purge_expired", "--dry-run")
    assert "1 job(s) due" in capsys.readouterr().out and JobItem.objects.filter(job_id=old).exists()
    call_command("purge_expired")
    assert "purged 1 job(s) (diagnosis: 1)" in capsys.readouterr().out
    statuses = {str(pk): status for pk, status in Job.objects.values_list("pk", "status")}
    assert statuses[old] == "purged" and not JobItem.objects.filter(job_id=old).exists()
    assert [statuses[j] for j in (recent, running, literature)] == ["succeeded", "running", "succeeded"]
    event = AuditEvent.objects.get(action="job.purge", object_id=old)
    assert event.actor_username.startswith("os:") and event.detail["reason"] == "retention: 30 days"
    settings.MEDASSIST_RETENTION_DAYS = {"default": 365}
    call_command("purge_expired")
    assert Job.objects.get(pk=literature).status == "purged"


# --- a user's data -----------------------------------------------------------------------------------------------


def test_purge_user_deactivates_and_deletes_their_data_and_the_user_can_be_deleted(api, alice, capsys, make_user,
                                                                                   client_for):
    job_id = _literature_job(api)
    Document.objects.create(pmid="1", title="alice's", abstract="private text", source="job", owner=alice)
    Document.objects.create(pmid="1", title="imported", abstract="shared text", source="medline",
                            visibility="shared")
    call_command("purge_user", "alice", "--yes")
    assert "alice: deactivated; 1 job(s) purged, 1 corpus document(s)" in capsys.readouterr().out
    alice.refresh_from_db()
    assert not alice.is_active and not JobItem.objects.filter(job_id=job_id).exists()
    assert list(Document.objects.values_list("title", flat=True)) == ["imported"]
    assert api.get("/api/v1/jobs/").status_code == 401  # tokens gone, account inactive
    assert AuditEvent.objects.filter(action="user.purge", object_id=str(alice.pk)).exists()
    # Job.owner no longer blocks deleting the account: the purged job stays as the record, ownerless.
    alice.delete()
    assert Job.objects.get(pk=job_id).owner_id is None and Job.objects.get(pk=job_id).status == "purged"
    viewer = client_for(make_user("dpo", perms=("jobs.view_all_jobs",)))
    shown = viewer.get(f"/api/v1/jobs/{job_id}/")
    assert shown.status_code == 200 and shown.json()["owner"] is None


def test_shared_corpus_documents_need_the_permission(api, make_user, client_for):
    params = {"embed": False, "add_to_corpus": True, "corpus_visibility": "shared"}
    response = api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Metformin."], "params": params},
                        format="json")
    assert response.status_code == 400 and "params.corpus_visibility" in response.json()["errors"]
    assert not Job.objects.exists()
    curator = client_for(make_user("curator", perms=("knowledge.share_document",)))
    assert curator.post("/api/v1/jobs/", {"kind": "literature", "items": ["Metformin."], "params": params},
                        format="json").status_code == 202
