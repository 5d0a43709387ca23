"""Chunk processing in-process: idempotent redelivery, per-item failures, exactly-once finalization."""
import pytest

from medassist import kinds
from medassist.audit.models import AuditEvent
from medassist.jobs.models import Job, JobItem
from medassist.jobs.services import job_fail_chunk, job_process_chunk, job_submit, job_validate
from medassist.kinds import Kind
from medassist.kinds.literature import ITEM_SCHEMA, _normalize
from workers.versions import get_runtime

ABSTRACTS = [
    "BACKGROUND: Aspirin is widely used after myocardial infarction.\nMETHODS: We followed 1,200 patients for "
    "two years.\nRESULTS: Recurrent events fell by 21% (p < 0.001).\nCONCLUSIONS: Daily aspirin lowers the risk of "
    "recurrent myocardial infarction.",
    "Metformin remains first-line therapy for type 2 diabetes mellitus. In this cohort of 5,000 adults, metformin "
    "use was associated with fewer hospital admissions. These findings support current guidelines.",
    "Fever and headache were the most common symptoms among children with malaria in the study region.",
]


def make_job(user, kind_name, items, params=None):
    submission = job_validate(user=user, kind_name=kind_name, items=items, params=params or {})
    job, _ = job_submit(owner=user, submission=submission)
    return job


@pytest.fixture
def flaky_kind(monkeypatch):
    """A kind whose handler fails on any item whose text contains 'boom'."""

    def run(batch, params, runtime):
        for item in batch:
            if "boom" in item["text"]:
                raise ValueError("cannot analyse this item")
        return [{"ok": True} for _ in batch]

    kind = Kind(name="flaky", description="test", queue="batch", item_schema=ITEM_SCHEMA,
                params_schema={"type": "object"}, result_schema={}, run=run, normalize_item=_normalize)
    monkeypatch.setitem(kinds.KINDS, "flaky", kind)
    return kind


def test_literature_chunk_stores_concepts_summary_and_model_version(alice, tiny_models):
    job = make_job(alice, "literature", ABSTRACTS, {"summary_sentences": 1})
    report = job_process_chunk(job_id=job.pk, start=0, end=3, runtime=get_runtime())
    assert (report.succeeded, report.failed) == (3, 0)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.succeeded_items == 3 and job.finished_at is not None
    assert job.model_version.role == "concepts" and job.model_version.status == "active"
    assert job.model_versions["concepts"].startswith("concepts:")
    first, second, third = (item.result for item in job.items.order_by("index"))
    assert {c["name"] for c in first["concepts"]} >= {"Aspirin", "Myocardial Infarction"}
    assert first["summary"]["text"] == "Daily aspirin lowers the risk of recurrent myocardial infarction."
    assert "Metformin" in {c["name"] for c in second["concepts"]}
    assert {"symptom"} <= {c["type"] for c in third["concepts"]}
    assert all(r["model_version"] == job.model_version.label for r in (first, second, third))
    assert first["embedding"]["model_version"] == tiny_models["embedder"].label == job.model_versions["embedder"]
    assert first["embedding"]["dim"] == 32 and len(first["embedding"]["vector"]) == 32


def test_redelivered_chunk_is_skipped_and_counts_once(alice, tiny_models):
    job = make_job(alice, "literature", ABSTRACTS)
    job_process_chunk(job_id=job.pk, start=0, end=2, runtime=get_runtime())
    again = job_process_chunk(job_id=job.pk, start=0, end=2, runtime=get_runtime())
    assert again.processed == 0 and again.skipped == "all items already processed"
    job.refresh_from_db()
    assert (job.status, job.succeeded_items) == ("running", 2)
    job_process_chunk(job_id=job.pk, start=2, end=3, runtime=get_runtime())
    job_process_chunk(job_id=job.pk, start=2, end=3, runtime=get_runtime())
    job.refresh_from_db()
    assert (job.status, job.succeeded_items) == ("succeeded", 3)
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    assert AuditEvent.objects.filter(action="job.finish", object_id=str(job.pk)).count() == 1


def test_one_bad_item_fails_alone(alice, flaky_kind):
    job = make_job(alice, "flaky", ["fine one", "this one goes boom", "fine two"])
    job_process_chunk(job_id=job.pk, start=0, end=3, runtime=get_runtime())
    job.refresh_from_db()
    assert job.status == "partially_failed" and (job.succeeded_items, job.failed_items) == (2, 1)
    bad = job.items.get(index=1)
    assert bad.status == "failed" and bad.error == "ValueError: cannot analyse this item" and bad.result is None
    assert list(job.items.filter(status="succeeded").values_list("index", flat=True)) == [0, 2]


def test_all_items_failing_fails_the_job_with_a_readable_error(alice, flaky_kind):
    job = make_job(alice, "flaky", ["boom 1", "boom 2"])
    job_process_chunk(job_id=job.pk, start=0, end=2, runtime=get_runtime())
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "every item failed; first error: ValueError: cannot analyse this item"


def test_worker_error_fails_the_chunk_items_with_the_reason(alice, tiny_models):
    job = make_job(alice, "literature", ABSTRACTS)
    job_process_chunk(job_id=job.pk, start=0, end=1, runtime=get_runtime())
    assert job_fail_chunk(job_id=job.pk, start=0, end=3, reason="worker error: disk full") == 2
    job.refresh_from_db()
    assert job.status == "partially_failed"
    assert set(job.items.filter(status="failed").values_list("error", flat=True)) == {"worker error: disk full"}


def test_cancelled_job_chunks_do_nothing(alice):
    job = make_job(alice, "literature", ABSTRACTS)
    Job.objects.filter(pk=job.pk).update(status="cancelled")
    JobItem.objects.filter(job=job).update(status="cancelled")
    report = job_process_chunk(job_id=job.pk, start=0, end=3, runtime=get_runtime())
    assert report.skipped == "job is cancelled"
    assert not JobItem.objects.filter(job=job, result__isnull=False).exists()


def test_a_jobs_main_model_version_is_named_by_its_kind_not_by_role_order():
    from medassist.kinds import get_kind

    literature = get_kind("literature")
    # A question job uses the dictionaries, the answer-evidence model and the generator: the answer rests
    # on the evidence reading (the generator explains it), whatever order the roles were loaded in.
    assert literature.main_role(["generator", "concepts", "answer_evidence"]) == "answer_evidence"
    assert literature.main_role(["concepts", "generator"]) == "generator"  # a generated summary
    assert literature.main_role(["concepts"]) == "concepts"
    assert get_kind("diagnosis").main_role(["generator", "embedder"]) == "embedder"
    assert get_kind("noop").main_role([]) is None
