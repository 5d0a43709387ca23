"""The client against a tiny local HTTP server that answers 429/503 first: it waits what Retry-After says
(or backs off), retries the same submission with the same Idempotency-Key and the whole streamed file,
and stops after its retry budget with a readable error and exit code 1."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medassist.client import cli
from medassist.client.api import Client, retry_after_seconds


class StubApi:
    """Answers POST /api/v1/jobs/ with the queued ``answers`` ((status, headers) pairs), then 202."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.seen.append({"path": self.path, "key": self.headers.get("Idempotency-Key"), "body": body,
                                  "content_type": self.headers.get("Content-Type"),
                                  "length": self.headers.get("Content-Length"),
                                  "chunked": self.headers.get("Transfer-Encoding")})
                status, headers = stub.answers.pop(0) if stub.answers else (202, {})
                payload = (json.dumps({"id": "11111111-1111-1111-1111-111111111111", "kind": "noop", "status": "queued",
                                       "progress": {"total": 2, "processed": 0, "succeeded": 0, "failed": 0,
                                                    "percent": 0.0, "remaining": 2, "eta_seconds": None}})
                           if status == 202 else json.dumps({"detail": "Request was throttled."})).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upload(tmp_path):
    path = tmp_path / "abstracts.jsonl"
    path.write_text('{"text": "first abstract"}\n{"text": "second abstract"}\n' * 12000)  # 600 kB: several reads
    return path


def test_429_and_503_are_retried_honouring_retry_after_with_the_same_key_and_whole_file(upload):
    delays = []
    with StubApi([(429, {"Retry-After": "2"}), (503, {}), (429, {"Retry-After": "0.5"})]) as stub:
        client = Client(stub.url, "token", sleep=delays.append, backoff=0.25)
        progress = []
        job, created = client.submit(kind="noop", params={}, file=upload, key="k-1",
                                     on_upload=lambda sent, total: progress.append((sent, total)))
    assert created and job["status"] == "queued"
    size = upload.stat().st_size
    assert progress.count((0, size)) == 4 and progress[-1] == (size, size)  # the upload bar restarts per attempt
    assert delays == [2.0, 0.5, 0.5]  # Retry-After; no header: backoff 0.25 * 2**1; Retry-After again
    assert [seen["key"] for seen in stub.seen] == ["k-1"] * 4
    for seen in stub.seen:  # every attempt carried the whole file, not what was left of a consumed stream
        # Streamed with its length declared up front (the API refuses an oversized body before reading it).
        assert seen["chunked"] is None and int(seen["length"]) == len(seen["body"])
        assert seen["path"] == "/api/v1/jobs/" and seen["content_type"].startswith("multipart/form-data; boundary=")
        assert upload.read_bytes() in seen["body"] and b'name="kind"\r\n\r\nnoop' in seen["body"]


def test_the_command_gives_up_after_its_retries_with_the_apis_message(upload, monkeypatch, capsys):
    monkeypatch.setenv("MEDASSIST_TOKEN", "token")
    with StubApi([(429, {"Retry-After": "0"})] * 3) as stub:  # Retry-After: 0, so no real waiting
        code = cli.main(["--url", stub.url, "--retries", "2", "submit", str(upload), "--kind", "noop"])
    err = capsys.readouterr().err
    assert code == 1 and len(stub.seen) == 3
    assert "HTTP 429; retrying in 0.0 s (attempt 2 of 3)" in err
    assert "error: Request was throttled." in err and "Traceback" not in err


def test_retry_after_as_seconds_or_http_date():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
