"""Issue 13, audit item 4 and privacy (audit content): job list reads, probing 404s on another user's job,
corpus writes and command-line promotions are audited; audit events keep no free text from inputs."""
import json
import uuid
from io import StringIO

from django.core.management import call_command

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_verify_chain, os_actor

ABSTRACT = "Patients with type 2 diabetes were randomized to metformin or placebo. Metformin reduced HbA1c."


def submit(api, **params):
    response = api.post("/api/v1/jobs/", {"kind": "literature", "items": [ABSTRACT], "params": params}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_job_list_reads_are_audited(api):
    job_id = submit(api)
    assert api.get("/api/v1/jobs/?kind=literature").status_code == 200
    event = AuditEvent.objects.get(action="job.list")
    assert event.actor_username == "alice" and event.ip == "127.0.0.1"
    assert event.detail["filters"] == {"kind": "literature"} and event.detail["job_ids"] == [job_id]
    assert event.detail["count"] == 1


def test_job_list_reads_in_the_admin_are_audited(api, admin_client):
    job_id = submit(api)
    assert admin_client.get("/admin/jobs/job/?kind=literature").status_code == 200
    event = AuditEvent.objects.get(action="job.list")
    assert event.actor_username == "admin" and event.detail["via"] == "admin"
    assert event.detail["job_ids"] == [job_id] and event.detail["filters"] == {"kind": "literature"}


def test_every_404_on_another_users_job_is_audited_as_probing(api, make_user, client_for):
    job_id = submit(api)
    mallory = client_for(make_user("mallory"))
    paths = ("", "results/", "results.jsonl", "results.csv")
    for path in paths:
        assert mallory.get(f"/api/v1/jobs/{job_id}/{path}").status_code == 404
    assert mallory.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 404
    probes = AuditEvent.objects.filter(action="job.not_found")
    assert probes.count() == len(paths) + 1
    assert {(e.actor_username, e.object_id, e.ip) for e in probes} == {("mallory", job_id, "127.0.0.1")}
    # An id that exists for nobody is an ordinary 404 (not recorded: nothing was probed).
    assert mallory.get(f"/api/v1/jobs/{uuid.uuid4()}/").status_code == 404
    assert AuditEvent.objects.filter(action="job.not_found").count() == len(paths) + 1
    assert audit_verify_chain().ok


def test_the_literature_question_is_kept_only_as_a_fingerprint(api):
    question = "Does metformin help Mrs Jane Doe, born 1950-02-03?"
    submit(api, question=question, summary_sentences=2)
    submit(api, question=question)
    events = list(AuditEvent.objects.filter(action="job.submit"))
    stored = json.dumps([e.detail for e in events])
    assert "Jane" not in stored and "metformin" not in stored.lower()
    first, second = (e.detail["params"]["question"] for e in events)
    assert first.startswith("sha256:") and first == second  # the same question matches across events
    assert events[0].detail["params"]["summary_sentences"] == 2


def test_corpus_writes_are_audited_without_their_text(alice):
    from medassist.knowledge.services import corpus_add_documents, corpus_delete_documents

    added = corpus_add_documents(items=[{"text": ABSTRACT, "pmid": "4242"}], concepts_per_item=[[]],
                                 owner_id=alice.pk, visibility="private")
    event = AuditEvent.objects.get(action="corpus.write")
    assert event.actor_username == "alice" and event.detail["operation"] == "add"
    assert event.detail["document_ids"] == [added.documents[0]["document_id"]]
    assert "metformin" not in json.dumps(event.detail).lower()
    assert corpus_delete_documents(owner_id=alice.pk) == 1
    deleted = AuditEvent.objects.filter(action="corpus.write").last()
    assert deleted.detail["operation"] == "delete" and deleted.detail["documents"] == 1


def test_a_promotion_from_the_command_line_names_the_os_user(db, tiny_model_dirs):
    out = StringIO()
    call_command("models_register", "--path", str(tiny_model_dirs["llama"]), "--name", "cli-llama", "--promote",
                 stdout=out)
    event = AuditEvent.objects.filter(action="model.promote").last()
    assert "cli-llama" in event.model_version and event.actor_username == os_actor() and event.actor_id is None
    assert os_actor().startswith("os:")
