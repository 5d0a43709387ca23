"""Federated LoRA fine-tuning on Flower's simulation engine with a tiny random Llama: 3 centres with their
own data, rounds aggregated at the server, per-centre DP accounting, dropout tolerance, what travels.

The real recipe on SmolLM2 is measured by ``manage.py bench_federated`` (docs/benchmarks.md); these tests
check behaviour, not quality. The simulations deliver Flower's messages in process (engine "inprocess"): Ray's
simulation engine costs 25 s to minutes of start-up on a shared 2-core machine (it is what ``bench_federated`` runs).
The deployment test runs Flower's real runtime: a SuperLink and two SuperNodes as processes on 127.0.0.1.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.common.serde import recorddict_to_proto

from medassist.registry.models import ModelVersion
from tests.conftest import require_shared_data
from training.config import ConfigError, FinetuneConfig
from training.data import Record, tokenize_examples
from training.federated.centres import partition_by_year
from training.federated.config import FederatedConfig
from training.federated.run import federated_finetune
from training.federated.server import NotEnoughCentres
from training.run import prepare_data

pytestmark = pytest.mark.django_db

SMALL = {"max_train_examples": 18, "max_eval_examples": 4, "batch_size": 2, "grad_accumulation": 1, "epochs": 1.0,
         "max_length": 160, "checkpoint_every": 0, "export_formats": ["torch-fp32"], "threads_per_worker": 1}
FED = {"centres": 3, "rounds": 2, "local_steps": 2, "min_centres": 2}
INPROCESS = {**FED, "engine": "inprocess"}  # the same apps and messages without Ray's ~25 s start-up


@pytest.fixture
def model_dir(tmp_path, settings):
    settings.MEDASSIST_MODEL_DIR = tmp_path / "models"
    return settings.MEDASSIST_MODEL_DIR


def recipe(**overrides) -> FinetuneConfig:
    require_shared_data("pubmedqa", "pqal_train.json")
    return FinetuneConfig.from_dict({**SMALL, **overrides})


def test_year_partition_is_unequal_non_overlapping_and_ordered_by_era():
    records = [Record(id=str(i), title="", text="t", conclusion="c", year=1995 + i % 20) for i in range(200)]
    records += [Record(id=f"u{i}", title="", text="t", conclusion="c") for i in range(9)]  # undated
    bands = partition_by_year(records, 3)
    sizes = [len(bands[c]) for c in ("centre-0", "centre-1", "centre-2")]
    assert sum(sizes) == 209 and len(set(sizes)) == 3 and sizes[0] > sizes[2]
    ids = [r.id for band in bands.values() for r in band]
    assert len(ids) == len(set(ids))
    newest_of_0 = max(r.year for r in bands["centre-0"] if r.year)
    oldest_of_1 = min(r.year for r in bands["centre-1"] if r.year)
    assert newest_of_0 < oldest_of_1  # a year is never split between centres


@pytest.mark.parametrize("values, field", [
    ({"rounds": 0}, "federated.rounds"),
    ({"min_centres": 4}, "federated.min_centres"),
    ({"strategy": "fedsgd"}, "federated.strategy"),
    ({"centre_count": 3}, "federated.centre_count"),
])
def test_bad_federated_recipes_name_the_knob(values, field):
    with pytest.raises(ConfigError) as error:
        FederatedConfig.from_dict(values)
    assert error.value.field == field


def drop_centre_after_round(model_dir, name: str, centre: str, after: int):
    """A progress callback that takes ``centre`` offline (its data disappears) once round ``after`` is done."""
    def progress(record):
        if record.get("stage") == "federated round" and record["round"] == after:
            (model_dir / "finetuned" / name / "run" / "centres" / f"{centre}.pt").unlink()
        seen.append(record)

    seen: list[dict] = []
    return progress, seen


def test_dp_epsilon_grows_per_centre_a_dropped_centre_is_tolerated_and_only_adapters_travel(tiny_models, model_dir):
    config = recipe(dp=True, noise_multiplier=1.0)
    received: list[bytes] = []

    def inspect(server_round, message):  # the reply's content as it goes on the wire (Flower's protobuf)
        received.append(recorddict_to_proto(message.content).SerializeToString())

    progress, seen = drop_centre_after_round(model_dir, "fed-dp", "centre-2", after=1)
    result = federated_finetune(config, FederatedConfig.from_dict({**INPROCESS, "rounds": 3}), name="fed-dp",
                                progress=progress, inspect=inspect)

    rounds = [r for r in seen if r.get("stage") == "federated round"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["centres"] for r in rounds] == [3, 2, 2] and rounds[1]["dropped"] == ["centre-2"]
    for centre in ("centre-0", "centre-1"):
        spent = [r["epsilon"][centre] for r in rounds]
        assert 0 < spent[0] < spent[1] < spent[2], spent  # composed over rounds, never reset
    assert all("eval_loss" in r and r["bytes_received"] > 0 for r in rounds)
    partition = result["partition"]
    assert [row["centre"] for row in partition] == ["centre-0", "centre-1", "centre-2"]
    assert sum(row["examples"] for row in partition) == 18

    version = ModelVersion.objects.get(name="fed-dp")
    assert version.status == ModelVersion.Status.CANDIDATE and version.config["mode"] == "federated"
    centres = {c["id"]: c for c in version.config["federated"]["centres"]}
    assert set(centres) == {"centre-0", "centre-1", "centre-2"}
    assert centres["centre-2"]["rounds"] == 1 and centres["centre-0"]["rounds"] == 3
    assert centres["centre-0"]["epsilon"] == rounds[-1]["epsilon"]["centre-0"]
    assert {c["id"]: c["examples"] for c in centres.values()} == {row["centre"]: row["examples"] for row in partition}
    assert sum(c["examples"] for c in centres.values()) == 18
    assert version.config["federated"]["dropped"] == {"2": ["centre-2"], "3": ["centre-2"]}
    assert not (model_dir / "finetuned" / "fed-dp" / "run" / "centres").exists()  # centre data gone with the run

    # What the server received: adapter tensors, counts and metrics; none of a centre's examples.
    assert len(received) == 3 + 2 + 2
    assert all(b"lora_A" in blob and b"lora_B" in blob and len(blob) > 1000 for blob in received)
    examples = prepare_data(config).train
    texts = [e.turns[0][0][-200:].encode() for e in examples]
    texts += [e.turns[0][1].encode() for e in examples if len(e.turns[0][1]) > 12]
    token_runs = []
    for example in tokenize_examples(examples, tiny_models["generator"].artifact_path, max_length=160):
        ids = example.input_ids[-24:]
        token_runs += [np.asarray(ids, dtype=np.int64).tobytes(), np.asarray(ids, dtype=np.int32).tobytes(),
                       json.dumps(ids).encode()]
    for blob in received:
        assert not any(text in blob for text in texts)
        assert not any(run in blob for run in token_runs)
        assert b"input_ids" not in blob and b"weights" not in blob


def test_fewer_centres_than_the_minimum_fail_the_run_and_register_nothing(tiny_models, model_dir):
    def progress(record):  # centre-1 is gone before the first round
        if record.get("stage") == "federated training":
            (model_dir / "finetuned" / "fed-short" / "run" / "centres" / "centre-1.pt").unlink()

    with pytest.raises(NotEnoughCentres, match="2 of 3 centres answered, min_centres is 3"):
        federated_finetune(recipe(), FederatedConfig.from_dict({**INPROCESS, "min_centres": 3}), name="fed-short",
                           progress=progress)
    assert not ModelVersion.objects.filter(name="fed-short").exists()
    assert not (model_dir / "finetuned" / "fed-short" / "torch-fp32").exists()


def test_federated_finetune_job_through_the_api_registers_a_candidate(tiny_models, model_dir, make_user, client_for):
    from medassist.jobs.models import Job, JobItem
    from medassist.jobs.services import job_process_chunk
    from workers.versions import get_runtime

    require_shared_data("pubmedqa", "pqal_train.json")
    trainer = client_for(make_user("trainer", perms=("jobs.run_finetune",)))
    outsider = client_for(make_user("outsider"))
    body = {"kind": "finetune", "items": [{"sources": ["pubmedqa"], "name": "fed-api"}],
            "params": {**SMALL, "mode": "federated", "federated": INPROCESS}}
    assert outsider.post("/api/v1/jobs/", body, format="json").status_code in (400, 403)
    bad = trainer.post("/api/v1/jobs/", {**body, "params": {**body["params"], "federated": {"rounds": 0}}},
                       format="json")
    assert bad.status_code == 400 and "federated.rounds" in json.dumps(bad.json())

    response = trainer.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    job_process_chunk(job_id=job_id, start=0, end=1, runtime=get_runtime())

    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded", (job.error, JobItem.objects.get(job=job).error)
    result = JobItem.objects.get(job=job).result
    assert result["mode"] == "federated" and result["training"]["rounds"] == 2
    assert job.status_detail["stage"] == "done"
    candidate = ModelVersion.objects.get(pk=result["candidate_ids"][0])
    assert candidate.status == "candidate" and candidate.parent_id == tiny_models["generator"].pk
    federated = candidate.config["federated"]
    assert federated["rounds"] == 2 and len(federated["centres"]) == 3
    assert all(set(c) == {"id", "examples", "rounds", "epsilon"} and c["epsilon"] is None for c in federated["centres"])
    assert federated["bytes_per_round"] > 0
    assert set(candidate.metrics["after"]) >= {"accuracy", "nll"}


def test_federated_node_prepares_only_local_examples_and_insists_on_tls(tiny_model_dirs, tmp_path):
    from django.core.management import CommandError, call_command

    source = require_shared_data("pubmedqa", "pqal_train.json")
    common = ["--data", str(source), "--superlink", "coordinator.example.org:9092", "--centre", "centre-a",
              "--base-dir", str(tiny_model_dirs["llama"]), "--work-dir", str(tmp_path), "--max-length", "96"]
    with pytest.raises(CommandError, match="root-certificates"):
        call_command("federated_node", *common)
    with pytest.raises(CommandError, match="HOST:PORT"):
        call_command("federated_node", *common[:2], "--superlink", "https://x", *common[4:], "--prepare-only")
    call_command("federated_node", *common, "--prepare-only")
    examples = torch.load(tmp_path / "examples.pt", weights_only=True)
    assert len(examples) == 500 and set(examples[0]) == {"input_ids", "labels", "weights"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process, timeout: float = 60) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the SuperLink exited"
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing listens on {port}")


def test_deployment_superlink_and_two_supernodes_as_processes_complete_a_round(tiny_model_dirs, tmp_path):
    """The real deployment runtime on 127.0.0.1: SuperLink, two `manage.py federated_node` SuperNodes, `flwr run`."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil
    from transformers import AutoTokenizer

    source = require_shared_data("pubmedqa", "pqal_train.json")
    root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(root),
           "FLWR_HOME": str(tmp_path / "flwr-home")}
    records = json.loads(source.read_text())
    sizes = {"centre-a": 6, "centre-b": 4}
    items = iter(records.items())
    for centre, size in sizes.items():  # each centre's own file
        (tmp_path / f"{centre}.json").write_text(json.dumps(dict(next(items) for _ in range(size))))
    port = _free_port()
    processes: list[subprocess.Popen] = []

    def start(command: list[str], log: str) -> subprocess.Popen:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=open(tmp_path / log, "wb"),
                                   stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        superlink = start([str(bin_dir / "flower-superlink"), "--insecure", "--port", str(port), "--database",
                           str(tmp_path / "superlink.db")], "superlink.log")
        _wait_for_port(port, superlink)
        for centre in sizes:
            start([sys.executable, "manage.py", "federated_node", "--data", str(tmp_path / f"{centre}.json"),
                   "--superlink", f"127.0.0.1:{port}", "--centre", centre, "--base-dir", str(tiny_model_dirs["llama"]),
                   "--work-dir", str(tmp_path / centre), "--insecure", "--runtime-port", str(_free_port()),
                   "--max-length", "96"], f"{centre}.log")
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
        recipe = {"finetune": {**SMALL, "max_length": 96}, "federated": {"centres": 2, "rounds": 1, "local_steps": 1,
                                                                         "min_centres": 2},
                  "base-dir": str(tiny_model_dirs["llama"]), "pad-token-id": tokenizer.pad_token_id}
        (tmp_path / "recipe.json").write_text(json.dumps(recipe))
        app = tmp_path / "app"
        app.mkdir()
        shutil.copy(root / "training" / "federated" / "app" / "pyproject.toml", app)
        with open(app / "pyproject.toml", "a") as f:
            f.write(f'\n[tool.flwr.federations]\ndefault = "local"\n\n[tool.flwr.federations.local]\n'
                    f'address = "127.0.0.1:{port}"\ninsecure = true\n')
        out = tmp_path / "out"
        submitted = subprocess.run([str(bin_dir / "flwr"), "run", str(app), "local", "--run-config",
                                    f'recipe-path="{tmp_path / "recipe.json"}" out-dir="{out}"'],
                                   env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        deadline = time.monotonic() + 240
        while not (out / "outcome.json").exists() and time.monotonic() < deadline:
            time.sleep(1)
        logs = {p.name: p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.log")}
        assert (out / "outcome.json").exists(), logs
        outcome = json.loads((out / "outcome.json").read_text())
        assert [r["round"] for r in outcome["rounds"]] == [1] and outcome["rounds"][0]["dropped"] == []
        assert {c["id"]: c["examples"] for c in outcome["centres"]} == sizes
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        # SuperNodes start detached helpers (flower-superexec, flwr-clientapp): stop the whole trees.
        family = []
        for process in processes:
            try:
                family += [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
            except psutil.NoSuchProcess:
                pass
        for pid in family:
            try:
                psutil.Process(pid).terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs([p for p in map(lambda pid: psutil.Process(pid) if psutil.pid_exists(pid) else None, family)
                           if p], timeout=10)


def test_central_dp_and_fedprox_run_and_report_a_growing_central_epsilon(tiny_models, model_dir):
    seen: list[dict] = []
    fed = FederatedConfig.from_dict({**INPROCESS, "strategy": "fedprox", "central_dp": True,
                                     "central_noise_multiplier": 1.0, "central_clip_norm": 0.5, "min_centres": 3})
    result = federated_finetune(recipe(), fed, name="fed-central", progress=seen.append)
    rounds = [r for r in seen if r.get("stage") == "federated round"]
    assert 0 < rounds[0]["central_epsilon"] < rounds[1]["central_epsilon"]
    assert result["training"]["central_epsilon"] == rounds[1]["central_epsilon"]
    assert ModelVersion.objects.get(name="fed-central").config["federated"]["recipe"]["strategy"] == "fedprox"
