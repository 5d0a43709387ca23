"""`manage.py demo`: the main job end to end on this machine, through the real processes.

It migrates, creates a demo user, starts a real Celery worker and a real gunicorn web server,
submits the bundled sample corpus (44 abstracts the project wrote) as a literature job over HTTP,
follows its progress, exports the results and prints a summary. With no ``DATABASE_URL`` or
``CELERY_BROKER_URL`` set it runs on the embedded default (SQLite + file-system broker).
"""
from __future__ import annotations

import collections
import secrets
import time
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, call_command

from medassist.common.processes import free_port, start_web, start_worker

SAMPLE = Path(__file__).resolve().parents[3] / "common" / "data" / "sample_abstracts.jsonl"


class Command(BaseCommand):
    help = "Run a literature job on the sample corpus through the real API, queue and worker; print a summary."

    def add_arguments(self, parser):
        parser.add_argument("--file", type=Path, default=SAMPLE, help="JSONL/CSV/PubMed XML to submit")
        parser.add_argument("--user", default="demo")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")

    def handle(self, *args, file: Path, user: str, timeout: float, **options):
        self.user = user
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("preparing models (first run: converts SmolLM2 and builds int8/ONNX variants, ~1 min) ...")
        call_command("models_prepare")
        from io import StringIO

        out = StringIO()
        call_command("create_api_user", user, stdout=out)
        token = out.getvalue().strip()
        # The portal (issue 14): a fresh password for the demo user on every run, printed at the end, and the
        # portal's CSS/JS collected for whitenoise (DEBUG off serves only collected static files).
        password = secrets.token_urlsafe(12)
        demo_user = get_user_model().objects.get(username=user)
        demo_user.set_password(password)
        demo_user.save(update_fields=["password"])
        call_command("collectstatic", interactive=False, verbosity=0)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        var = Path(settings.VAR_DIR)
        self.stdout.write(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
                          f"broker: {settings.CELERY_BROKER_URL.split('://')[0]}; logs in {var}/demo-*.log")
        self.stdout.write("starting a celery worker and a gunicorn web server ...")
        processes = []
        try:
            processes.append(start_worker(name="demo"))
            processes.append(start_web(port=port, name="demo-web"))
            self._run_job(base, token, file, timeout, var)
        finally:
            for process in processes:
                process.stop()
        self.stdout.write(
            "research portal: start a web server and a worker, then sign in with the browser:\n"
            "  .venv/bin/python manage.py runserver 8000 &\n"
            "  .venv/bin/celery -A config worker -Q interactive,batch -c 2 &\n"
            f"  open http://127.0.0.1:8000/portal/   user: {user}   password: {password}\n")

    def _wait_http(self, base: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health/", timeout=5).status_code in (200, 503):
                    return
            except requests.ConnectionError:
                time.sleep(0.3)
        raise SystemExit("the web server did not start; see var/demo-web.log")

    def _run_job(self, base: str, token: str, file: Path, timeout: float, var: Path) -> None:
        headers = {"Authorization": f"Token {token}"}
        deadline = time.monotonic() + timeout
        self._wait_http(base, deadline)
        started = time.monotonic()
        with open(file, "rb") as f:
            response = requests.post(f"{base}/api/v1/jobs/", headers=headers, data={"kind": "literature"},
                                     files={"file": (file.name, f)}, timeout=120)
        if response.status_code not in (200, 202):
            raise SystemExit(f"submission refused ({response.status_code}): {response.text}")
        job = response.json()
        self.stdout.write(f"submitted {job['progress']['total']} abstracts from {file.name}: {job['url']}")
        last = None
        while True:
            job = requests.get(job["url"], headers=headers, timeout=30).json()
            progress = job["progress"]
            line = f"  {job['status']:<10} {progress['processed']}/{progress['total']} ({progress['percent']}%)"
            if line != last:
                self.stdout.write(line)
                last = line
            if job["status"] in ("succeeded", "partially_failed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the job did not finish in {timeout:.0f} s; see var/demo-worker.log")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        export = var / f"demo-results-{job['id']}.jsonl"
        export.write_bytes(requests.get(job["links"]["jsonl"], headers=headers, timeout=120).content)
        self._summary(job, elapsed, export)

    def _summary(self, job: dict, elapsed: float, export: Path) -> None:
        import json

        rows = [json.loads(line) for line in export.read_text().splitlines()]
        concepts = collections.Counter()
        types = collections.Counter()
        for row in rows:
            for concept in (row["result"] or {}).get("concepts", []):
                concepts[(concept["name"], concept["id"])] += 1
                types[concept["type"]] += 1
        p = job["progress"]
        table = [
            ("job", job["id"]), ("status", job["status"]),
            ("items", f"{p['total']} ({p['succeeded']} succeeded, {p['failed']} failed)"),
            ("wall time", f"{elapsed:.1f} s submit-to-done ({p['total'] / elapsed:.1f} items/s)"),
            ("model versions", ", ".join(job["model_versions"].values()) or "-"),
            ("concepts found", ", ".join(f"{n} {t}" for t, n in types.most_common())),
        ]
        width = max(len(k) for k, _ in table)
        self.stdout.write("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in table))
        self.stdout.write("\nmost frequent concepts:")
        for (name, cid), n in concepts.most_common(8):
            self.stdout.write(f"  {n:>3}  {name} ({cid})")
        example = next((r for r in rows if r["result"]), None)
        if example:
            self.stdout.write(f"\nexample summary ({example['ref'].get('title', 'item 0')}):\n  "
                              f"{example['result']['summary']['text']}")
        job_path = f"/api/v1/jobs/{job['id']}/"
        self.stdout.write(f"\nexported to {export}"
                          f"\nresults stay in the database: start the API (python manage.py runserver) and read"
                          f"\n  {job_path}results/ (paged), {job_path}results.jsonl, {job_path}results.csv"
                          f"\n  with the token printed by: python manage.py create_api_user {self.user}\n")
