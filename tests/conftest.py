"""Shared fixtures: API clients, real-service detection, and a real ``celery worker`` subprocess.

Services: with ``DATABASE_URL``/``CELERY_BROKER_URL`` pointing at Postgres/Redis (as ``.ci/run``
sets them) the integration tests run against those. Without them the suite runs on the embedded
default (SQLite + file-system broker, still with a real worker process) and *skips*, saying why,
the few tests that need a real server. Under ``CI=true`` a missing service is a failure, never a skip.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from medassist.common.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_data() -> Path:
    return Path(settings.MEDASSIST_SHARED_DATA)


def require(condition: bool, reason: str) -> None:
    """Skip on a laptop, fail in CI: CI must never silently skip an integration test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_shared_data(*parts: str) -> Path:
    path = shared_data().joinpath(*parts)
    require(path.exists(), f"shared data not found at {path} (set MEDASSIST_SHARED_DATA)")
    return path


def using_postgres() -> bool:
    return connection.vendor == "postgresql"


def using_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith("redis")


def tamper_with_audit_table(sql: str, params=()) -> None:
    """Change audit rows behind the application's back, as a database superuser could (on Postgres,
    with every trigger switched off for the statement: append-only and no-TRUNCATE)."""
    with connection.cursor() as cursor:
        if using_postgres():
            cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            if using_postgres():
                cursor.execute("SET session_replication_role = origin")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Audit (issue 13): Django's test flush empties every table with one TRUNCATE between transactional
    tests, which the audit table's no-TRUNCATE trigger refuses; switch it off in the test database only.
    tests/audit/test_db_role.py switches it back on inside its own transaction to test it."""
    with django_db_blocker.unblock():
        if using_postgres():
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_no_truncate")


@pytest.fixture(autouse=True)
def _fresh_throttle_history():
    """Throttle counters live in the cache; one test's requests must not throttle the next."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def make_user(db, django_user_model):
    from knox.models import AuthToken

    def make(username: str, *, staff: bool = False, perms: tuple[str, ...] = ()):
        user = django_user_model.objects.create_user(username=username, password="pw-" + username, is_staff=staff)
        # Tokens are stored hashed (knox, issue 13): the plain token exists only here, kept for client_for.
        _, user.api_token = AuthToken.objects.create(user=user)
        if perms:  # access control (issue 13): permissions come through a group, as in production
            from django.contrib.auth.models import Group, Permission

            group, _ = Group.objects.get_or_create(name=f"test-{username}")
            for perm in perms:
                app_label, codename = perm.split(".", 1)
                group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
            user.groups.add(group)
        return user

    return make


@pytest.fixture
def client_for():
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {user.api_token}")
        return client

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def api(alice, client_for):
    return client_for(alice)


# --- a real worker process --------------------------------------------------------------------------------

def _database_url_for_subprocess() -> str:
    """The URL of the database this test session uses (pytest-django's test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def start_worker(transactional_db):
    """Factory: start real worker subprocesses against this test database; all stopped afterwards."""
    from config.celery import app
    from medassist.common.processes import start_worker as start_worker_process

    app.control.purge()  # leftovers of an earlier, interrupted run must not leak into this test
    started: list[ServiceProcess] = []

    def start(*, name: str, extra_env: dict | None = None, **kwargs) -> ServiceProcess:
        # No HPO preload: each short-lived worker would spend ~30-40 s of a core parsing it for nothing.
        env = {"DATABASE_URL": _database_url_for_subprocess(), "MEDASSIST_HPO_PRELOAD": "false", **(extra_env or {})}
        worker = start_worker_process(name=f"test-{name}", env=env, wait=False, **kwargs)
        started.append(worker)
        worker.wait_for_log(b"ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for_job(job_id, *, timeout: float = 180.0, worker: ServiceProcess | None = None):
    """Poll the database until the job is final; on timeout, show the worker's log."""
    from medassist.jobs.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_final:
            return job
        time.sleep(0.25)
    tail = worker.tail() if worker else ""
    raise AssertionError(f"job {job_id} not final after {timeout} s: {job.status} "
                         f"{job.processed_items}/{job.total_items}\n{tail}")


# --- tiny models, registered through the same code path as real ones ------------------------------------------

@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    from tests.workers.tiny_models import make_causal_lm, make_embedder

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "llama": make_causal_lm(root / "tiny-llama", arch="llama", seed=0),
        "llama_b": make_causal_lm(root / "tiny-llama-b", arch="llama", seed=1),
        "qwen2": make_causal_lm(root / "tiny-qwen2", arch="qwen2", seed=2),
        "embedder": make_embedder(root / "tiny-bert"),
    }


@pytest.fixture(scope="session")
def answer_evidence_dir(tmp_path_factory):
    """The real answer-evidence model, trained on PubMedQA from shared data as models_prepare trains it."""
    from training.prepare import build_answer_evidence

    source = require_shared_data("pubmedqa", "pqal_train.json")  # fails under CI=true, skips on a laptop
    out = tmp_path_factory.mktemp("answer-evidence")
    build_answer_evidence(out, source)
    return out


@pytest.fixture
def tiny_models(db, tiny_model_dirs, answer_evidence_dir):
    """Active tiny generator (torch-fp32) and embedder versions, and the real answer-evidence model."""
    from medassist.registry.services import model_version_promote
    from training.prepare import register_variant

    generator, _ = register_variant(role="generator", name="tiny-llama", format="torch-fp32",
                                    artifact=tiny_model_dirs["llama"], config={})
    embedder, _ = register_variant(role="embedder", name="tiny-bert", format="torch-fp32",
                                   artifact=tiny_model_dirs["embedder"], config={"pooling": "mean"})
    evidence, _ = register_variant(role="answer_evidence", name="pubmedqa-pqal", format="ngram-logreg",
                                   artifact=answer_evidence_dir, config={})
    return {"generator": model_version_promote(version=generator), "embedder": model_version_promote(version=embedder),
            "answer_evidence": model_version_promote(version=evidence)}
