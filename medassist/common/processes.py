"""Starting the real processes (celery worker, gunicorn) from commands and tests.

``manage.py demo``, ``manage.py bench_queue`` and the integration tests all run the product as it
runs in production: separate worker and web processes. Each runs in its own process group so that
``kill()`` can SIGKILL the worker and its pool children together, as a crash would.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, argv: list[str], *, log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=settings.BASE_DIR, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                                          **(env or {})},
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def wait_for_log(self, marker: bytes, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: process exited with {self.process.returncode}:\n"
                                   f"{self.tail()}")
            if marker in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.log_path.name}: not ready after {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a warm shutdown: running tasks finish), then SIGKILL if it takes too long."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(*, name: str, queues: str = "interactive,batch", concurrency: int = 2, env: dict | None = None,
                 log_dir: Path | None = None, wait: bool = True, pool: str = "prefork") -> ServiceProcess:
    """``celery -A config worker`` as a subprocess; returns once it reports ready.

    ``pool="solo"`` is how the training queue runs (DESIGN: Ray is never driven from prefork children).
    """
    log_dir = log_dir or Path(settings.VAR_DIR)
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-c", str(concurrency),
            "-P", pool, "-n", f"{name}-{os.getpid()}-{time.time_ns()}@%h", "--loglevel=INFO",
            "--without-mingle", "--without-gossip"]
    worker = ServiceProcess(argv, log_path=log_dir / f"{name}-worker.log", env=env)
    if wait:
        worker.wait_for_log(b"ready.")
    return worker


def start_web(*, port: int, name: str = "web", log_dir: Path | None = None, env: dict | None = None) -> ServiceProcess:
    """gunicorn serving the WSGI app on 127.0.0.1:port; returns once it listens.

    With config/gunicorn.py, as in the image: on start it clears the metrics files that exited
    processes of this host left in PROMETHEUS_MULTIPROC_DIR (running workers' files stay).
    """
    log_dir = log_dir or Path(settings.VAR_DIR)
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--config",
            str(Path(settings.BASE_DIR) / "config" / "gunicorn.py"), "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--threads", "4", "--timeout", "120"]
    web = ServiceProcess(argv, log_path=log_dir / f"{name}.log", env=env)
    web.wait_for_log(b"Booting worker")
    return web
