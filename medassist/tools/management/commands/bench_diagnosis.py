"""`manage.py bench_diagnosis`: single-case diagnosis latency over HTTP through the interactive worker.

One web server (gunicorn), one ``interactive`` worker and one ``batch`` worker, as deployed. A
case's latency is submit (POST) to final state seen by polling (GET every 20 ms): what a
clinician's client waits. Measured alone, then while a 5,000-abstract literature job runs on the
batch queue. Target: P90 <= 1 s in both. A progress bar on stderr follows the cases when stderr is a
terminal (``--no-progress``: never).
"""
from __future__ import annotations

import statistics
import time

import requests
from django.core.management import BaseCommand, CommandError, call_command

from medassist.common.processes import free_port, start_web, start_worker
from medassist.tools.evaluation.progress import progress, progress_enabled
from medassist.tools.management.commands.bench_queue import load_abstracts
from medassist.tools.reports import format_table, machine_description, write_section

CASES = [
    "58 year old man with chest pain and shortness of breath, nausea, no fever",
    "fever, chills, headache and splenomegaly after travel",
    "Pt c/o SOB, cough and fever; denies chest pain",
    "headache with nausea, vomiting and photophobia",
    "fatigue, weight loss, polyuria and polydipsia",
    "joint pain and morning stiffness, fatigue, no rash",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _ranker_description() -> str:
    """Which ranker the worker served (the one ``diagnosis_state`` picks from this database) and with what."""
    from medassist.kinds.diagnosis import DEFAULT_WEIGHTS
    from medassist.knowledge.diagnosis_bayes import default_bayes_weights
    from medassist.knowledge.selectors import association_state, hsdn_state
    from medassist.registry.models import ModelVersion

    associations = association_state()["rows"]
    if associations:
        weights = default_bayes_weights().as_dict()
        return (f"Ranker: naive Bayes over the {associations:,} imported diagnosis associations (`knowledge_import "
                f"associations`), weights {', '.join(f'{k} {v:g}' for k, v in weights.items() if k != 'custom')} "
                "(knowledge/data/diagnosis_bayes_weights.json); no embedder (the Bayes ranker uses none).")
    links = hsdn_state()["rows"]
    matrix = (f"the imported knowledge tables ({links:,} HSDN links)" if links
              else "the shared HSDN file (knowledge not imported)")
    embedder = ModelVersion.objects.filter(role="embedder", status="active").first()
    return (f"Ranker: HSDN. Default params: component weights {', '.join(f'{k} {v:g}' for k, v in DEFAULT_WEIGHTS.items())} "
            f"(embedder {embedder.label if embedder else 'none'}); matrix read from {matrix}.")


class Command(BaseCommand):
    help = "Measure P50/P90 latency of single diagnosis cases over HTTP, alone and under a batch job."

    def add_arguments(self, parser):
        parser.add_argument("--cases", type=int, default=40)
        parser.add_argument("--batch-items", type=int, default=5000)
        parser.add_argument("--no-write", action="store_true")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (never one without a terminal)")

    def handle(self, *args, cases, batch_items, no_write, no_progress, **options):
        shown = progress_enabled(no_progress)
        call_command("migrate", interactive=False, verbosity=0)
        from io import StringIO

        out = StringIO()
        call_command("create_api_user", "bench", "--group", "operators", stdout=out)
        headers = {"Authorization": f"Token {out.getvalue().strip()}"}
        from config.celery import app as celery_app

        celery_app.control.purge()  # chunks left by an interrupted run would be the "load" instead of ours
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        threads = {"MEDASSIST_TORCH_THREADS": "1"}
        processes = [start_worker(name="bench-interactive", queues="interactive", concurrency=1, env=threads),
                     start_worker(name="bench-batch", queues="batch", concurrency=1, env=threads),
                     # The benchmark submits and polls (every 20 ms) faster than the per-user throttles allow.
                     start_web(port=port, name="bench-diagnosis-web", env={"MEDASSIST_THROTTLE_SUBMIT": "100000/min",
                                                                                   "MEDASSIST_THROTTLE_USER": "1000000/min"})]
        try:
            self._case(base, headers, CASES[0])  # warm the web process and the worker's ranker
            alone = [self._case(base, headers, CASES[i % len(CASES)])
                     for i in progress(range(cases), desc="cases alone", enabled=shown)]
            abstracts, _ = load_abstracts(batch_items)
            response = requests.post(f"{base}/api/v1/jobs/", headers=headers, timeout=300,
                                     json={"kind": "literature", "items": abstracts, "params": {"embed": True}})
            if response.status_code != 202:
                raise CommandError(f"batch job refused: {response.text[:300]}")
            batch_url = response.json()["url"]
            loaded, batch_progress = [], []
            for i in progress(range(cases), desc="cases under load", enabled=shown):
                loaded.append(self._case(base, headers, CASES[i % len(CASES)]))
                batch_progress.append(requests.get(batch_url, headers=headers, timeout=30).json()["progress"]["percent"])
            requests.post(batch_url + "cancel/", headers=headers, timeout=30)
        finally:
            for process in processes:
                process.stop()
        rows = [["alone", len(alone), f"{statistics.median(alone) * 1000:.0f}", f"{percentile(alone, 0.9) * 1000:.0f}",
                 f"{max(alone) * 1000:.0f}"],
                [f"during a {batch_items:,}-abstract batch job", len(loaded), f"{statistics.median(loaded) * 1000:.0f}",
                 f"{percentile(loaded, 0.9) * 1000:.0f}", f"{max(loaded) * 1000:.0f}"]]
        table = format_table(["condition", "cases", "P50 (ms)", "P90 (ms)", "max (ms)"], rows)
        still_running = batch_progress[-1] < 100 if batch_progress else False
        body = (f"## Diagnosis latency (`python manage.py bench_diagnosis --cases {cases}`)\n\n"
                f"Machine: {machine_description()}. Submit-to-result over HTTP (gunicorn), 1 interactive + 1 batch "
                f"worker process x 1 thread, polling every 20 ms. {_ranker_description()} The batch job was at "
                f"{batch_progress[0] if batch_progress else 0:.0f}% -> {batch_progress[-1] if batch_progress else 0:.0f}% "
                f"during the loaded measurements ({'still running' if still_running else 'finished before the end'}).\n\n"
                f"{table}\n\nTarget: P90 <= 1 s, alone and under load.")
        self.stdout.write(body)
        if not no_write:
            self.stdout.write(f"\nwritten to {write_section('bench_diagnosis', body)}")

    def _case(self, base: str, headers: dict, symptoms: str) -> float:
        started = time.perf_counter()
        response = requests.post(f"{base}/api/v1/jobs/", headers=headers, timeout=30,
                                 json={"kind": "diagnosis", "items": [{"symptoms": symptoms}]})
        if response.status_code != 202:
            raise CommandError(f"case refused: {response.text[:300]}")
        url = response.json()["url"]
        while True:
            job = requests.get(url, headers=headers, timeout=30).json()
            if job["status"] in ("succeeded", "partially_failed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        if job["status"] != "succeeded":
            raise CommandError(f"case ended {job['status']}: {job['error']}")
        return time.perf_counter() - started
