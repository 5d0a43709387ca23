"""Fault injection on real processes (issue 12): the scenarios ``tests/integration/test_faults.py`` asserts
and ``manage.py bench_faults`` measures.

Each scenario submits 2,104 real MEDLINE abstracts (the shared sample, four times over) as a ``noop`` job
whose items take a few milliseconds each (its ``fault`` parameter, honoured only with
MEDASSIST_FAULT_INJECTION), runs real ``celery worker`` and ``manage.py reconcile --loop`` processes
against the current database and broker, injects the fault mid-job and reports what became of every
item: lost (not final, or counted short), duplicated (stored twice, or counted twice), and the time from
the fault to the job's final state. Recovery timings are scaled from minutes to seconds (``FAST``);
the mechanisms are the deployed ones.

Services are stopped and started with this machine's commands (Redis: ``redis-cli shutdown nosave`` and
``redis-server``; Postgres: ``pg_ctlcluster``), always restored in a ``finally``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.test import override_settings
from django.utils import timezone

from medassist.common.data_paths import shared_path
from medassist.common.parsers import parse_upload
from medassist.common.processes import ServiceProcess, start_worker
from medassist.jobs.models import Job, JobChunk, JobItem
from medassist.jobs.services import job_submit, job_validate

ITEMS = 2104  # the 526 MEDLINE abstracts with text, four times
CHUNK_SIZE = 50
SLEEP_MS = 4  # per item: ~0.2 s a chunk, so a fault lands mid-job

# Environment of the worker and reconcile processes (and, as settings, of the submitting process).
FAST = {
    "MEDASSIST_FAULT_INJECTION": "true",
    "MEDASSIST_HEARTBEAT_INTERVAL": "0.5",
    "MEDASSIST_HEARTBEAT_TIMEOUT": "3",
    "MEDASSIST_HARD_LIMIT_GRACE": "2",
    "MEDASSIST_QUEUED_TIMEOUT": "10",
    "MEDASSIST_ENQUEUE_GRACE": "1",
    "MEDASSIST_RECONCILE_INTERVAL": "1",
    "MEDASSIST_CHUNK_SOFT_TIME_LIMIT": "8",
    "MEDASSIST_CHUNK_TIME_LIMIT": "10",
    "MEDASSIST_VISIBILITY_TIMEOUT": "12",  # hard limit + margin, as deployed (300 + 60)
    "MEDASSIST_UNACKED_RESTORE_INTERVAL": "1",
    "MEDASSIST_UNACKED_RESTORE_THROTTLE": "1",
    "MEDASSIST_DB_OUTAGE_WINDOW": "120",
    "MEDASSIST_HPO_PRELOAD": "false",
    "MEDASSIST_WORKER_PRELOAD": "false",
    "MEDASSIST_WORKER_CONCURRENCY": "2",
    "MEDASSIST_TORCH_THREADS": "1",
}
SUBMIT_SETTINGS = {"MEDASSIST_FAULT_INJECTION": True, "MEDASSIST_CHUNK_SOFT_TIME_LIMIT": 8,
                   "MEDASSIST_CHUNK_TIME_LIMIT": 10, "MEDASSIST_CHUNK_SIZE": CHUNK_SIZE}

REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
               "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


def using_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith("redis")


def using_postgres() -> bool:
    return connection.vendor == "postgresql"


def database_url() -> str:
    """The URL of the database this process uses (in tests: pytest-django's test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


# --- the services -----------------------------------------------------------------------------------------

def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not after {timeout} s")


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def redis_stop() -> None:
    """Stop Redis at once, dropping everything it held (queued and unacknowledged messages)."""
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], capture_output=True,
                   timeout=30)
    _until(lambda: not _ok(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]), 30, "Redis stop")


def redis_start() -> None:
    if not _ok(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]):
        subprocess.run(REDIS_START, capture_output=True, timeout=30)
    _until(lambda: _ok(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]), 30, "Redis start")


def _pg_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]


def postgres_restart() -> None:
    """Restart the Postgres cluster (fast shutdown: every connection is cut)."""
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "restart", "-m", "fast"],
                   capture_output=True, timeout=120)
    postgres_ensure()


def postgres_ensure() -> None:
    if not _ok(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "start"],
                       capture_output=True, timeout=120)
    _until(lambda: _ok(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]), 60, "Postgres start")
    connection.close()  # this process's connection died with the old server: the next query reconnects


def services_available() -> dict[str, bool]:
    """Whether this machine can stop and start the services (the scenarios that need it skip otherwise)."""
    return {"redis": using_redis() and bool(shutil.which("redis-server")) and bool(shutil.which("redis-cli")),
            "postgres": using_postgres() and bool(shutil.which("pg_ctlcluster")) and Path("/etc/postgresql").exists()}


# --- the processes ----------------------------------------------------------------------------------------

class Lab:
    """Worker and reconcile processes against this process's database and broker; all stopped on exit."""

    def __init__(self, *, log_dir: Path | None = None, env: dict | None = None):
        self.log_dir = Path(log_dir or Path(settings.VAR_DIR) / "faults")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {"DATABASE_URL": database_url(), **FAST, **(env or {})}
        self.processes: list[ServiceProcess] = []
        self.workers: dict[str, ServiceProcess] = {}  # name -> the live worker of that name
        self.killed: set[str] = set()
        self.restarts: list[str] = []
        self.pools: dict[str, str] = {}

    def __enter__(self):
        from config.celery import app

        app.control.purge()  # an earlier, interrupted run's messages must not leak in...
        if using_redis():  # ... nor its unacknowledged ones, which Redis would hand out again later
            with app.connection_for_write() as conn:
                channel = conn.default_channel
                channel.client.delete(channel.unacked_key, channel.unacked_index_key)
        return self

    def __exit__(self, *exc):
        for process in self.processes:  # a crash, not a shutdown: nothing here needs to finish
            process.kill()
            process.stop()

    def worker(self, name: str, *, concurrency: int = 2, reconciler: bool = False,
               pool: str = "prefork") -> ServiceProcess:
        """A worker (and, started alongside, a reconcile loop); returns once both are ready."""
        worker = start_worker(name=f"faults-{name}", queues="batch", concurrency=concurrency, env=self.env,
                              log_dir=self.log_dir, wait=False, pool=pool)
        self.processes.append(worker)
        self.workers[name] = worker
        self.pools[name] = pool
        if reconciler:
            process = ServiceProcess([sys.executable, "manage.py", "reconcile", "--loop"],
                                     log_path=self.log_dir / f"faults-{name}-reconcile.log", env=self.env)
            self.processes.append(process)
            process.wait_for_log(b"reconcile: a pass every", timeout=180)
        worker.wait_for_log(b"ready.", timeout=180)
        return worker

    def kill(self, name: str) -> None:
        """SIGKILL a worker's whole process group (the fault itself: not restarted)."""
        self.killed.add(name)
        self.workers[name].kill()

    def revive(self) -> None:
        """Start again a worker that exited by itself, as compose's restart policy does. (A celery
        worker can exit when Redis goes away while it holds unacknowledged messages: kombu fails to
        restore them on a connection it has already dropped, "Unrecoverable error: AttributeError".)"""
        for name, worker in list(self.workers.items()):
            if name not in self.killed and worker.process.poll() is not None:
                self.restarts.append(f"worker {name} exited ({worker.process.returncode}) and was restarted")
                self.worker(f"{name}-restarted", pool=self.pools[name])
                del self.workers[name]

    def tails(self) -> str:
        """The logs' ends, and every celery process on this machine (a stray consumer explains a lot)."""
        ps = subprocess.run(["ps", "-eo", "pid,pgid,etime,args"], capture_output=True, text=True).stdout
        celery = "\n".join(line for line in ps.splitlines() if "celery" in line or "reconcile" in line)
        return "\n".join(f"--- {p.log_path.name}\n{p.tail(2500)}" for p in self.processes) + f"\n--- ps\n{celery}"


# --- jobs -------------------------------------------------------------------------------------------------

def abstracts(count: int = ITEMS, *, markers: dict[int, str] | None = None) -> list[dict]:
    medline = shared_path("medline", must_exist=True)
    items = [{"pmid": i.get("pmid"), "title": i.get("title"), "text": i["text"]}
             for i in parse_upload(medline.read_bytes(), medline.name).items]
    out = [dict(items[n % len(items)]) for n in range(count)]
    for index, marker in (markers or {}).items():
        out[index]["text"] += f" {marker}"
    return out


def submit(owner, *, fault: dict | None = None, markers: dict[int, str] | None = None, key: str | None = None,
           count: int = ITEMS) -> Job:
    with override_settings(**SUBMIT_SETTINGS):
        submission = job_validate(user=owner, kind_name="noop", items=abstracts(count, markers=markers),
                                  params={"fault": {"sleep_ms": SLEEP_MS, **(fault or {})}})
        job, _ = job_submit(owner=owner, submission=submission, idempotency_key=key)
    return job


def _read(query):
    """A read that survives this process's own connection dying (a Postgres restart)."""
    for _ in range(60):
        try:
            return query()
        except DatabaseError:
            connection.close()
            time.sleep(0.5)
    return query()


def wait_processed(job_id, fraction: float, *, timeout: float = 180, lab: Lab | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if lab:
            lab.revive()
        job = _read(lambda: Job.objects.get(pk=job_id))
        if job.processed_items >= fraction * job.total_items or job.is_final:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: {job.processed_items}/{job.total_items} after {timeout} s\n"
                                 f"{lab.tails() if lab else ''}")
        time.sleep(0.05)


def wait_final(job_id, *, timeout: float = 240, lab: Lab | None = None) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        if lab:
            lab.revive()
        job = _read(lambda: Job.objects.get(pk=job_id))
        if job.is_final:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout} s: {job.status} "
                                 f"{job.processed_items}/{job.total_items}\n{lab.tails() if lab else ''}")
        time.sleep(0.25)


@dataclass
class Outcome:
    scenario: str
    jobs: list[Job]
    fault_at: datetime
    notes: list[str] = field(default_factory=list)
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    duplicated: int = 0
    failed_without_reason: int = 0
    reasons: Counter = field(default_factory=Counter)
    recovery_s: float = 0.0
    statuses: list[str] = field(default_factory=list)

    def __post_init__(self):
        for job in self.jobs:
            job.refresh_from_db()
            rows = JobItem.objects.filter(job=job)
            count = Counter(rows.values_list("status", flat=True))
            self.total += job.total_items
            self.succeeded += count["succeeded"]
            self.failed += count["failed"]
            self.cancelled += count["cancelled"]
            # Lost: not final (or not stored at all), or a stored result the job's counters missed.
            self.lost += (job.total_items - count["succeeded"] - count["failed"] - count["cancelled"]
                          + max(0, count["succeeded"] - job.succeeded_items) + max(0, count["failed"] - job.failed_items))
            # Duplicated: a result stored more than once, or counted more than once.
            self.duplicated += (rows.filter(attempts__gt=1).count() + max(0, job.succeeded_items - count["succeeded"])
                                + max(0, job.failed_items - count["failed"]))
            self.failed_without_reason += rows.filter(status="failed", error="").count()
            self.reasons.update(rows.filter(status="failed").values_list("error", flat=True))
            self.statuses.append(job.status)
        finished = max(job.finished_at for job in self.jobs)
        self.recovery_s = max(0.0, (finished - self.fault_at).total_seconds())

    def row(self) -> list:
        reasons = "; ".join(f"{n} x \"{r}\"" for r, n in self.reasons.most_common(2)) or "-"
        return [self.scenario, f"{self.total:,}", self.lost, self.duplicated, f"{self.succeeded:,}", self.failed,
                self.cancelled, f"{self.recovery_s:.1f}", ", ".join(sorted(set(self.statuses))), reasons]


HEADERS = ["scenario", "items", "lost", "duplicated", "succeeded", "failed", "cancelled",
           "fault -> final (s)", "job status", "failure reasons"]


# --- the scenarios ----------------------------------------------------------------------------------------

def sigkill_worker(lab: Lab, owner, *, reconcile: bool = True) -> Outcome:
    """SIGKILL of the whole worker group mid-job; a new worker and reconcile finish it. Without
    ``reconcile`` (Redis only): what the visibility timeout alone costs."""
    lab.worker("doomed", reconciler=reconcile)
    job = submit(owner)
    wait_processed(job.pk, 0.25, lab=lab)
    fault_at = timezone.now()
    lab.kill("doomed")
    lab.worker("rescuer")
    transport = "Redis" if using_redis() else "file-system transport"
    how = "" if reconcile else f", no reconcile: visibility timeout {FAST['MEDASSIST_VISIBILITY_TIMEOUT']} s only"
    return Outcome(f"SIGKILL worker group ({transport}{how})", [wait_final(job.pk, lab=lab)], fault_at)


def redis_shutdown(lab: Lab, owner) -> Outcome:
    """``redis-cli shutdown nosave`` mid-job (every queued message lost), then Redis started again."""
    lab.worker("redis", reconciler=True)
    job = submit(owner)
    wait_processed(job.pk, 0.25, lab=lab)
    fault_at = timezone.now()
    try:
        redis_stop()
        time.sleep(2)
    finally:
        redis_start()
    return Outcome("Redis shutdown nosave, restarted", [wait_final(job.pk, lab=lab)], fault_at, lab.restarts)


def postgres_restart_mid_job(lab: Lab, owner) -> Outcome:
    """Postgres restarted while chunks store their results: workers wait it out and carry on."""
    lab.worker("postgres", reconciler=True)
    job = submit(owner)
    wait_processed(job.pk, 0.25, lab=lab)
    fault_at = timezone.now()
    try:
        postgres_restart()
    finally:
        postgres_ensure()
    return Outcome("Postgres restart while storing", [wait_final(job.pk, lab=lab)], fault_at)


def hard_time_limit(lab: Lab, owner) -> Outcome:
    """One item blocks, deaf to the soft limit, until the hard limit kills its pool child; its chunk's
    items fail with the reason, the rest of the job succeeds."""
    lab.worker("hard-limit", reconciler=True)
    job = submit(owner, fault={"hang_marker": "HANG-HERE"}, markers={1000: "HANG-HERE"})
    job = wait_final(job.pk, lab=lab)
    chunk = JobChunk.objects.get(job=job, start__lte=1000, end__gt=1000)
    killed_at = chunk.started_at + timedelta(seconds=chunk.time_limit)
    return Outcome("chunk past its hard time limit", [job], killed_at)


def hang_without_pool_timer(lab: Lab, owner) -> Outcome:
    """The same hang in a worker whose pool enforces no time limit (``-P solo``): the delivery's own
    watchdog stops heartbeating and SIGKILLs the worker MEDASSIST_HARD_LIMIT_GRACE past the limit; the
    worker is restarted (as compose's restart policy does) and the job ends as with the pool's timer."""
    lab.worker("hang-solo", reconciler=True, pool="solo")
    job = submit(owner, fault={"hang_marker": "HANG-HERE"}, markers={1000: "HANG-HERE"})
    job = wait_final(job.pk, lab=lab)
    chunk = JobChunk.objects.get(job=job, start__lte=1000, end__gt=1000)
    killed_at = chunk.started_at + timedelta(seconds=chunk.time_limit + settings.MEDASSIST_HARD_LIMIT_GRACE)
    return Outcome("hang where the pool has no time limit", [job], killed_at, lab.restarts)


def poison_item(lab: Lab, owner) -> Outcome:
    """One item SIGKILLs its pool child on every delivery: after MEDASSIST_MAX_DELIVERIES its chunk fails."""
    lab.worker("poison", reconciler=True)
    job = submit(owner, fault={"kill_marker": "KILL-HERE"}, markers={1000: "KILL-HERE"})
    chunk = JobChunk.objects.get(job=job, start__lte=1000, end__gt=1000)
    _until(lambda: _read(lambda: JobChunk.objects.get(pk=chunk.pk).deliveries) >= 1, 180, "poison chunk started")
    fault_at = timezone.now()
    return Outcome("item that kills its pool child", [wait_final(job.pk, lab=lab)], fault_at)


def broker_down_at_submit(lab: Lab, owner) -> Outcome:
    """Redis stopped, then a job submitted over the API: 503 + Retry-After with the job stored; once
    Redis is back, reconcile sends it and the Idempotency-Key retry returns the same job."""
    from rest_framework.test import APIClient

    lab.worker("broker-down", reconciler=True)
    api = APIClient()
    api.force_authenticate(owner)
    body = {"kind": "noop", "items": abstracts(), "params": {"fault": {"sleep_ms": SLEEP_MS}}}
    key = f"faults-{time.time_ns()}"
    notes = []
    try:
        redis_stop()
        fault_at = timezone.now()
        with override_settings(**SUBMIT_SETTINGS):
            first = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY=key, HTTP_HOST="localhost")
        notes.append(f"submit while down: {first.status_code}, Retry-After {first.get('Retry-After')}")
        if first.status_code != 503:
            raise AssertionError(f"expected 503 while the broker is down, got {first.status_code}: {first.content[:300]}")
    finally:
        redis_start()
    job_id = first.json()["id"]
    wait_processed(job_id, 0.05, lab=lab)  # reconcile sent it: the client has not retried yet
    with override_settings(**SUBMIT_SETTINGS):
        replay = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY=key, HTTP_HOST="localhost")
    notes.append(f"retry with the same Idempotency-Key: {replay.status_code}, same job: {replay.json()['id'] == job_id}")
    if replay.status_code != 200 or replay.json()["id"] != job_id:
        raise AssertionError(f"replay: {replay.status_code} {replay.content[:300]}")
    if Job.objects.filter(owner=owner, idempotency_key=key).count() != 1:
        raise AssertionError("the retry stored a second job")
    job = wait_final(job_id, lab=lab)
    return Outcome("broker stopped during submission", [job], fault_at, notes + lab.restarts)


def cancel_race(lab: Lab, owner, *, jobs: int = 5) -> Outcome:
    """Cancels (4 concurrent callers per job, over the API) while chunks write results: every answer is
    200 or 409, never 500, and the database reports no deadlock."""
    from rest_framework.test import APIClient

    lab.worker("cancel", concurrency=2)
    deadlocks_before = _deadlocks()
    per_job = -(-ITEMS // jobs)
    with override_settings(**{**SUBMIT_SETTINGS, "MEDASSIST_CHUNK_SIZE": 10}):
        submission = job_validate(user=owner, kind_name="noop", items=abstracts(per_job),
                                  params={"fault": {"sleep_ms": 1}})
        submitted = [job_submit(owner=owner, submission=submission)[0] for _ in range(jobs)]
    answers: Counter = Counter()
    fault_at = timezone.now()

    def cancel(job_id):
        api = APIClient()
        api.force_authenticate(owner)
        try:
            for _ in range(3):
                answers[api.post(f"/api/v1/jobs/{job_id}/cancel/", HTTP_HOST="localhost").status_code] += 1
        finally:
            connection.close()

    for job in submitted:
        wait_processed(job.pk, 0.02, lab=lab)
        threads = [threading.Thread(target=cancel, args=(job.pk,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    time.sleep(2)  # chunks already running finish; none may store or count anything after the cancel
    close_old_connections()
    notes = [f"cancel answers: {dict(sorted(answers.items()))}", f"deadlocks: {_deadlocks() - deadlocks_before}"]
    outcome = Outcome("cancel in a loop while results are written", [Job.objects.get(pk=j.pk) for j in submitted],
                      fault_at, notes)
    outcome.answers, outcome.deadlocks = answers, _deadlocks() - deadlocks_before
    return outcome


def _deadlocks() -> int:
    if not using_postgres():
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


SCENARIOS = {
    "sigkill": (sigkill_worker, ()),
    "redis": (redis_shutdown, ("redis",)),
    "postgres": (postgres_restart_mid_job, ("postgres",)),
    "hard-limit": (hard_time_limit, ()),
    "hang-solo": (hang_without_pool_timer, ()),
    "poison": (poison_item, ()),
    "broker-down": (broker_down_at_submit, ("redis",)),
    "cancel": (cancel_race, ()),
}
