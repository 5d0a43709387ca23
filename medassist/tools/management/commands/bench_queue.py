"""`manage.py bench_queue`: what the job path itself costs, measured through the real processes.

1. Acceptance: wall time of ``POST /api/v1/jobs/`` with 10,000 abstracts to a real gunicorn server
   (validation, one transaction with the bulk insert, audit event, enqueueing every chunk).
2. Queue overhead: the same abstracts through the real queue and one worker process with the
   ``noop`` handler (pure job-path cost per item), against the ``literature`` handler run
   in-process on the same items (the baseline). Also the literature kind through the queue.

Run it against the deployment's own services (``DATABASE_URL``/``CELERY_BROKER_URL``); it creates
a ``bench`` user (group ``operators``) and deletes its jobs afterwards (audit events stay, as they must). Progress
bars (items done) go to stderr when it is a terminal (``--no-progress``: never).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import requests
from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command

from config.celery import app as celery_app
from medassist.common.data_paths import shared_path
from medassist.common.parsers import parse_upload
from medassist.common.processes import free_port, start_web, start_worker
from medassist.jobs.models import Job
from medassist.kinds import get_kind
from medassist.tools.reports import format_table, machine_description, write_section
from workers.versions import get_runtime

# The dictionary/extractive part of the literature kind: model outputs are benchmarked by bench_models.
BENCH_PARAMS = {"embed": False}
SAMPLE = Path(__file__).resolve().parents[3] / "common" / "data" / "sample_abstracts.jsonl"


def load_abstracts(count: int) -> tuple[list[dict], str]:
    """Real MEDLINE abstracts from shared data (repeated to ``count``), else the bundled sample."""
    medline = shared_path("medline")
    if medline.exists():
        items, source = parse_upload(medline.read_bytes(), medline.name).items, "MEDLINE sample (526 abstracts)"
    else:
        items, source = parse_upload(SAMPLE.read_bytes(), SAMPLE.name).items, "bundled sample corpus"
    items = [{"pmid": i.get("pmid"), "title": i.get("title"), "text": i["text"]} for i in items]
    return [items[n % len(items)] for n in range(count)], source


class Command(BaseCommand):
    help = "Benchmark job acceptance and queue overhead through the real web, broker and worker processes."

    def add_arguments(self, parser):
        parser.add_argument("--accept-items", type=int, default=10_000)
        parser.add_argument("--accept-repeats", type=int, default=3)
        parser.add_argument("--items", type=int, default=10_000, help="items for the throughput runs")
        parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    def handle(self, *args, accept_items, accept_repeats, items, no_write, no_progress=False, **options):
        self.no_progress = no_progress
        call_command("migrate", interactive=False, verbosity=0)
        from io import StringIO

        out = StringIO()
        call_command("create_api_user", "bench", "--group", "operators", stdout=out)
        headers = {"Authorization": f"Token {out.getvalue().strip()}"}
        abstracts, source = load_abstracts(max(accept_items, items))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(f"machine: {machine_description()}\ndata: {source}")
        celery_app.control.purge()
        web = start_web(port=port, name="bench-web")
        created: list[str] = []
        try:
            accept = self._accept(base, headers, abstracts[:accept_items], accept_repeats, created)
            celery_app.control.purge()  # the acceptance jobs' chunks are not part of this benchmark
            Job.objects.filter(pk__in=created).update(status=Job.Status.CANCELLED)
            baseline = self._in_process(abstracts[:items])
            # The same handler with the model output it has by default (embeddings), for scale.
            with_model = self._in_process(abstracts[:min(items, 2000)], {"embed": True})
            through_queue = {}
            for concurrency in (1, 2):
                worker = start_worker(name=f"bench-c{concurrency}", concurrency=concurrency)
                try:
                    # Warm-up: pool children load their models after the worker reports ready.
                    for _ in range(concurrency * 2):
                        self._through_queue(base, headers, "noop", abstracts[:1], created)
                    for kind in ("noop", "literature"):
                        through_queue[(kind, concurrency)] = self._through_queue(
                            base, headers, kind, abstracts[:items], created)
                finally:
                    worker.stop()
        finally:
            web.stop()
            Job.objects.filter(pk__in=created).delete()
        self._report(accept, accept_items, baseline, through_queue, items, no_write, with_model)

    def _accept(self, base, headers, abstracts, repeats, created) -> list[float]:
        body = json.dumps({"kind": "literature", "items": abstracts, "params": BENCH_PARAMS})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = requests.post(f"{base}/api/v1/jobs/", data=body, timeout=300,
                                     headers={**headers, "Content-Type": "application/json"})
            times.append(time.perf_counter() - started)
            if response.status_code != 202:
                raise CommandError(f"submission refused: {response.status_code} {response.text[:500]}")
            created.append(response.json()["id"])
        self.stdout.write(f"accept {len(abstracts):,} items: " + ", ".join(f"{t:.2f} s" for t in times))
        return times

    def _in_process(self, abstracts, job_params: dict = BENCH_PARAMS) -> float:
        """Items/s of the literature handler alone, in this process, in chunk-sized batches."""
        kind = get_kind("literature")
        runtime = get_runtime()
        params = kind.params_with_defaults(job_params)
        runtime.ensure_kind_loaded(kind)
        runtime.refresh(kind.required_roles(params))
        chunk = settings.MEDASSIST_CHUNK_SIZE
        started = time.perf_counter()
        with self._progress(total=len(abstracts), desc="literature in-process") as bar:
            for start in range(0, len(abstracts), chunk):
                kind.run(abstracts[start:start + chunk], params, runtime)
                bar.update(min(chunk, len(abstracts) - start))
        rate = len(abstracts) / (time.perf_counter() - started)
        self.stdout.write(f"literature handler {job_params} in-process: {rate:,.0f} items/s")
        return rate

    def _through_queue(self, base, headers, kind, abstracts, created) -> float:
        """Items/s from the 202 (acceptance is measured on its own) until the job is final."""
        params = BENCH_PARAMS if kind == "literature" else {}
        response = requests.post(f"{base}/api/v1/jobs/", json={"kind": kind, "items": abstracts, "params": params},
                                 headers=headers, timeout=300)
        started = time.perf_counter()
        if response.status_code != 202:
            raise CommandError(f"submission refused: {response.status_code} {response.text[:500]}")
        job_id = response.json()["id"]
        created.append(job_id)
        with self._progress(total=len(abstracts), desc=f"{kind} through the queue") as bar:
            while True:
                job = Job.objects.get(pk=job_id)
                bar.update(job.processed_items - bar.n)
                if job.is_final:
                    break
                time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"{kind} job ended {job.status}: {job.error}")
        rate = len(abstracts) / elapsed
        self.stdout.write(f"{kind} through the queue: {rate:,.0f} items/s ({elapsed:.2f} s accepted-to-done)")
        return rate

    def _progress(self, **kwargs):
        """Items done, on stderr; disable=None: only when stderr is a terminal."""
        from tqdm import tqdm

        return tqdm(unit="item", file=sys.stderr, disable=True if getattr(self, "no_progress", False) else None,
                    **kwargs)

    def _report(self, accept, accept_items, baseline, through_queue, items, no_write, with_model):
        median_accept = statistics.median(accept)
        noop1, lit1 = through_queue[("noop", 1)], through_queue[("literature", 1)]
        noop2, lit2 = through_queue[("noop", 2)], through_queue[("literature", 2)]
        # Per item, the queue costs 1/noop s; the handler costs 1/baseline s.
        overhead = baseline / noop1
        def rate(value):
            return f"{value:,.0f} items/s ({1000 / value:.2f} ms/item)"

        rows = [
            [f"accept a {accept_items:,}-item submission (median of {len(accept)})", f"{median_accept:.2f} s",
             f"{median_accept / 2:.2f} x the 2 s target"],
            [f"literature handler in-process, 1 process ({items:,} items)", rate(baseline),
             "1.00 (baseline)"],
            ["noop through the queue, 1 worker process", rate(noop1),
             f"queue cost per item = {overhead:.1%} of the handler's"],
            ["literature with embeddings (the default params) in-process, 1 process", rate(with_model),
             f"queue cost per item = {with_model / noop1:.1%} of this handler's"],
            ["literature through the queue, 1 worker process", rate(lit1), f"{lit1 / baseline:.2f}"],
            ["noop through the queue, 2 worker processes", rate(noop2), f"{noop2 / baseline:.2f}"],
            ["literature through the queue, 2 worker processes", rate(lit2), f"{lit2 / baseline:.2f}"],
        ]
        table = format_table(["measurement", "value", "ratio"], rows)
        self.stdout.write("\n" + table)
        body = (f"## Job queue (`python manage.py bench_queue --items {items}`)\n\n"
                f"Machine: {machine_description()}. Chunk size {settings.MEDASSIST_CHUNK_SIZE}; "
                f"throughput is items / wall time from the 202 response to the job's final state, through the "
                f"broker to real `celery worker` processes (acceptance is its own row).\n\n"
                f"{table}\n\nTargets: accept 10,000 items in under 2 s; queue cost per item under 10% of the "
                f"in-process handler's.")
        if not no_write:
            path = write_section("bench_queue", body)
            self.stdout.write(f"\nwritten to {path}")
