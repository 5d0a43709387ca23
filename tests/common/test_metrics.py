"""Metrics and cache configuration: django-prometheus HTTP metrics on /metrics, clearing of stale
multi-process files at start, and CACHE_URL parsing (Redis without django-redis)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.conf import settings

from config import gunicorn as gunicorn_config
from config.settings import cache_config
from medassist.common import metrics
from medassist.common.processes import free_port, start_web
from tests.conftest import ROOT


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def sample_file(directory: Path, kind: str, identifier: str) -> Path:
    """A valid sample file (a copy of this process's own), as another process would have left it."""
    own = Path(settings.PROMETHEUS_MULTIPROC_DIR) / f"counter_{metrics.process_identifier()}.db"
    path = directory / f"{kind}_{identifier}.db"
    shutil.copyfile(own, path)
    return path


# --- /metrics -------------------------------------------------------------------------------------

def test_metrics_expose_django_http_metrics_next_to_medassist_ones(client, admin_client, db):
    assert client.get("/health/").status_code == 200
    response = admin_client.get("/metrics")  # staff only (issue 13)
    assert response.status_code == 200
    text = response.content.decode()
    assert 'django_http_requests_total_by_view_transport_method_total{method="GET",transport="http",view="health"}' \
        in text
    assert "django_http_responses_total_by_status_total" in text
    assert "django_http_requests_latency_seconds_by_view_method_bucket" in text
    # The project's own families are still there, from the same multi-process registry.
    assert "medassist_items_processed_total" in text
    assert 'medassist_jobs{status="queued"}' in text


def test_http_metrics_are_visible_to_other_processes(client, db):
    """In multi-process mode a web process's samples are files in the shared folder: another process
    (the web worker that answers the scrape, or one in another container) aggregates them."""
    client.get("/health/")
    reader = (
        "import sys; from prometheus_client import CollectorRegistry, multiprocess\n"
        "registry = CollectorRegistry(); multiprocess.MultiProcessCollector(registry, path=sys.argv[1])\n"
        "print(sum(s.value for m in registry.collect() for s in m.samples\n"
        "          if s.name == 'django_http_requests_total_by_view_transport_method_total'\n"
        "          and s.labels.get('view') == 'health'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run([sys.executable, "-c", reader, settings.PROMETHEUS_MULTIPROC_DIR], env=env,
                          capture_output=True, text=True, check=True)
    assert float(done.stdout) >= 1


# --- stale files cleared at start -----------------------------------------------------------------

def test_clear_stale_files_removes_only_this_hosts_exited_processes(tmp_path):
    gone = dead_pid()
    stale = [sample_file(tmp_path, kind, metrics.process_identifier(gone)) for kind in ("counter", "histogram",
                                                                                          "gauge_livesum")]
    live = sample_file(tmp_path, "counter", metrics.process_identifier())
    other_host = sample_file(tmp_path, "counter", f"another-host-{gone}")
    removed = metrics.clear_stale_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert live.exists() and other_host.exists()
    assert not any(path.exists() for path in stale)


def test_gunicorn_hooks_clear_stale_files_and_retire_exited_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    stale = sample_file(tmp_path, "counter", metrics.process_identifier(dead_pid()))
    live = sample_file(tmp_path, "counter", metrics.process_identifier())

    class Server:
        class log:
            @staticmethod
            def info(*args):
                pass

    gunicorn_config.on_starting(Server())
    assert not stale.exists() and live.exists()

    class Worker:
        pid = 4242

    gauge = sample_file(tmp_path, "gauge_livesum", metrics.process_identifier(Worker.pid))
    counter = sample_file(tmp_path, "counter", metrics.process_identifier(Worker.pid))
    gunicorn_config.child_exit(Server(), Worker())
    assert not gauge.exists(), "an exited worker's live gauges must stop counting"
    assert counter.exists(), "its counters still count towards the totals"


def test_start_web_clears_stale_files_but_keeps_running_processes(tmp_path):
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    stale = sample_file(folder, "counter", metrics.process_identifier(dead_pid()))
    mine = folder / f"counter_{metrics.process_identifier()}.db"
    port = free_port()
    web = start_web(port=port, name="metrics-test-web", log_dir=tmp_path)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/health/", timeout=30).status_code in (200, 503)
    finally:
        web.stop()
    assert not stale.exists(), web.tail()
    assert mine.exists(), "a running process's samples must survive another process group's start"
    assert "removed" in web.tail() and "stale sample files" in web.tail()


# --- CACHE_URL ------------------------------------------------------------------------------------

def test_redis_cache_url_uses_djangos_own_redis_backend():
    assert cache_config("redis://redis:6379/1") == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://redis:6379/1"}
    tls = cache_config("rediss://:secret@cache.internal:6380/2?timeout=30&key_prefix=medassist")
    assert tls["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert tls["LOCATION"] == "rediss://:secret@cache.internal:6380/2"
    assert tls["TIMEOUT"] == 30 and tls["KEY_PREFIX"] == "medassist"


@pytest.mark.parametrize(("url", "backend"), [
    ("locmemcache://medassist", "django.core.cache.backends.locmem.LocMemCache"),
    ("dummycache://", "django.core.cache.backends.dummy.DummyCache"),
])
def test_other_cache_urls_keep_django_environs_mapping(url, backend):
    assert cache_config(url)["BACKEND"] == backend


def test_without_cache_url_the_cache_is_per_process(tmp_path):
    # A fresh process with CACHE_URL unset, whatever this run's environment says: never a skip.
    env = {k: v for k, v in os.environ.items() if k != "CACHE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", MEDASSIST_VAR_DIR=str(tmp_path))
    code = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("django.core.cache.backends.locmem.LocMemCache")


def test_redis_cache_backend_loads_without_django_redis():
    from django.utils.module_loading import import_string

    config = cache_config("redis://redis:6379/1")
    cache = import_string(config["BACKEND"])(config["LOCATION"], {})  # no connection until first use
    assert cache._servers == ["redis://redis:6379/1"]
