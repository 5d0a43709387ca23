"""The coordinator of a deployed federation: submit the ServerApp to a running SuperLink, follow it, stop it.

A ``finetune`` job with ``federated.engine: "deployment"`` trains here instead of in Flower's simulation
engine. The SuperLink (``flower-superlink`` at the coordinating site) and the centres' SuperNodes
(``manage.py federated_node`` at each hospital, on its own data) are already running; ``run_deployed``

1. writes the recipe (``recipe.json``: FinetuneConfig, FederatedConfig, base model directory, pad token,
   the held-out examples' file) into the run directory;
2. submits ``training/federated/app`` (``deploy.server_app``) with ``flwr run`` to the SuperLink of the
   settings (``SuperLink.from_settings``: ``MEDASSIST_FLWR_SUPERLINK``, TLS with
   ``MEDASSIST_FLWR_ROOT_CERTIFICATES``), through a Flower home of its own that names only that SuperLink;
3. follows the run: every line the ServerApp appends to ``rounds.jsonl`` goes to ``on_round`` (the job's
   progress) until ``outcome.json`` appears; the ServerApp's own failure (``error.json``) or a run that
   Flower reports finished without an outcome raises;
4. stops the Flower run (``flwr stop``) when ``should_stop`` turns true (cancelled, out of time) or anything
   fails here, so no ServerApp is left driving the centres.

The ServerApp runs in the SuperLink's process tree, so it must see the run directory and the base model at
the same paths as this process (same host, or the models volume mounted at the same path). The Flower CLI
is used as a program, its documented interface, not through its internal modules.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.config import ConfigError

from .server import FederatedStopped, NotEnoughCentres

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "medassist"  # the only SuperLink connection in the Flower home we write
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$")


def flower_env(**extra: str) -> dict[str, str]:
    """The environment of Flower's programs: this Python's bin first, this project importable, nothing phoned home."""
    project = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH", "")]))
    # Flower sends usage telemetry and checks for updates by default: a clinical network does neither.
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    return env


class FlowerCliError(RuntimeError):
    """A ``flwr`` command failed (its own message, e.g. the SuperLink refused the connection)."""


@dataclass(frozen=True)
class SuperLink:
    """Where the coordinator's SuperLink listens and how to trust it."""

    address: str  # HOST:PORT of its HTTP(S) API
    root_certificates: str = ""  # the CA (PEM) that signed its certificate; "" = the system trust store
    insecure: bool = False  # plain HTTP: a private test network only

    @classmethod
    def from_settings(cls, *, check_files: bool = True) -> SuperLink:
        """From MEDASSIST_FLWR_*; a ConfigError on ``federated.engine`` says what is missing.

        ``check_files=False`` at submission: the API process need not mount the CA file the worker uses.
        """
        from django.conf import settings

        address = settings.MEDASSIST_FLWR_SUPERLINK
        ca = settings.MEDASSIST_FLWR_ROOT_CERTIFICATES
        insecure = settings.MEDASSIST_FLWR_INSECURE
        field = "federated.engine"
        if not address:
            raise ConfigError(field, "deployment needs the coordinator's Flower SuperLink: the server's "
                                     "MEDASSIST_FLWR_SUPERLINK (HOST:PORT) is not set")
        if not _ADDRESS.match(address):
            raise ConfigError(field, f"the server's MEDASSIST_FLWR_SUPERLINK {address!r} is not HOST:PORT")
        if ca and insecure:
            raise ConfigError(field, "MEDASSIST_FLWR_ROOT_CERTIFICATES and MEDASSIST_FLWR_INSECURE contradict each other")
        if ca and check_files and not Path(ca).is_file():
            raise ConfigError(field, f"the server's MEDASSIST_FLWR_ROOT_CERTIFICATES {ca} is not a file")
        return cls(address=address, root_certificates=str(Path(ca).resolve()) if ca else "", insecure=insecure)

    def flower_config(self) -> str:
        """Flower's ``config.toml`` naming this SuperLink as the default connection."""
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{self.address}"']
        if self.insecure:
            lines.append("insecure = true")
        elif self.root_certificates:
            lines.append(f"root-certificates = {json.dumps(self.root_certificates)}")  # a TOML basic string
        return "\n".join(lines) + "\n"


class FlowerCli:
    """``flwr`` commands against one SuperLink, with a Flower home (``FLWR_HOME``) that names only it."""

    def __init__(self, superlink: SuperLink, home: Path):
        self.superlink = superlink
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(superlink.flower_config())
        self.executable = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr") or "flwr"

    def call(self, *args: str, timeout: float = 120) -> dict:
        """Run ``flwr <args> medassist --format json``; its JSON answer, or FlowerCliError with Flower's message."""
        command = [self.executable, *args, CONNECTION, "--format", "json"]
        try:
            done = subprocess.run(command, env=flower_env(FLWR_HOME=str(self.home)), cwd=self.home,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise FlowerCliError(f"flwr {args[0]}: no answer from {self.superlink.address} in {timeout:.0f} s") from exc
        answer = None
        start = done.stdout.find("{")  # with --format json, Flower prints one JSON document (its own chatter held back)
        if start >= 0:
            try:
                answer, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
            except json.JSONDecodeError:
                answer = None
        if done.returncode != 0 or not isinstance(answer, dict) or not answer.get("success"):
            reason = (answer or {}).get("error-message") or (done.stderr or done.stdout).strip()[-800:]
            raise FlowerCliError(f"flwr {' '.join(args[:2])} ({self.superlink.address}): {reason}")
        return answer

    def run(self, app_dir: Path, run_config: dict[str, str]) -> int:
        overrides = " ".join(f"{key}={json.dumps(value)}" for key, value in run_config.items())
        return int(self.call("run", str(app_dir), "--run-config", overrides)["run-id"])

    def status(self, run_id: int) -> dict:
        """{"status": "pending" | "starting" | "running" | "finished:completed|failed|stopped", "status-details"}."""
        runs = self.call("ls", "--run-id", str(run_id))["runs"]
        return runs[0] if runs else {"status": "unknown", "status-details": "not listed"}

    def stop(self, run_id: int) -> None:
        self.call("stop", str(run_id), timeout=60)

    def register_node(self, public_key: Path) -> int:
        """Register a SuperNode's public key (SuperLink started with ``--enable-supernode-auth``); its node id."""
        return int(self.call("supernode", "register", str(public_key))["node-id"])

    def nodes(self) -> list[dict]:
        return self.call("supernode", "ls")["nodes"]


class DeployedRunFailed(RuntimeError):
    """The ServerApp failed, or Flower ended the run without an outcome."""


def _read_new_rounds(path: Path, seen: int) -> list[dict]:
    """Complete lines of ``rounds.jsonl`` after the first ``seen`` (a line being written waits for its newline)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines[seen:] if line.strip()]


def _raise_server_error(error_path: Path) -> None:
    error = json.loads(error_path.read_text())
    message = f"{error.get('message', '')}"
    if error.get("type") == "NotEnoughCentres":  # the same exception as in simulation
        raise NotEnoughCentres(message)
    raise DeployedRunFailed(f"the ServerApp failed: {error.get('type')}: {message}")


def run_deployed(superlink: SuperLink, *, recipe: dict, run_dir: Path, on_round: Callable[[dict], None],
                 should_stop: Callable[[], bool], on_submitted: Callable[[int], None] | None = None,
                 app_dir: Path = APP_DIR, poll_s: float = 0.5, status_every_s: float = 10.0) -> dict:
    """Submit one run, stream its rounds, return its outcome {"rounds", "centres": {id: info}, "run_id"}.

    The adapter is in ``run_dir/adapter``. Raises FederatedStopped when ``should_stop`` turned true (the
    Flower run is stopped first), NotEnoughCentres or DeployedRunFailed when the run failed.
    """
    (run_dir / "recipe.json").write_text(json.dumps(recipe))
    outcome_path, error_path, rounds_path = run_dir / "outcome.json", run_dir / "error.json", run_dir / "rounds.jsonl"
    with tempfile.TemporaryDirectory(prefix="flwr-home-") as home:
        cli = FlowerCli(superlink, Path(home))
        run_id = cli.run(app_dir, {"recipe-path": str(run_dir / "recipe.json"), "out-dir": str(run_dir)})
        if on_submitted is not None:
            on_submitted(run_id)
        finished = False
        try:
            seen, next_status = 0, time.monotonic() + status_every_s
            while True:
                done = outcome_path.exists()  # before reading: every round is written before the outcome
                for record in _read_new_rounds(rounds_path, seen):
                    seen += 1
                    on_round(record)
                if done:
                    finished = True
                    break
                if error_path.exists():
                    finished = True
                    _raise_server_error(error_path)
                if should_stop():
                    raise FederatedStopped(f"stopped during Flower run {run_id} after {seen} round(s)")
                if time.monotonic() >= next_status:  # the ServerApp may die without a word (killed, not importable)
                    status = cli.status(run_id)
                    if str(status.get("status", "")).startswith("finished") and not outcome_path.exists():
                        finished = True
                        if error_path.exists():
                            _raise_server_error(error_path)
                        raise DeployedRunFailed(f"Flower run {run_id} ended {status['status']} without an outcome "
                                                f"({status.get('status-details') or 'no details'}; see the SuperLink's log)")
                    next_status = time.monotonic() + status_every_s
                time.sleep(poll_s)
        finally:
            if not finished:
                try:
                    cli.stop(run_id)
                except FlowerCliError as exc:  # already finished, or the SuperLink is gone: nothing left to stop
                    log.warning("could not stop Flower run %s: %s", run_id, exc)
    outcome = json.loads(outcome_path.read_text())
    return {"rounds": outcome["rounds"], "centres": {c["id"]: c for c in outcome["centres"]}, "run_id": run_id}
