"""`manage.py bench_load`: API latency under load, through a real gunicorn server on 127.0.0.1 (issue 12).

Twenty users (threads, one HTTP session each) first submit their share of the abstracts (default
50,000 items in all, as jobs of 500), so that many items are in flight; a worker process works on
them meanwhile. Then, for a fixed time, each user polls one of its jobs, lists its jobs, reads a page
of results and, every tenth round, exports a job (CSV or JSON Lines, read to the end). Every
request's latency and status is recorded; the table gives p50/p99 per operation and the 5xx count
(target 0), and goes to docs/benchmarks.md (section ``load``).

Bounded in count and time (``--duration``), never against anything but 127.0.0.1. It creates users
``load-00``... and deletes their jobs afterwards (audit events stay, as they must).
"""
from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import requests
from django.core.management import BaseCommand, CommandError, call_command
from django.db import InterfaceError, OperationalError, connection

from config.celery import app as celery_app
from medassist.common.processes import free_port, start_web, start_worker
from medassist.jobs.models import Job, JobItem
from medassist.tools.management.commands.bench_queue import load_abstracts
from medassist.tools.reports import format_table, machine_description, write_section

PARAMS = {"embed": False}  # the dictionary/extractive literature work: model speed is bench_models' business


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[tuple[float, int]]] = {}

    def call(self, op: str, session: requests.Session, method: str, url: str, **kwargs) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = session.request(method, url, timeout=120, **kwargs)
            if kwargs.get("stream"):
                for _ in response.iter_content(1 << 16):  # an export counts until its last byte
                    pass
            status = response.status_code
        except requests.RequestException:
            response, status = None, 599  # no answer at all counts as a server error
        with self.lock:
            self.samples.setdefault(op, []).append((time.perf_counter() - started, status))
        return response


def _count(query) -> int:
    """A count of the bench's own, retried once on a fresh connection (a database restart meanwhile)."""
    for attempt in range(3):
        try:
            return query().count()
        except (OperationalError, InterfaceError):
            connection.close()
            time.sleep(2 * attempt + 1)
    return -1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Command(BaseCommand):
    help = "Load-test the API on 127.0.0.1: concurrent users submit, poll and export; p50/p99 and 5xx count."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=20)
        parser.add_argument("--items", type=int, default=50_000, help="items in flight, over all users")
        parser.add_argument("--job-size", type=int, default=500)
        parser.add_argument("--duration", type=float, default=60.0, help="seconds of the poll/export phase")
        parser.add_argument("--think", type=float, default=0.2, help="seconds each user waits between rounds")
        parser.add_argument("--worker-concurrency", type=int, default=1)
        parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")

    def handle(self, *args, users, items, job_size, duration, think, worker_concurrency, no_write, **options):
        if users < 1 or items < users or job_size < 1 or duration <= 0:
            raise CommandError("need at least one user, one item per user, and a positive job size and duration")
        call_command("migrate", interactive=False, verbosity=0)
        tokens = []
        for n in range(users):
            out = StringIO()
            call_command("create_api_user", f"load-{n:02d}", stdout=out)
            tokens.append(out.getvalue().strip().splitlines()[-1])
        abstracts, source = load_abstracts(items)
        per_user = [abstracts[n::users] for n in range(users)]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(f"machine: {machine_description()}\ndata: {source}; {users} users, {items:,} items")
        celery_app.control.purge()
        recorder = Recorder()
        jobs: dict[int, list[str]] = {n: [] for n in range(users)}
        web = start_web(port=port, name="bench-load-web", env={"MEDASSIST_THROTTLE_SUBMIT": "100000/min",
                                                                 "MEDASSIST_THROTTLE_USER": "100000/min"})
        worker = None
        try:
            worker = start_worker(name="bench-load", concurrency=worker_concurrency)

            def submit(n: int) -> None:
                session = requests.Session()
                session.headers["Authorization"] = f"Token {tokens[n]}"
                mine = per_user[n]
                for start in range(0, len(mine), job_size):
                    response = recorder.call("submit", session, "POST", f"{base}/api/v1/jobs/",
                                             json={"kind": "literature", "items": mine[start:start + job_size],
                                                   "params": PARAMS})
                    if response is not None and response.status_code in (200, 202):
                        jobs[n].append(response.json()["id"])

            started = time.perf_counter()
            with ThreadPoolExecutor(users) as pool:
                list(pool.map(submit, range(users)))
            submit_s = time.perf_counter() - started
            in_flight = _count(lambda: JobItem.objects.filter(job_id__in=[j for ids in jobs.values() for j in ids],
                                                              status=JobItem.Status.PENDING))
            self.stdout.write(f"submitted {sum(map(len, jobs.values()))} jobs in {submit_s:.1f} s; "
                              f"{in_flight:,} items pending")

            deadline = time.monotonic() + duration

            def browse(n: int) -> None:
                session = requests.Session()
                session.headers["Authorization"] = f"Token {tokens[n]}"
                rng = random.Random(n)
                rounds = 0
                while time.monotonic() < deadline and jobs[n]:
                    job_id = rng.choice(jobs[n])
                    recorder.call("poll job", session, "GET", f"{base}/api/v1/jobs/{job_id}/")
                    recorder.call("list jobs", session, "GET", f"{base}/api/v1/jobs/")
                    recorder.call("results page", session, "GET", f"{base}/api/v1/jobs/{job_id}/results/",
                                  params={"page_size": 100})
                    if rounds % 10 == n % 10:
                        fmt = "csv" if rounds % 20 < 10 else "jsonl"
                        recorder.call(f"export {fmt}", session, "GET", f"{base}/api/v1/jobs/{job_id}/results.{fmt}",
                                      stream=True)
                    rounds += 1
                    time.sleep(think)

            with ThreadPoolExecutor(users) as pool:
                list(pool.map(browse, range(users)))
            done = _count(lambda: JobItem.objects.filter(job_id__in=[j for ids in jobs.values() for j in ids]).exclude(
                status=JobItem.Status.PENDING))
        finally:
            if worker is not None:
                worker.stop(timeout=20)
            web.stop()
            celery_app.control.purge()
            connection.close()  # a fresh connection for the clean-up, whatever happened to the old one
            Job.objects.filter(pk__in=[j for ids in jobs.values() for j in ids]).delete()

        rows = []
        everything = []
        for op in ("submit", "poll job", "list jobs", "results page", "export csv", "export jsonl"):
            samples = recorder.samples.get(op, [])
            if not samples:
                continue
            everything += samples
            rows.append(self._row(op, samples))
        rows.append(self._row("all", everything))
        table = format_table(["operation", "requests", "p50 ms", "p99 ms", "max ms", "5xx", "other non-2xx"], rows)
        errors_5xx = sum(1 for _, status in everything if status >= 500)
        body = (f"`python manage.py bench_load --users {users} --items {items} --duration {duration:g}` on "
                f"{machine_description()}; gunicorn 1 process x 4 threads and one worker (concurrency "
                f"{worker_concurrency}) on the same machine; {source}, jobs of {job_size}.\n\n"
                f"{users} users submitted {items:,} items in {submit_s:.1f} s ({in_flight:,} pending when the "
                f"poll/export phase began, {done:,} processed by its end), then for {duration:g} s each polled, "
                f"listed, read a results page and every tenth round exported a job ({think:g} s between rounds).\n\n"
                f"{table}\n\n5xx responses: {errors_5xx} (target 0).")
        self.stdout.write(body)
        if not no_write:
            write_section("load", "## API under load (bench_load)\n\n" + body)
        if errors_5xx:
            raise CommandError(f"{errors_5xx} server errors under load")

    @staticmethod
    def _row(op: str, samples: list[tuple[float, int]]) -> list:
        times = [t * 1000 for t, _ in samples]
        server = sum(1 for _, s in samples if s >= 500)
        other = sum(1 for _, s in samples if 300 <= s < 500)
        return [op, len(samples), f"{statistics.median(times):.0f}", f"{percentile(times, 0.99):.0f}",
                f"{max(times):.0f}", server, other]
