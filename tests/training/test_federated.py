"""Federated LoRA fine-tuning on Flower's simulation engine with a tiny random Llama: 3 centres with their
own data, rounds aggregated at the server, per-centre DP accounting, dropout tolerance, what travels.

The real recipe on SmolLM2 is measured by ``manage.py bench_federated`` (docs/benchmarks.md); these tests
check behaviour, not quality. The simulations deliver Flower's messages in process (engine "inprocess"): Ray's
simulation engine costs 25 s to minutes of start-up on a shared 2-core machine (it is what ``bench_federated`` runs).
The deployment tests run Flower's real runtime as processes on 127.0.0.1: a SuperLink and two SuperNodes without
TLS driven by `flwr run` by hand, and a SuperLink with TLS and node authentication (certificates and keys made in
the test) driven by finetune jobs with ``federated.engine: "deployment"``, which an unregistered node and a node
without TLS cannot join.
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


def test_mesh_partition_deals_whole_topics_to_unequal_centres():
    from collections import Counter

    from training.data import read_records
    from training.federated.centres import describe, load_mesh_tree_numbers, partition_by_mesh, record_branches

    require_shared_data("pubmedqa", "pqal_train.json")
    records = read_records("pubmedqa")
    branches = record_branches(records, load_mesh_tree_numbers(require_shared_data("mesh-2015", "tree-numbers.tsv")))
    assert all(branches.values())  # every PubMedQA record has a topic heading
    bands = partition_by_mesh(records, 3, branches)
    sizes = [len(bands[c]) for c in ("centre-0", "centre-1", "centre-2")]
    assert sum(sizes) == 500 and sizes[0] > sizes[1] > sizes[2] > 0
    owners = {}
    for centre, band in bands.items():
        for record in band:
            assert owners.setdefault(branches[record.id], centre) == centre  # a branch is never split
    rows = describe(bands, branches)
    assert [sum(row["mesh_branches"].values()) for row in rows] == sizes
    top = [Counter(branches[r.id] for r in bands[c]).most_common(1)[0][0] for c in bands]
    assert len(set(top)) == 3  # different main topics: non-IID


@pytest.mark.parametrize("values, field", [
    ({"rounds": 0}, "federated.rounds"),
    ({"min_centres": 4}, "federated.min_centres"),
    ({"strategy": "fedsgd"}, "federated.strategy"),
    ({"partition": "hospital"}, "federated.partition"),
    ({"engine": "flower"}, "federated.engine"),
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
    # every question twice: its yes/no/maybe turn and its rationale request (both as served)
    assert len(examples) == 2 * 500 and set(examples[0]) == {"input_ids", "labels", "weights"}


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


def _stop_process_trees(processes) -> None:
    """Terminate each process and its descendants (SuperNodes start detached helpers: superexec, clientapp)."""
    import psutil

    family = []
    for process in processes:
        try:
            family += [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for member in family:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=10)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass


def test_deployment_superlink_and_two_supernodes_as_processes_complete_a_round(tiny_model_dirs, tmp_path):
    """The real deployment runtime on 127.0.0.1: SuperLink, two `manage.py federated_node` SuperNodes, `flwr run`."""
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    from transformers import AutoTokenizer

    from training.federated.deployment import flower_env

    source = require_shared_data("pubmedqa", "pqal_train.json")
    root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    env = flower_env(FLWR_HOME=str(tmp_path / "flwr-home"))
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
        # a question and its rationale request per record
        assert {c["id"]: c["examples"] for c in outcome["centres"]} == {c: 2 * n for c, n in sizes.items()}
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        _stop_process_trees(processes)


def test_central_dp_fedprox_and_mesh_centres_run_and_report_a_growing_central_epsilon(tiny_models, model_dir):
    seen: list[dict] = []
    fed = FederatedConfig.from_dict({**INPROCESS, "strategy": "fedprox", "central_dp": True, "partition": "mesh",
                                     "central_noise_multiplier": 1.0, "central_clip_norm": 0.5, "min_centres": 3})
    result = federated_finetune(recipe(), fed, name="fed-central", progress=seen.append)
    assert all(row["examples"] > 0 and row["mesh_branches"] for row in result["partition"])  # centres by topic
    rounds = [r for r in seen if r.get("stage") == "federated round"]
    assert 0 < rounds[0]["central_epsilon"] < rounds[1]["central_epsilon"]
    assert result["training"]["central_epsilon"] == rounds[1]["central_epsilon"]
    assert ModelVersion.objects.get(name="fed-central").config["federated"]["recipe"]["strategy"] == "fedprox"


# --- A deployed federation with TLS and node authentication, driven by finetune jobs ----------------------------
# One SuperLink (TLS, --enable-supernode-auth) on 127.0.0.1 for the tests below: centres a and b connect with
# registered keys through `manage.py federated_node`; an unregistered node and a node without TLS try to join.
# The certificates and keys are made in the test with `cryptography` (training.federated.certs).

DEPLOYED = {"engine": "deployment", "centres": 2, "rounds": 1, "local_steps": 1, "min_centres": 2}
CENTRE_SIZES = {"centre-a": 6, "centre-b": 4}


@pytest.fixture(scope="module")
def tls_federation(tiny_model_dirs, tmp_path_factory):
    import subprocess
    import sys
    from pathlib import Path

    from training.federated.certs import make_ca, make_node_key, make_server_cert
    from training.federated.deployment import FlowerCli, SuperLink, flower_env

    source = require_shared_data("pubmedqa", "pqal_train.json")
    root = tmp_path_factory.mktemp("tls-federation")
    project = Path(__file__).resolve().parents[2]
    certs = root / "certs"
    make_ca(certs)
    make_server_cert(certs, hosts=["127.0.0.1"])
    for node in (*CENTRE_SIZES, "intruder"):
        make_node_key(certs, node)
    port = _free_port()
    env = flower_env(FLWR_HOME=str(root / "flwr-home"))
    processes: dict[str, subprocess.Popen] = {}

    def start(name: str, command: list[str]) -> subprocess.Popen:
        processes[name] = subprocess.Popen(command, env=env, cwd=project, stdout=open(root / f"{name}.log", "wb"),
                                           stderr=subprocess.STDOUT)
        return processes[name]

    def node(centre: str, data: Path, *security: str) -> None:  # a centre as deployed: manage.py federated_node
        start(centre, [sys.executable, "manage.py", "federated_node", "--data", str(data), "--superlink",
                       f"127.0.0.1:{port}", "--centre", centre, "--base-dir", str(tiny_model_dirs["llama"]),
                       "--work-dir", str(root / centre), "--runtime-port", str(_free_port()), "--max-length", "96",
                       *security])

    records = iter(json.loads(source.read_text()).items())
    try:
        superlink = start("superlink", [str(Path(sys.executable).parent / "flower-superlink"),
                                        "--ssl-ca-certfile", str(certs / "ca.crt"),
                                        "--ssl-certfile", str(certs / "server.pem"),
                                        "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
                                        "--port", str(port), "--database", str(root / "superlink.db")])
        _wait_for_port(port, superlink)
        link = SuperLink(address=f"127.0.0.1:{port}", root_certificates=str(certs / "ca.crt"))
        cli = FlowerCli(link, root / "cli-home")
        registered = {centre: cli.register_node(certs / f"{centre}.key.pub") for centre in CENTRE_SIZES}
        for centre, size in CENTRE_SIZES.items():  # each centre's own file
            (root / f"{centre}.json").write_text(json.dumps(dict(next(records) for _ in range(size))))
            node(centre, root / f"{centre}.json", "--root-certificates", str(certs / "ca.crt"),
                 "--auth-private-key", str(certs / f"{centre}.key"))
        # Two SuperNodes that must never get work (plain flower-supernode: they fail before any data matters):
        # one with a valid key that nobody registered, one without TLS.
        supernode = [str(Path(sys.executable).parent / "flower-supernode"), "--superlink", f"127.0.0.1:{port}"]
        start("intruder", [*supernode, "--root-certificates", str(certs / "ca.crt"), "--auth-supernode-private-key",
                           str(certs / "intruder.key"), "--port", str(_free_port())])
        start("plain", [*supernode, "--insecure", "--port", str(_free_port())])
        yield {"superlink": link, "cli": cli, "registered": registered, "processes": processes, "root": root,
               "logs": lambda: {p.name: p.read_text(errors="replace")[-1500:] for p in root.glob("*.log")}}
    finally:
        _stop_process_trees(processes.values())


def _flower_status(cli, run_id: int, timeout: float = 30) -> str:
    """The run's status once Flower calls it finished (or whatever it is when the time is up)."""
    import time

    deadline = time.monotonic() + timeout
    while not (status := cli.status(run_id)["status"]).startswith("finished") and time.monotonic() < deadline:
        time.sleep(1)
    return status


@pytest.fixture
def deployed_settings(settings, tls_federation):
    settings.MEDASSIST_FLWR_SUPERLINK = tls_federation["superlink"].address
    settings.MEDASSIST_FLWR_ROOT_CERTIFICATES = tls_federation["superlink"].root_certificates
    settings.MEDASSIST_FLWR_INSECURE = False
    return settings


def test_deployment_engine_needs_a_configured_superlink(settings, make_user, client_for, tmp_path):
    trainer = client_for(make_user("trainer", perms=("jobs.run_finetune",)))
    body = {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}],
            "params": {**SMALL, "mode": "federated", "federated": DEPLOYED}}
    settings.MEDASSIST_FLWR_SUPERLINK = ""
    refused = trainer.post("/api/v1/jobs/", body, format="json")
    assert refused.status_code == 400 and "federated.engine" in json.dumps(refused.json())
    assert "MEDASSIST_FLWR_SUPERLINK" in json.dumps(refused.json())
    settings.MEDASSIST_FLWR_SUPERLINK = "https://coordinator"
    refused = trainer.post("/api/v1/jobs/", body, format="json")
    assert refused.status_code == 400 and "is not HOST:PORT" in json.dumps(refused.json())
    # The CA file is the worker's: checked when the run starts, before anything is made.
    from training.federated.deployment import SuperLink

    settings.MEDASSIST_FLWR_SUPERLINK = "127.0.0.1:9092"
    settings.MEDASSIST_FLWR_ROOT_CERTIFICATES = str(tmp_path / "missing-ca.crt")
    with pytest.raises(ConfigError, match="is not a file") as error:
        SuperLink.from_settings()
    assert error.value.field == "federated.engine"


def test_deployed_finetune_job_over_tls_with_node_authentication_registers_a_candidate(
        tls_federation, deployed_settings, tiny_models, model_dir, make_user, client_for, monkeypatch):
    """The job path (API -> job_process_chunk -> federated_finetune) on the real SuperLink and two SuperNodes."""
    from medassist.jobs.models import Job, JobItem
    from medassist.jobs.services import JobContext, job_process_chunk
    from workers.versions import get_runtime

    seen: list[dict] = []
    report = JobContext.report
    monkeypatch.setattr(JobContext, "report", lambda self, detail: (seen.append(detail), report(self, detail)))
    trainer = client_for(make_user("trainer", perms=("jobs.run_finetune",)))
    body = {"kind": "finetune", "items": [{"sources": ["pubmedqa"], "name": "fed-deployed"}],
            "params": {**SMALL, "max_length": 96, "mode": "federated", "federated": DEPLOYED}}
    response = trainer.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    job_process_chunk(job_id=job_id, start=0, end=1, runtime=get_runtime())

    job = Job.objects.get(pk=job_id)
    item = JobItem.objects.get(job=job)
    assert job.status == "succeeded", (item.error, tls_federation["logs"]())
    # Each round streamed into the job's progress while the Flower run went on, in the simulation's shape.
    rounds = [r for r in seen if r.get("stage") == "federated round"]
    assert [r["round"] for r in rounds] == [1] and rounds[0]["centres"] == 2 and rounds[0]["dropped"] == []
    assert rounds[0]["bytes_received"] > 0 and "eval_loss" in rounds[0] and "train_loss" in rounds[0]
    run_id = next(r["flower_run"] for r in seen if "flower_run" in r)
    assert _flower_status(tls_federation["cli"], run_id) == "finished:completed"  # the ServerApp exits just after

    result = item.result
    assert result["mode"] == "federated" and result["training"]["rounds"] == 1
    # each record gives a question and its rationale request
    assert result["partition"] == [{"centre": c, "examples": 2 * n} for c, n in CENTRE_SIZES.items()]
    candidate = ModelVersion.objects.get(pk=result["candidate_ids"][0])
    assert candidate.status == "candidate" and candidate.parent_id == tiny_models["generator"].pk
    federated = candidate.config["federated"]
    # Only the registered centres trained: the unregistered and the plain-HTTP node never got work.
    assert {c["id"]: c["examples"] for c in federated["centres"]} == {c: 2 * n for c, n in CENTRE_SIZES.items()}
    assert federated["engine"].startswith("Flower deployment (SuperLink 127.0.0.1:")
    assert set(candidate.metrics["after"]) >= {"accuracy", "nll"}
    run_dir = model_dir / "finetuned" / "fed-deployed" / "run"
    assert not (run_dir / "centres").exists()  # the coordinator never held centre data
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_unregistered_and_plain_http_supernodes_never_join_the_tls_superlink(tls_federation):
    import time

    processes, root = tls_federation["processes"], tls_federation["root"]
    deadline = time.monotonic() + 90
    while processes["intruder"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes["intruder"].returncode not in (None, 0), tls_federation["logs"]()
    assert "Failed to activate SuperNode" in (root / "intruder.log").read_text(errors="replace")
    while "Connection attempt failed" not in (root / "plain.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, tls_federation["logs"]()
        time.sleep(0.5)
    assert "SuperNode ID" not in (root / "plain.log").read_text(errors="replace")
    nodes = tls_federation["cli"].nodes()
    # Exactly the two registered keys are known to the SuperLink; nothing else registered itself.
    assert sorted(int(n["node-id"]) for n in nodes) == sorted(tls_federation["registered"].values())
    assert all(n["status"] == "online" for n in nodes), nodes


@pytest.mark.parametrize("how", ["cancelled", "out of time"])
def test_a_cancelled_or_timed_out_deployed_run_stops_the_flower_run_and_registers_nothing(
        how, tls_federation, deployed_settings, tiny_models, model_dir):
    from training.run import RunCancelled, TrainingTimeLimit

    seen: list[dict] = []
    submitted = lambda: any("flower_run" in r for r in seen)  # noqa: E731 - stop right after submission
    name = f"fed-{how.replace(' ', '-')}"
    with pytest.raises(RunCancelled if how == "cancelled" else TrainingTimeLimit):
        federated_finetune(recipe(max_length=96), FederatedConfig.from_dict({**DEPLOYED, "rounds": 2}), name=name,
                           progress=seen.append, should_stop=submitted if how == "cancelled" else None,
                           time_limit_s=None if how == "cancelled" else 0.001)
    run_id = next(r["flower_run"] for r in seen if "flower_run" in r)
    assert _flower_status(tls_federation["cli"], run_id) == "finished:stopped"
    assert not ModelVersion.objects.filter(name=name).exists()
    if how == "cancelled":
        assert not (model_dir / "finetuned" / name).exists()
    else:  # a failed run keeps only its logs
        assert [p.name for p in (model_dir / "finetuned" / name).iterdir()] == ["run"]


def test_run_deployed_streams_whole_lines_and_reports_the_serverapps_failure(tmp_path, monkeypatch):
    """The coordinator's loop with Flower's CLI faked: what it streams, raises and stops."""
    from training.federated import deployment

    calls: list[tuple] = []
    flower = {"status": "running"}

    class FakeCli:
        def __init__(self, superlink, home):
            pass

        def run(self, app_dir, run_config):
            calls.append(("run", run_config["out-dir"]))
            return 7

        def status(self, run_id):
            return {**flower, "status-details": "killed"}

        def stop(self, run_id):
            calls.append(("stop", run_id))

    monkeypatch.setattr(deployment, "FlowerCli", FakeCli)
    link = deployment.SuperLink("127.0.0.1:1", insecure=True)
    seen: list[dict] = []

    def fail_after_the_first_round(record):  # as the ServerApp would: round 2 had too few centres
        seen.append(record)
        (tmp_path / "error.json").write_text(json.dumps({"type": "NotEnoughCentres", "message": "round 2: 1 of 2"}))

    (tmp_path / "rounds.jsonl").write_text(json.dumps({"round": 1}) + "\n" + '{"round": 2, "centres"')  # half-written
    with pytest.raises(NotEnoughCentres, match="round 2: 1 of 2"):
        deployment.run_deployed(link, recipe={}, run_dir=tmp_path, on_round=fail_after_the_first_round,
                                should_stop=lambda: False, poll_s=0.01)
    assert seen == [{"round": 1}] and calls == [("run", str(tmp_path))]  # a failed run needs no stop

    (tmp_path / "error.json").unlink()
    flower["status"] = "finished:failed"  # the ServerApp died without a word: only Flower's status says so
    with pytest.raises(deployment.DeployedRunFailed, match="ended finished:failed without an outcome"):
        deployment.run_deployed(link, recipe={}, run_dir=tmp_path, on_round=seen.append, should_stop=lambda: False,
                                poll_s=0.01, status_every_s=0)
    assert ("stop", 7) not in calls
    flower["status"] = "running"
    with pytest.raises(RuntimeError, match="progress store down"):  # a failure here stops the Flower run
        deployment.run_deployed(link, recipe={}, run_dir=tmp_path, should_stop=lambda: False, poll_s=0.01,
                                on_round=lambda record: (_ for _ in ()).throw(RuntimeError("progress store down")))
    assert calls[-1] == ("stop", 7)
