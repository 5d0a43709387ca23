"""One federated fine-tuning run, end to end: centres -> rounds on Flower -> export -> candidates.

``federated_finetune(config, fed, ...)`` is what a ``finetune`` job with ``mode: "federated"`` runs:

1. the recipe's data (``training.run.prepare_data``: one PubMedQA fold held out at the coordinator) is
   read; simulated, it is split into ``fed.centres`` centres by publication year or MeSH branch
   (``centres.partition_by_year`` / ``partition_by_mesh``) and each centre's tokenized examples go to its own file
   (``run/centres/centre-<i>.pt``), which only that centre reads; deployed, the coordinator keeps only
   the held-out fold: the centres hold their own data;
2. the base model is evaluated on the held-out questions (label-likelihood accuracy, abstract NLL);
3. the rounds (``server.run_rounds``: aggregation, held-out loss after every round, dropout tolerance,
   accounting) run on one of three engines, each round's record (loss, held-out loss, dropped centres,
   bytes, every centre's epsilon) going to ``progress`` and to ``run/rounds.jsonl``:
   - ``"ray"``: Flower's simulation engine (``flwr.simulation.run_simulation``, Ray backend: one actor per
     CPU, ``RAY_ADDRESS`` for a cluster), one ``ClientApp`` (``client.py``) per centre;
   - ``"inprocess"``: the same apps, messages delivered in this process (``inprocess.py``);
   - ``"deployment"``: ``deploy.server_app`` submitted to the coordinator's running SuperLink, whose
     SuperNodes are the centres (``deployment.py``; stopped with the job);
4. the final global adapter is merged and exported like a centralised run's, evaluated again, and
   registered as candidate versions whose ``config`` records every centre's id, example count and
   epsilon (never data), the partition (counts only) and the rounds.

A cancelled run (``should_stop``) deletes what it made; a failed one registers nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from django.conf import settings

from training import data as training_data
from training.config import FinetuneConfig
from training.run import RunCancelled, TrainingTimeLimit, _remove_partial, answer_weights, prepare_data, resolve_base

from .centres import (
    centre_ids,
    describe,
    load_mesh_tree_numbers,
    partition_by_mesh,
    partition_by_year,
    record_branches,
)
from .config import FederatedConfig

ROUNDS_FILE = "rounds.jsonl"


def assign_centres(prepared_train: list[training_data.Example], records: list[training_data.Record],
                   fed: FederatedConfig) -> tuple[dict[str, str], list[dict]]:
    """Example group (record id) -> centre, and the partition report (counts only)."""
    in_training = [r for r in records if r.id in {e.group for e in prepared_train}]
    branches = None
    if fed.partition == "mesh":
        from medassist.common.data_paths import shared_path

        branches = record_branches(in_training, load_mesh_tree_numbers(shared_path("mesh", must_exist=True)))
        bands = partition_by_mesh(in_training, fed.centres, branches)
    else:
        bands = partition_by_year(in_training, fed.centres)
    by_group = {r.id: centre for centre, band in bands.items() for r in band}
    return by_group, describe(bands, branches)


def write_centre_files(tokenized, groups: list[str], by_group: dict[str, str], config: FinetuneConfig,
                       fed: FederatedConfig, out: Path) -> dict[str, int]:
    """One file per centre with its tokenized examples; examples of unpartitioned groups go by hash."""
    ids = centre_ids(fed.centres)
    per_centre: dict[str, list[dict]] = {centre: [] for centre in ids}
    for example, group in zip(tokenized, groups, strict=True):
        centre = by_group.get(group) or ids[int(hashlib.sha256(group.encode()).hexdigest(), 16) % len(ids)]
        per_centre[centre].append({"input_ids": example.input_ids, "labels": example.labels,
                                   "weights": answer_weights(example.labels, config.answer_loss_weight
                                                             if example.task == "qa" else 1.0)})
    out.mkdir(parents=True, exist_ok=True)
    for centre, examples in per_centre.items():
        if not examples:
            raise ValueError(f"{centre} has no training examples: use fewer centres or more data")
        torch.save(examples, out / f"{centre}.pt")
    return {centre: len(examples) for centre, examples in per_centre.items()}


def simulate(plan, *, centres: int, cpus_per_centre: int = 1, engine: str = "ray") -> dict:
    """Run the ServerApp and ``centres`` ClientApps on Flower's simulation engine (Ray backend) or in process."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token file under ~/.ray
    import logging

    from flwr.simulation import run_simulation

    from .client import app as client_app
    from .server import build_server_app, run_rounds

    if engine == "inprocess":
        from .inprocess import InProcessGrid

        return run_rounds(InProcessGrid(client_app, centres), plan)

    init_args = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if os.environ.get("RAY_ADDRESS"):
        init_args["address"] = os.environ["RAY_ADDRESS"]
    else:
        init_args["num_cpus"] = max(cpus_per_centre, os.cpu_count() or 1)
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)  # Flower logs every message at INFO
    try:
        run_simulation(server_app=build_server_app(plan), client_app=client_app, num_supernodes=centres,
                       backend_config={"client_resources": {"num_cpus": cpus_per_centre, "num_gpus": 0.0},
                                       "init_args": init_args})
    finally:
        flwr_logger.setLevel(level)
    if "error" in plan.outcome:
        raise plan.outcome["error"]
    if "state" not in plan.outcome:
        raise RuntimeError("the federated run ended without a global adapter (see the Flower log)")
    return plan.outcome


def train_federated(config: FinetuneConfig, fed: FederatedConfig, *, base_dir: Path, run_dir: Path,
                    report: Callable[[dict], None], cancelled: Callable[[], bool], out_of_time: Callable[[], bool],
                    time_limit_s: float | None = None, inspect: Callable | None = None,
                    evaluate_base: bool = True, superlink=None) -> dict:
    """Data -> centres -> base evaluation -> federated rounds -> ``run_dir/adapter``; nothing registered.

    Simulated (``fed.engine`` "ray" / "inprocess"), the training data is split into centre files here and
    deleted when it returns or fails. Deployed ("deployment", ``superlink``: a ``deployment.SuperLink``), the
    centres train on their own data at their sites; only the held-out questions are read here, and the
    partition is what the centres report (ids and example counts). ``inspect`` sees replies in simulation only.

    Returns {"prepared", "partition", "outcome" (rounds, centres; state in simulation), "adapter_dir",
    "before", "timings"}.
    """
    from transformers import AutoTokenizer

    from training.evaluate import evaluate_generator, load_generator

    from .server import FederatedStopped

    deployed = fed.engine == "deployment"
    if deployed and superlink is None:
        raise ValueError("engine deployment needs a SuperLink")
    timings: dict[str, float] = {}
    try:
        report({"stage": "preparing data", "mode": "federated", "engine": fed.engine})
        t = time.perf_counter()
        prepared = prepare_data(config)
        tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        eval_tokenized = training_data.tokenize_examples(prepared.eval_qa, base_dir, max_length=config.max_length)
        eval_examples = [{"input_ids": e.input_ids, "labels": e.labels, "weights": [1.0] * len(e.labels)}
                         for e in eval_tokenized]
        partition: list[dict] = []
        if not deployed:  # the simulated centres' data: one file each, read only by that centre
            records = [r for source in config.sources for r in training_data.read_records(source)]
            by_group, partition = assign_centres(prepared.train, records, fed)
            tokenized = training_data.tokenize_examples(prepared.train, base_dir, max_length=config.max_length,
                                                        workers=config.data_workers)
            sizes = write_centre_files(tokenized, [e.group for e in prepared.train], by_group, config, fed,
                                       run_dir / "centres")
            for row in partition:
                row["examples"] = sizes[row["centre"]]
            report({"stage": "partitioned", "partition": partition})
        timings["data_s"] = round(time.perf_counter() - t, 1)
        if cancelled():
            raise RunCancelled("cancelled before training")

        before = None
        if evaluate_base:
            report({"stage": "evaluating the base model", "questions": len(prepared.eval_qa)})
            t = time.perf_counter()
            before = evaluate_generator(load_generator(base_dir), prepared.eval_qa, prepared.eval_records,
                                        predictions_path=run_dir / "eval_before.jsonl")
            timings["evaluate_before_s"] = round(time.perf_counter() - t, 1)

        def report_round(record: dict) -> None:
            try:
                report({"stage": "federated round", **record})
            except Exception:  # progress reporting must never break training
                pass

        report({"stage": "federated training", "centres": fed.centres, "rounds": fed.rounds, "engine": fed.engine})
        adapter_dir = run_dir / "adapter"
        t = time.perf_counter()
        try:
            if deployed:
                outcome = _train_deployed(config, fed, superlink, base_dir=base_dir, run_dir=run_dir, pad_id=pad_id,
                                          eval_examples=eval_examples, report=report, on_round=report_round,
                                          should_stop=lambda: cancelled() or out_of_time())
                partition = [{"centre": c["id"], "examples": c["examples"]} for c in
                             sorted(outcome["centres"].values(), key=lambda c: c["id"])]
            else:
                outcome = _train_simulated(config, fed, base_dir=base_dir, run_dir=run_dir, pad_id=pad_id,
                                           eval_examples=eval_examples, on_round=report_round,
                                           should_stop=lambda: cancelled() or out_of_time(), inspect=inspect)
        except FederatedStopped as exc:
            if cancelled():
                raise RunCancelled(str(exc)) from exc
            raise TrainingTimeLimit(f"{exc} after the {time_limit_s:.0f} s time limit (federated runs do not "
                                    "resume: run fewer rounds or steps)") from exc
        timings["train_s"] = round(time.perf_counter() - t, 1)
        if cancelled():
            raise RunCancelled("cancelled after training")
    finally:
        shutil.rmtree(run_dir / "centres", ignore_errors=True)  # the centres' data never outlives the training
    return {"prepared": prepared, "partition": partition, "outcome": outcome, "adapter_dir": adapter_dir,
            "before": before, "timings": timings}


def _train_simulated(config: FinetuneConfig, fed: FederatedConfig, *, base_dir: Path, run_dir: Path, pad_id: int,
                     eval_examples: list[dict], on_round: Callable[[dict], None], should_stop: Callable[[], bool],
                     inspect: Callable | None) -> dict:
    """Flower's simulation engine (or the in-process grid) on the centre files; the adapter to ``run_dir/adapter``."""
    from training.trainer import lora_state

    from .server import HeldOutLoss, ServerPlan

    held_out = HeldOutLoss(base_dir, config, eval_examples, pad_id)
    rounds_path = run_dir / ROUNDS_FILE

    def log_round(record: dict) -> None:  # the same file the deployed ServerApp writes
        with open(rounds_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        on_round(record)

    train_config = {"finetune": json.dumps(config.as_dict()), "local-steps": fed.local_steps,
                    "pad-token-id": int(pad_id), "base-dir": str(base_dir),
                    "simulation-data-dir": str(run_dir / "centres"),
                    # in process, a centre has the whole machine while it trains (one at a time)
                    "threads": fed.threads_per_centre if fed.engine == "ray" else 0}
    plan = ServerPlan(fed=fed, initial_state=lora_state(held_out.model), train_config=train_config,
                      evaluate=held_out, on_round=log_round, should_stop=should_stop, inspect=inspect,
                      dp_delta=config.dp_delta)
    outcome = simulate(plan, centres=fed.centres, engine=fed.engine)
    held_out.load(outcome["state"])
    held_out.model.save_pretrained(run_dir / "adapter")
    return outcome


def _train_deployed(config: FinetuneConfig, fed: FederatedConfig, superlink, *, base_dir: Path, run_dir: Path,
                    pad_id: int, eval_examples: list[dict], report: Callable[[dict], None],
                    on_round: Callable[[dict], None], should_stop: Callable[[], bool]) -> dict:
    """The same ServerApp rounds on the coordinator's SuperLink; its SuperNodes are the centres."""
    from .deployment import run_deployed

    eval_path = run_dir / "eval_examples.pt"  # held-out questions: scored by the ServerApp after every round
    torch.save(eval_examples, eval_path)
    recipe = {"finetune": config.as_dict(), "federated": fed.as_dict(), "base-dir": str(base_dir),
              "pad-token-id": int(pad_id), "eval-path": str(eval_path)}
    try:
        return run_deployed(superlink, recipe=recipe, run_dir=run_dir, on_round=on_round, should_stop=should_stop,
                            on_submitted=lambda run_id: report({"stage": "federated training", "flower_run": run_id,
                                                                "superlink": superlink.address,
                                                                "centres": fed.centres, "rounds": fed.rounds}))
    finally:
        eval_path.unlink(missing_ok=True)


def federated_finetune(config: FinetuneConfig, fed: FederatedConfig, *, name: str | None = None,
                       progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                       model_dir: Path | None = None, time_limit_s: float | None = None,
                       inspect: Callable | None = None, superlink=None) -> dict:
    """Run one federated recipe (simulated, or deployed on ``superlink``, by default the settings' SuperLink);
    returns the summary (candidates, metrics, centres, rounds)."""
    from training.evaluate import evaluate_generator, load_generator
    from training.export import base_weights, build_artifacts, register_candidates

    from .server import central_epsilon

    started = time.perf_counter()
    report = progress or (lambda record: None)
    if fed.engine == "deployment" and superlink is None:
        from .deployment import SuperLink

        superlink = SuperLink.from_settings()  # ConfigError before anything is made
    base = resolve_base(config)
    base_dir, parent = base_weights(base)
    name = name or f"{parent.name.split('+')[0]}+fedlora-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(model_dir or settings.MEDASSIST_MODEL_DIR) / "finetuned" / name
    run_dir = root / "run"
    if root.exists():
        raise FileExistsError(f"a run named {name} already exists at {root}")
    run_dir.mkdir(parents=True)
    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    timings: dict[str, float] = {}

    def cancelled() -> bool:
        return should_stop is not None and should_stop()

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    try:
        trained_run = train_federated(config, fed, base_dir=base_dir, run_dir=run_dir, report=report,
                                      cancelled=cancelled, out_of_time=out_of_time, time_limit_s=time_limit_s,
                                      inspect=inspect, superlink=superlink)
        prepared, partition, outcome = trained_run["prepared"], trained_run["partition"], trained_run["outcome"]
        before, adapter_dir = trained_run["before"], trained_run["adapter_dir"]
        timings.update(trained_run["timings"])

        report({"stage": "exporting", "formats": list(config.export_formats)})
        t = time.perf_counter()
        artifacts = build_artifacts(base_dir=base_dir, adapter_dir=adapter_dir, root=root,
                                    formats=config.export_formats, progress=lambda msg: report({"stage": msg}))
        timings["export_s"] = round(time.perf_counter() - t, 1)

        report({"stage": "evaluating the fine-tuned model"})
        t = time.perf_counter()
        after = evaluate_generator(load_generator(root / "torch-fp32"), prepared.eval_qa, prepared.eval_records,
                                   predictions_path=run_dir / "eval_after.jsonl")
        timings["evaluate_after_s"] = round(time.perf_counter() - t, 1)
        timings["total_s"] = round(time.perf_counter() - started, 1)

        rounds = outcome["rounds"]
        centres = [{"id": c["id"], "examples": c["examples"], "rounds": c["rounds"], "epsilon": c.get("epsilon")}
                   for c in sorted(outcome["centres"].values(), key=lambda c: c["id"])]
        trained = [r for r in rounds if r["round"] > 0]
        federated = {"rounds": len(trained), "centres": centres, "partition": partition,
                     "dropped": {str(r["round"]): r["dropped"] for r in trained if r["dropped"]},
                     "bytes_per_round": round(sum(r["bytes_sent"] + r["bytes_received"] for r in trained)
                                              / max(1, len(trained))),
                     "dp": {"per_centre": config.dp, "delta": config.dp_delta,
                            "noise_multiplier": config.noise_multiplier if config.dp else None,
                            "central": fed.central_dp,
                            "central_epsilon": central_epsilon(fed, len(trained), config.dp_delta)},
                     "engine": {"ray": "flwr.simulation (Ray backend)", "inprocess": "in-process grid",
                                "deployment": f"Flower deployment (SuperLink {getattr(superlink, 'address', '')}, "
                                              f"run {outcome.get('run_id')})"}[fed.engine],
                     "recipe": fed.as_dict()}
        metrics = {"before": before, "after": after, "evaluation": prepared.evaluation_key,
                   "training": {"mode": "federated", "rounds": rounds, "centres": centres,
                                "bytes_per_round": federated["bytes_per_round"]}, "timings": timings}
        version_config = {"mode": "federated", "finetune": config.as_dict(), "federated": federated,
                          "dataset_hash": prepared.dataset_hash, "sources": prepared.sources,
                          "train_examples": len(prepared.train), "parent": parent.label,
                          "base_dir_trained_from": str(base_dir), "logs": str(run_dir / ROUNDS_FILE),
                          "adapter_dir": str(adapter_dir)}
        if cancelled():
            raise RunCancelled("cancelled before registration")
        versions = register_candidates(name=name, artifacts=artifacts, parent=parent, config=version_config,
                                       metrics=metrics, evaluation_key=prepared.evaluation_key, before=before,
                                       after=after)
    except RunCancelled:
        shutil.rmtree(root, ignore_errors=True)
        raise
    except BaseException:
        for child in root.iterdir() if root.exists() else ():
            if child.name != "run":
                shutil.rmtree(child, ignore_errors=True)
        raise
    finally:
        _remove_partial(root)
    result = {"name": name, "mode": "federated", "candidates": [v.label for v in versions],
              "candidate_ids": [v.pk for v in versions], "parent": parent.label, "dataset_hash": prepared.dataset_hash,
              "evaluation": prepared.evaluation_key, "before": before, "after": after,
              "training": {"rounds": len(trained), "centres": centres, "bytes_per_round": federated["bytes_per_round"],
                           "central_epsilon": federated["dp"]["central_epsilon"],
                           "final_eval_loss": trained[-1].get("eval_loss") if trained else None},
              "partition": partition, "timings": timings, "run_dir": str(run_dir)}
    report({"stage": "done", "candidates": result["candidates"], "centres": centres})
    return result
