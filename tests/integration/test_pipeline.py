"""End to end through real processes: HTTP -> database -> broker -> ``celery worker`` -> database.

These run against whatever ``DATABASE_URL``/``CELERY_BROKER_URL`` name: Postgres and Redis in CI;
SQLite and the file-system broker on a laptop without services (the crash test then skips, since
that transport has no visibility timeout; under CI=true it fails instead).
"""
import json

import pytest
import requests
from django.core.management import call_command
from django.test import override_settings
from knox.models import AuthToken

from medassist.common.parsers import parse_upload
from medassist.jobs.models import Job, JobItem
from tests.conftest import require, require_shared_data, using_redis, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture
def http_token(transactional_db, django_user_model):
    user = django_user_model.objects.create_user("portal")
    return AuthToken.objects.create(user=user)[1]


def test_medline_file_over_http_is_fully_analysed_by_a_real_worker(live_server, http_token, start_worker, capsys,
                                                                   tiny_models, settings):
    settings.MEDASSIST_METRICS_TOKEN = "pipeline-metrics-token"  # /metrics needs it (or staff): issue 13
    medline = require_shared_data("medline-sample", "medline16n0902.xml.gz")
    worker = start_worker(name="pipeline")
    headers = {"Authorization": f"Token {http_token}"}
    with open(medline, "rb") as f:
        response = requests.post(f"{live_server.url}/api/v1/jobs/", headers=headers, timeout=60,
                                 data={"kind": "literature"}, files={"file": ("medline16n0902.xml.gz", f)})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["source"]["records"] == 604 and body["progress"]["total"] == 526

    job = wait_for_job(body["id"], worker=worker)
    assert job.status == "succeeded", job.error
    assert job.items.filter(status="succeeded", result__isnull=False).count() == 526
    assert job.model_version is not None and job.model_version.role == "concepts"

    detail = requests.get(body["url"], headers=headers, timeout=30).json()
    assert detail["progress"]["percent"] == 100.0 and detail["progress"]["succeeded"] == 526
    page = requests.get(f"{body['url']}results/?page_size=1000", headers=headers, timeout=30).json()
    assert page["count"] == 526
    first = page["results"][0]
    assert first["ref"]["pmid"] == "17942999" and first["result"]["summary"]["text"]
    assert first["result"]["embedding"]["model_version"] == tiny_models["embedder"].label
    exported = requests.get(f"{body['url']}results.jsonl", headers=headers, timeout=60).text.splitlines()
    assert len(exported) == 526 and json.loads(exported[-1])["status"] == "succeeded"
    csv_rows = requests.get(f"{body['url']}results.csv", headers=headers, timeout=60).text.splitlines()
    assert csv_rows[0].startswith("index,id,pmid,title,status") and len(csv_rows) >= 527
    metrics = requests.get(f"{live_server.url}/metrics", timeout=30,
                           headers={"Authorization": "Bearer pipeline-metrics-token"}).text
    assert 'medassist_jobs{status="succeeded"} 1.0' in metrics
    health = requests.get(f"{live_server.url}/health/", timeout=30).json()
    assert health["status"] == "ok" and health["checks"]["workers"]["count"] >= 1

    call_command("audit_verify")
    assert "audit chain OK" in capsys.readouterr().out


def test_sigkill_mid_job_then_a_new_worker_finishes_every_item_exactly_once(start_worker, alice, tiny_models):
    require(using_redis(), "crash recovery needs a broker with a visibility timeout: set CELERY_BROKER_URL to Redis")
    from medassist.jobs.services import job_submit, job_validate

    medline = require_shared_data("medline-sample", "medline16n0902.xml.gz")
    items = parse_upload(medline.read_bytes(), medline.name).items * 3  # 1,578 abstracts
    # A short visibility timeout so the crashed worker's unacknowledged chunks come back within the test.
    fast_redelivery = {"MEDASSIST_VISIBILITY_TIMEOUT": "6", "MEDASSIST_CHUNK_SOFT_TIME_LIMIT": "4",
                       "MEDASSIST_CHUNK_TIME_LIMIT": "5", "MEDASSIST_UNACKED_RESTORE_INTERVAL": "1",
                       "MEDASSIST_UNACKED_RESTORE_THROTTLE": "1",
                       # issue 12: a redelivered copy takes over once the dead delivery's heartbeat is stale
                       "MEDASSIST_HEARTBEAT_INTERVAL": "0.5", "MEDASSIST_HEARTBEAT_TIMEOUT": "3"}
    first = start_worker(name="doomed", extra_env=fast_redelivery)
    with override_settings(MEDASSIST_CHUNK_SIZE=10):
        job, _ = job_submit(owner=alice, submission=job_validate(user=alice, kind_name="literature", items=items,
                                                                 params={}))
    import time

    deadline = time.monotonic() + 120
    while Job.objects.get(pk=job.pk).processed_items < 100:
        assert time.monotonic() < deadline, first.tail()
        time.sleep(0.05)
    first.kill()
    at_kill = Job.objects.get(pk=job.pk)
    assert not at_kill.is_final and at_kill.processed_items < at_kill.total_items
    # The worst moment to die: inside the restore sweep, holding its Redis lock (the doomed worker sweeps
    # every second, so a kill lands there now and then: this once made the test wait out kombu's default
    # 300 s lock). The lock lives as long as a worker with the *deployed* settings sets it (not this test's
    # fast ones); the rescuer must still finish within the test's timeout.
    from config.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        held_for = int(channel.unacked_mutex_expire)
        channel.client.set(channel.unacked_mutex_key, "held-by-the-killed-worker", ex=held_for)
    assert held_for <= 60

    second = start_worker(name="rescuer", extra_env=fast_redelivery)
    job = wait_for_job(job.pk, timeout=240, worker=second)
    assert job.status == "succeeded", job.error
    assert (job.succeeded_items, job.failed_items) == (1578, 0)
    items = JobItem.objects.filter(job=job)
    assert items.count() == 1578 and items.filter(status="succeeded", result__isnull=False).count() == 1578
    assert set(items.values_list("attempts", flat=True)) == {1}  # each item's result was stored exactly once


def test_cancel_while_a_real_worker_runs_stops_the_rest(start_worker, alice, tiny_models):
    from medassist.jobs.services import job_cancel, job_submit, job_validate

    medline = require_shared_data("medline-sample", "medline16n0902.xml.gz")
    items = parse_upload(medline.read_bytes(), medline.name).items * 2
    worker = start_worker(name="cancel")
    with override_settings(MEDASSIST_CHUNK_SIZE=10):
        job, _ = job_submit(owner=alice, submission=job_validate(user=alice, kind_name="literature", items=items,
                                                                 params={}))
    import time

    deadline = time.monotonic() + 120
    while Job.objects.get(pk=job.pk).processed_items < 20:
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.05)
    job_cancel(job=job, actor=alice)
    time.sleep(3)  # chunks already running finish; nothing new may start or be counted
    job.refresh_from_db()
    assert job.status == "cancelled"
    counts = {s: JobItem.objects.filter(job=job, status=s).count() for s in JobItem.Status.values}
    assert counts["pending"] == 0 and counts["cancelled"] > 0
    assert counts["succeeded"] == job.succeeded_items and counts["succeeded"] + counts["cancelled"] == len(items)


def test_a_running_worker_serves_a_newly_promoted_version_without_restart(start_worker, alice, tiny_models,
                                                                          tiny_model_dirs):
    from medassist.jobs.services import job_submit, job_validate
    from medassist.registry.services import model_version_promote
    from training.prepare import register_variant

    worker = start_worker(name="promotion", concurrency=1)

    def answered_by():
        submission = job_validate(user=alice, kind_name="literature", items=["Aspirin reduced stroke risk."],
                                  params={"question": "Does aspirin reduce stroke?", "embed": False})
        job, _ = job_submit(owner=alice, submission=submission)
        job = wait_for_job(job.pk, worker=worker)
        assert job.status == "succeeded", job.error
        return JobItem.objects.get(job=job).result["answer"]["rationale_model_version"]  # the generator that served

    assert answered_by() == tiny_models["generator"].label
    candidate, _ = register_variant(role="generator", name="tiny-llama-b", format="torch-fp32",
                                    artifact=tiny_model_dirs["llama_b"], config={})
    model_version_promote(version=candidate, force=True, reason="test: promote while the worker runs")
    assert answered_by() == candidate.label
    assert worker.process.poll() is None  # the same process, never restarted
