"""A finetune job through the API and real worker processes: training worker (solo pool, as in
compose) registers candidates; staff promote one over the API, a running batch worker serves it
without restart, and a rollback puts the previous version back. Cancelling a running job stops the
training in the worker process and deletes what it made.
"""
import time

import pytest

from medassist.jobs.models import Job, JobItem
from medassist.registry.models import ModelVersion
from tests.conftest import require_shared_data, wait_for_job

pytestmark = pytest.mark.integration

SMALL = {"max_train_examples": 8, "max_eval_examples": 4, "batch_size": 2, "grad_accumulation": 1,
         "max_length": 160, "checkpoint_every": 0, "export_formats": ["torch-fp32"], "threads_per_worker": 1}


@pytest.fixture
def staff_user(make_user):
    return make_user("trainer", perms=("jobs.run_finetune", "registry.promote_modelversion"))


@pytest.fixture
def model_dir(tmp_path, settings):
    settings.MEDASSIST_MODEL_DIR = tmp_path / "models"
    return settings.MEDASSIST_MODEL_DIR


def answered_by(api, worker) -> str:
    response = api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Aspirin reduced stroke risk."],
                                          "params": {"question": "Does aspirin reduce stroke?", "embed": False}},
                        format="json")
    assert response.status_code == 202, response.json()
    job = wait_for_job(response.json()["id"], worker=worker)
    assert job.status == "succeeded", job.error
    return JobItem.objects.get(job=job).result["answer"]["rationale_model_version"]  # the generator that served


def test_finetune_job_registers_candidates_then_promote_serve_and_roll_back(start_worker, staff_user, client_for,
                                                                          tiny_models, model_dir):
    require_shared_data("pubmedqa", "pqal_train.json")
    env = {"MEDASSIST_MODEL_DIR": str(model_dir)}
    trainer = start_worker(name="training", queues="training", pool="solo", extra_env=env)
    server = start_worker(name="serving", queues="batch", concurrency=1, extra_env=env)
    staff = client_for(staff_user)
    base = tiny_models["generator"]
    assert answered_by(staff, server) == base.label

    response = staff.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"], "name": "tiny-api"}],
                                            "params": SMALL}, format="json")
    assert response.status_code == 202, response.json()
    job = wait_for_job(response.json()["id"], worker=trainer, timeout=300)
    assert job.status == "succeeded", (job.error, trainer.tail())
    result = JobItem.objects.get(job=job).result
    assert job.queue == "training" and job.status_detail["stage"] == "done"
    candidate = ModelVersion.objects.get(pk=result["candidate_ids"][0])
    assert candidate.status == "candidate" and candidate.parent_id == base.pk and candidate.name == "tiny-api"
    assert candidate.config["dataset_hash"] == result["dataset_hash"]
    detail = staff.get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["status_detail"]["candidates"] == [candidate.label]

    # Promotion is checked against the base model's scores on the same held-out questions.
    worse = result["after"]["accuracy"] < result["before"]["accuracy"] - 0.005
    response = staff.post(f"/api/v1/models/{candidate.pk}/promote/", {"reason": "tiny test run"}, format="json")
    if worse:
        assert response.status_code == 409 and response.json()["errors"]["metrics"]
        response = staff.post(f"/api/v1/models/{candidate.pk}/promote/",
                              {"reason": "tiny test run", "force": True}, format="json")
    assert response.status_code == 200, response.json()
    assert answered_by(staff, server) == candidate.label  # the running worker switched, no restart

    response = staff.post("/api/v1/models/rollback/", {"role": "generator", "reason": "test rollback"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["id"] == base.pk
    assert answered_by(staff, server) == base.label
    assert trainer.process.poll() is None and server.process.poll() is None


def test_cancelling_a_running_finetune_job_stops_training_and_cleans_up(start_worker, staff_user, client_for,
                                                                       tiny_models, model_dir):
    require_shared_data("pubmedqa", "pqal_train.json")
    trainer = start_worker(name="training-cancel", queues="training", pool="solo",
                           extra_env={"MEDASSIST_MODEL_DIR": str(model_dir)})
    staff = client_for(staff_user)
    params = {**SMALL, "epochs": 200.0}
    response = staff.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"], "name": "tiny-stop"}],
                                            "params": params}, format="json")
    job_id = response.json()["id"]
    deadline = time.monotonic() + 180
    while Job.objects.get(pk=job_id).status_detail.get("step", 0) < 2:
        assert time.monotonic() < deadline, trainer.tail()
        time.sleep(0.2)
    assert (model_dir / "finetuned" / "tiny-stop").exists()
    assert staff.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 200
    deadline = time.monotonic() + 60
    while (model_dir / "finetuned" / "tiny-stop").exists():
        assert time.monotonic() < deadline, trainer.tail()
        time.sleep(0.2)
    assert Job.objects.get(pk=job_id).status == "cancelled"
    assert not ModelVersion.objects.filter(name="tiny-stop").exists()
    assert trainer.process.poll() is None  # the worker lives on for the next run


def test_finetune_needs_its_permission_and_bad_recipes_are_field_errors(api, staff_user, client_for, db):
    response = api.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}]}, format="json")
    assert response.status_code == 400 and "finetune" not in response.json()["errors"]["kind"][0].split("available")[1]
    staff = client_for(staff_user)
    response = staff.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}],
                                            "params": {"eval_fold": 7}}, format="json")
    assert response.status_code == 400 and "params.eval_fold" in response.json()["errors"]
    response = staff.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["/etc/passwd"]}]}, format="json")
    assert response.status_code == 400 and "items[0].sources[0]" in response.json()["errors"]
    response = staff.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}] * 2}, format="json")
    assert response.status_code == 400 and "at most 1" in response.json()["errors"]["items"][0]
    assert not Job.objects.exists()
