"""`manage.py bench_upload_memory`: peak memory of one upload request, for hostile 50 MB files (issue 13).

Each case is a file of about ``--mb`` MB (default 50, the upload limit) sent as ``POST /api/v1/jobs/``
multipart to the WSGI application in a fresh Python process, the body streamed from disk as a server
would. The table gives the status the request got, its time, the process' peak RSS, and how much the
request added to it over a warm process (the target: under 300 MB per request). Written to
docs/benchmarks.md (section ``upload-memory``).

Cases: gzip bombs (a 50 MB multi-member gzip that would inflate to about 50 GB: whitespace, one endless
JSON line), hostile structures (a JSON array of empty arrays, one CSV line of 25 million cells, one XML
record of endless elements), and the largest legitimate upload (50,000 records, stored as a job and
deleted again).
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command

from medassist.tools.reports import format_table, machine_description, write_section

BOUNDARY = "----medassist-bench-boundary"
TARGET_MB = 300

# Runs in a fresh process: warm the app with a small request, then send the file once and report RSS.
CHILD = r"""
import json, os, resource, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from config.wsgi import application

body_path, token, content_type = sys.argv[1], sys.argv[2], sys.argv[3]

def call(stream, length, ctype):
    status = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/jobs/", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": stream, "CONTENT_TYPE": ctype,
               "CONTENT_LENGTH": str(length), "HTTP_AUTHORIZATION": "Token " + token, "REMOTE_ADDR": "127.0.0.1",
               "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
               "wsgi.multiprocess": True, "wsgi.run_once": False, "SERVER_PROTOCOL": "HTTP/1.1"}
    response = application(environ, lambda s, h, *a: status.append(s))
    body = b"".join(response)
    response.close()
    return int(status[0].split()[0]), body

import io
small = json.dumps({"kind": "literature", "items": ["warm-up abstract"], "params": {"embed": False}}).encode()
warm_status, warm_body = call(io.BytesIO(small), len(small), "application/json")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = rss()
started = time.perf_counter()
with open(body_path, "rb") as f:
    status, body = call(f, os.path.getsize(body_path), content_type)
elapsed = time.perf_counter() - started
try:
    detail = json.loads(body)
except ValueError:
    detail = {"detail": body[:200].decode("utf-8", "replace")}
message = detail.get("id") or next(iter((detail.get("errors") or {}).values()), [detail.get("detail", "")])
print(json.dumps({"status": status, "seconds": elapsed, "peak_mb": rss(), "warm_mb": before,
                  "message": str(message[0] if isinstance(message, list) else message)[:140],
                  "job": detail.get("id"), "warm_job": json.loads(warm_body).get("id")}))
"""


def _gzip_bomb(path: Path, size: int, member_payload: bytes, prefix: bytes = b"") -> None:
    """A multi-member gzip of ``size`` bytes: ``prefix`` once, then the same compressed member repeated."""
    member = gzip.compress(member_payload, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(prefix))
        for _ in range(size // len(member)):
            f.write(member)


def _repeat(path: Path, size: int, head: bytes, unit: bytes, tail: bytes = b"") -> None:
    block = unit * (1024 * 1024 // len(unit))
    with open(path, "wb") as f:
        f.write(head)
        written = len(head)
        while written + len(block) < size - len(tail):
            f.write(block)
            written += len(block)
        f.write(tail)


def _records(path: Path, count: int, size: int) -> None:
    from medassist.tools.management.commands.bench_queue import load_abstracts

    abstracts, _ = load_abstracts(count)
    per_record = size // count - 60  # real abstracts, cut or repeated to fill the file evenly
    with open(path, "w") as f:
        for n, item in enumerate(abstracts):
            text = (item["text"] + " ") * (per_record // len(item["text"]) + 1)
            f.write(json.dumps({"pmid": str(n), "text": text[:per_record].strip()}) + "\n")


CASES = [
    ("gzip bomb: whitespace (~50 GB inflated)", "bomb.jsonl.gz",
     lambda p, s: _gzip_bomb(p, s, b" " * (1 << 20))),
    ("gzip bomb: 20,000-character records past the byte limit", "records.jsonl.gz",
     lambda p, s: _gzip_bomb(p, s, (b'{"text": "' + b"x" * 19_980 + b'"}\n') * 50)),
    ("gzip bomb: one endless JSON line", "line.jsonl.gz",
     lambda p, s: _gzip_bomb(p, s, b"a" * (1 << 20), prefix=b'{"text": "')),
    ("JSON array of empty arrays", "arrays.json", lambda p, s: _repeat(p, s, b"[", b"[],", b"[]]")),
    ("CSV: one line of empty cells", "cells.csv", lambda p, s: _repeat(p, s, b"text\n", b",", b"\n")),
    ("XML: one record of endless elements", "record.xml",
     lambda p, s: _repeat(p, s, b"<PubmedArticleSet><PubmedArticle>", b"<x/>", b"</PubmedArticle></PubmedArticleSet>")),
    ("50,000 real records (accepted, stored)", "records.jsonl", lambda p, s: _records(p, 50_000, s)),
]


class Command(BaseCommand):
    help = "Peak RSS of one upload request for hostile 50 MB files (target: under 300 MB per request)."

    def add_arguments(self, parser):
        parser.add_argument("--mb", type=float, default=50.0, help="file size (the upload limit is 50 MB)")
        parser.add_argument("--only", default="", help="run only cases whose name contains this")
        parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")

    def handle(self, *args, mb, only, no_write, **options):
        from medassist.jobs.models import Job

        call_command("migrate", interactive=False, verbosity=0)
        out = StringIO()
        call_command("create_api_user", "upload-bench", stdout=out)
        token = out.getvalue().strip().splitlines()[-1]
        size = int(mb * 1024 * 1024)
        rows = []
        worst_added = 0.0
        with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
            for name, filename, make in CASES:
                if only and only not in name:
                    continue
                file_path, body_path = Path(tmp) / filename, Path(tmp) / "body"
                make(file_path, size - 64 * 1024)  # room for the form around it
                self._multipart(body_path, file_path, filename)
                file_path.unlink()
                proc = subprocess.run([sys.executable, "-c", CHILD, str(body_path), token,
                                       f"multipart/form-data; boundary={BOUNDARY}"],
                                      capture_output=True, text=True, cwd=settings.BASE_DIR, timeout=900)
                if proc.returncode != 0:
                    raise CommandError(f"{name}: the request process failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                Job.objects.filter(pk__in=[j for j in (result["job"], result["warm_job"]) if j]).delete()
                added = result["peak_mb"] - result["warm_mb"]
                worst_added = max(worst_added, added)
                rows.append([name, f"{body_path.stat().st_size / 1024 / 1024:.1f}", result["status"],
                             f"{result['seconds']:.1f}", f"{result['peak_mb']:.0f}", f"{added:.0f}",
                             result["message"].replace("|", "/")])
                self.stdout.write(" | ".join(str(c) for c in rows[-1]))
        table = format_table(["upload", "MB sent", "status", "seconds", "peak RSS MB", "added by the request MB",
                              "answer"], rows)
        body = (f"`python manage.py bench_upload_memory --mb {mb:g}` on {machine_description()}: one multipart "
                f"`POST /api/v1/jobs/` per case to the WSGI app in a fresh process, the body streamed from disk; "
                f"MEDASSIST_MAX_UPLOAD_BYTES={settings.MEDASSIST_MAX_UPLOAD_BYTES:,} (it bounds the decompressed "
                f"bytes too). \"Added by the request\" is the peak RSS over that of the warm process (Django "
                f"loaded, one small job submitted). Target: under {TARGET_MB} MB per request.\n\n{table}\n\n"
                f"Largest addition: {worst_added:.0f} MB.")
        self.stdout.write(body)
        if not no_write:
            write_section("upload-memory", "## Upload memory (bench_upload_memory)\n\n" + body)

    @staticmethod
    def _multipart(body_path: Path, file_path: Path, filename: str) -> None:
        with open(body_path, "wb") as body, open(file_path, "rb") as src:
            for field, value in (("kind", "literature"), ("params", json.dumps({"embed": False}))):
                body.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode())
            body.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                       "Content-Type: application/octet-stream\r\n\r\n".encode())
            while block := src.read(1 << 20):
                body.write(block)
            body.write(f"\r\n--{BOUNDARY}--\r\n".encode())
