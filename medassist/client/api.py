"""The HTTP side of the client: one ``Client`` over the public API (``/api/v1/``), nothing else.

- Every call is retried on 429 and 503 (and on a dropped connection), waiting what ``Retry-After``
  says, or an exponential backoff when it says nothing; a submission is safe to retry because it
  carries an ``Idempotency-Key``.
- A file is uploaded as a streamed multipart body of known length: a 2 GB file is never held in memory.
- Errors come back as ``ApiError`` with the API's own ``detail`` and field messages.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests

FINAL_STATUSES = ("succeeded", "partially_failed", "failed", "cancelled", "purged")
RETRY_STATUSES = (429, 503)
UPLOAD_CHUNK_BYTES = 256 * 1024


class ApiError(Exception):
    """A request the API refused or could not serve: the status and the API's own messages."""

    def __init__(self, status: int | None, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors or {}

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = str(body.get("detail") or f"HTTP {response.status_code}")
            errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
        else:
            text = (response.text or "").strip()
            detail = f"HTTP {response.status_code} {response.reason or ''}".strip()
            if text and len(text) < 300 and not text.lstrip().startswith("<"):
                detail += f": {text}"
            errors = {}
        return cls(response.status_code, detail, errors)

    def lines(self) -> list[str]:
        """The message as a person reads it: the detail, then one line per field message."""
        out = [self.detail]
        for name, messages in self.errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                if isinstance(message, dict):  # nested field errors (e.g. per item)
                    message = "; ".join(f"{k}: {v}" for k, v in message.items())
                out.append(f"  {name}: {message}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def idempotency_key(*, kind: str, params: dict, file: Path | None = None, items: list | None = None) -> str:
    """A key derived from what is submitted: the same file (content, not name) with the same kind and params
    gives the same key, so re-running a submit returns the job already made instead of a second one."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "params": params}, sort_keys=True, separators=(",", ":")).encode())
    if file is not None:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(json.dumps(items, sort_keys=True, separators=(",", ":")).encode())
    return f"medassist-cli-{digest.hexdigest()[:48]}"


class MultipartUpload:
    """A ``multipart/form-data`` body that streams its file: iterable, with a length known up front
    (so requests sends ``Content-Length``, which the API checks before reading, not chunked encoding)."""

    def __init__(self, fields: dict[str, str], file_field: str, path: Path,
                 on_read: Callable[[int], None] = lambda n: None):
        self.boundary = uuid.uuid4().hex
        self.on_read = on_read  # hears the size of every block of the file as it is sent
        self.path = Path(path)
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
            for name, value in fields.items())
        filename = self.path.name.replace('"', "_")
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        self.head, self.tail = head, f"\r\n--{self.boundary}--\r\n".encode()
        self.file_size = self.path.stat().st_size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.file_size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(UPLOAD_CHUNK_BYTES), b""):
                self.on_read(len(block))
                yield block
        yield self.tail


@dataclass
class Client:
    """The public API at ``url`` with ``token``. ``notify`` hears about retries (a line for stderr)."""

    url: str
    token: str | None = None
    timeout: float = 60.0  # seconds per request (connect and read)
    retries: int = 6  # attempts after the first, on 429/503/connection errors
    backoff: float = 1.0  # seconds before the first retry without Retry-After; doubles each time
    max_delay: float = 60.0  # never wait longer than this between attempts
    notify: Callable[[str], None] = lambda message: None
    sleep: Callable[[float], None] = time.sleep
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self):
        self.url = self.url.rstrip("/")
        self.session.headers["User-Agent"] = "medassist-client/1"
        if self.token:
            self.session.headers["Authorization"] = f"Token {self.token}"

    # --- transport -------------------------------------------------------------------------------------
    def api_url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, body: Callable[[], dict] | None = None, **kwargs) -> requests.Response:
        """One API call with retries. ``body``: called per attempt for fresh request arguments (a streamed
        upload cannot be replayed from where the last attempt stopped)."""
        url = self.api_url(path)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, url, timeout=self.timeout, **(body() if body else {}), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise ApiError(None, f"cannot reach {self.url}: {exc.__class__.__name__}") from None
                delay = min(self.max_delay, self.backoff * 2 ** attempt)
                self.notify(f"{method} {url}: connection failed; retrying in {delay:.1f} s")
                self.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                told = retry_after_seconds(response.headers.get("Retry-After"))
                delay = min(self.max_delay, told if told is not None else self.backoff * 2 ** attempt)
                self.notify(f"{method} {url}: HTTP {response.status_code}; retrying in {delay:.1f} s "
                            f"(attempt {attempt + 2} of {self.retries + 1})")
                response.close()
                self.sleep(delay)
                continue
            if response.status_code >= 400:
                raise ApiError.from_response(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # --- calls -----------------------------------------------------------------------------------------
    def submit(self, *, kind: str, params: dict, file: Path | None = None, items: list | None = None,
               key: str | None = None, on_upload: Callable[[int, int], None] = lambda sent, total: None,
               ) -> tuple[dict, bool]:
        """Submit a job (a file, streamed, or items as JSON). Returns (job, created): created is False when
        the API answered with the job an earlier submission with the same key made. ``on_upload(sent,
        total)`` follows a file's upload (from 0 again on a retry)."""
        headers = {"Idempotency-Key": key} if key else {}
        if file is not None:
            def body():
                sent = [0]

                def on_read(n: int) -> None:
                    sent[0] += n
                    on_upload(sent[0], upload.file_size)

                upload = MultipartUpload({"kind": kind, "params": json.dumps(params)}, "file", file, on_read)
                on_upload(0, upload.file_size)
                return {"data": upload, "headers": {**headers, "Content-Type": upload.content_type}}
        else:
            def body():
                return {"json": {"kind": kind, "items": items or [], "params": params}, "headers": headers}
        response = self.request("POST", "jobs/", body=body)
        return response.json(), response.status_code == 201 or response.status_code == 202

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"jobs/{job_id}/").json()

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"jobs/{job_id}/cancel/").json()

    def jobs(self, *, status: str | None = None, kind: str | None = None, limit: int | None = None) -> Iterator[dict]:
        """Your jobs, newest first, following the pages."""
        params = {key: value for key, value in (("status", status), ("kind", kind)) if value}
        url, seen = "jobs/", 0
        while url:
            page = self.request("GET", url, params=params).json()
            params = None  # the next page's URL carries them
            for job in page.get("results", []):
                yield job
                seen += 1
                if limit and seen >= limit:
                    return
            url = page.get("next")

    def results(self, job_id: str, *, status: str | None = None, page_size: int = 1000) -> Iterator[dict]:
        """Every item result of a job, in input order, following the pages."""
        params = {"page_size": page_size, **({"status": status} if status else {})}
        url = f"jobs/{job_id}/results/"
        while url:
            page = self.request("GET", url, params=params).json()
            params = None
            yield from page.get("results", [])
            url = page.get("next")

    def export(self, job_id: str, fmt: str, out, *, status: str | None = None) -> int:
        """Stream ``results.<fmt>`` (jsonl or csv) into the binary file ``out``; returns the bytes written."""
        params = {"status": status} if status else None
        response = self.request("GET", f"jobs/{job_id}/results.{fmt}", params=params, stream=True)
        written = 0
        with response:
            for block in response.iter_content(chunk_size=64 * 1024):
                out.write(block)
                written += len(block)
        return written

    def wait(self, job_id: str, *, on_update: Callable[[dict], None] = lambda job: None, interval: float = 1.0,
             max_interval: float = 5.0, timeout: float | None = None) -> dict:
        """Poll until the job is final; ``on_update`` sees every state. The poll slows from ``interval``
        to ``max_interval`` while nothing changes."""
        deadline = time.monotonic() + timeout if timeout else None
        last, delay = None, interval
        while True:
            job = self.job(job_id)
            on_update(job)
            if job["status"] in FINAL_STATUSES:
                return job
            state = (job["status"], job["progress"]["processed"])
            delay = interval if state != last else min(max_interval, delay * 1.5)
            last = state
            if deadline and time.monotonic() + delay > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:.0f} s")
            self.sleep(delay)
