"""One fine-tuning run, end to end: data -> evaluation before -> Ray Train -> export -> evaluation after -> candidates.

``finetune(config, ...)`` is what the ``finetune`` job kind and ``manage.py finetune`` call. The
driver (this process) prepares the data and writes it to the run directory; Ray Train runs
``training.trainer.train_loop`` on ``num_workers`` CPU workers (or in this process when 0); a
thread here follows the workers' ``progress.jsonl`` and hands each record to ``progress``, and
when ``should_stop()`` turns true it drops a ``STOP`` file that every worker honours at the
same step. A cancelled or failed run deletes its artifacts and registers nothing.

Run directory (``<MEDASSIST_MODEL_DIR>/finetuned/<name>/``)::

    run/         train.pt (tokenized data), progress.jsonl, checkpoints/, adapter/, ray/
    torch-fp32/  merged weights + tokenizer      onnx-int8/ ... the registered variants
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings

from medassist.registry.models import ModelVersion

from . import data as training_data
from .config import FinetuneConfig, confined_resume_dir
from .trainer import PROGRESS_FILE, STOP_FILE

log = logging.getLogger(__name__)


class RunCancelled(Exception):
    pass


class TrainingTimeLimit(Exception):
    """The run hit its time limit; its checkpoints stay, so ``resume_from`` can finish it."""


@dataclass
class PreparedData:
    train: list[training_data.Example]
    eval_qa: list[training_data.Example]
    eval_records: list[training_data.Record]
    dataset_hash: str
    evaluation_key: str
    sources: dict[str, int]


def prepare_data(config: FinetuneConfig) -> PreparedData:
    """Records from every source; one PubMedQA fold held out (never trained on); instruction examples."""
    from .evaluate import evaluation_key

    records: list[training_data.Record] = []
    counts: dict[str, int] = {}
    for source in config.sources:
        found = training_data.read_records(source)
        counts[source] = len(found)
        records += found
    qa_records = [r for r in records if r.question and r.label]
    held_out: set[str] = set()
    if qa_records:
        folds = training_data.pubmedqa_folds(qa_records, k=config.folds, seed=config.seed)
        held_out = set(folds[config.eval_fold])
    train_records = [r for r in records if r.id not in held_out]
    eval_records = [r for r in qa_records if r.id in held_out]
    augment = (training_data.Augmentation(probability=config.augment_probability, seed=config.seed)
               if config.augment_probability > 0 else None)
    train = training_data.build_examples(train_records, tasks=[t for t in config.tasks if t != "diagnosis"],
                                         include_conclusion_in_qa=config.include_conclusion_in_qa,
                                         augment=augment, seed=config.seed)
    if "diagnosis" in config.tasks:
        train += training_data.diagnosis_examples(seed=config.seed)
    if config.max_train_examples:
        train = train[:config.max_train_examples]
    eval_qa = [e for e in training_data.build_examples(eval_records, tasks=("qa",),
                                                       include_conclusion_in_qa=config.include_conclusion_in_qa)
               if e.task == "qa"]  # the questions (not their rationale requests)
    if config.max_eval_examples:
        eval_qa = eval_qa[:config.max_eval_examples]
        kept = {e.group for e in eval_qa}
        eval_records = [r for r in eval_records if r.id in kept]
    if not train:
        raise ValueError("the sources gave no training examples for the chosen tasks")
    setting = "full abstract" if config.include_conclusion_in_qa else "reasoning-required"
    name = f"pubmedqa-fold{config.eval_fold + 1}of{config.folds}-{setting.replace(' ', '-')}"
    return PreparedData(train=train, eval_qa=eval_qa, eval_records=eval_records,
                        dataset_hash=training_data.dataset_hash(train), evaluation_key=evaluation_key(eval_qa, name=name),
                        sources=counts)


def answer_weights(labels: list[int], answer_weight: float) -> list[float]:
    """Per-token loss weights: ``answer_weight`` on the first labelled span (a QA example's answer), else 1."""
    weights = [1.0] * len(labels)
    in_first = seen = False
    for i, label in enumerate(labels):
        if label != -100 and not seen:
            in_first = seen = True
        elif label == -100 and in_first:
            break
        if in_first:
            weights[i] = answer_weight
    return weights


def resolve_base(config: FinetuneConfig) -> ModelVersion:
    query = ModelVersion.objects.filter(role=ModelVersion.Role.GENERATOR)
    version = (query.filter(pk=config.base_version).first() if config.base_version
               else query.filter(status=ModelVersion.Status.ACTIVE).first())
    if version is None:
        raise ValueError(f"base_version: no generator version {config.base_version}" if config.base_version else
                         "no active generator to fine-tune: run `python manage.py models_prepare`")
    return version


def ray_init(num_workers: int) -> None:
    """Connect to RAY_ADDRESS when set, else start a local Ray (only needed for num_workers > 0)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token file under ~/.ray
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False, num_cpus=None if os.environ.get("RAY_ADDRESS") else max(os.cpu_count() or 1,
                                                                                               num_workers))


def run_trainer(config: FinetuneConfig, *, run_dir: Path, data_path: Path, base_dir: Path, pad_token_id: int) -> dict:
    """Ray Train ``TorchTrainer`` on CPU workers (gloo); local mode when ``num_workers`` is 0."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .trainer import train_loop

    if config.num_workers:
        ray_init(config.num_workers)
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, config.num_workers))
    loop_config = {"finetune": {**config.as_dict(), "threads_per_worker": threads}, "run_dir": str(run_dir),
                   "data_path": str(data_path), "base_dir": str(base_dir), "pad_token_id": pad_token_id}
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": threads} if config.num_workers else None),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(storage_path=str(run_dir / "ray"), name="train"),
    )
    result = trainer.fit()
    if getattr(result, "error", None):
        raise RuntimeError(f"training failed: {result.error}")
    if result.return_value is None:
        raise RuntimeError("training returned no summary (a worker failed)")
    return result.return_value


def _follow_progress(run_dir: Path, progress: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None,
                     done: threading.Event, interval: float) -> None:
    """Relay new progress lines; turn a stop request into the STOP file the workers watch."""
    path, offset = run_dir / PROGRESS_FILE, 0
    while not done.wait(interval):
        if should_stop is not None and should_stop():
            (run_dir / STOP_FILE).touch()
        if progress is None or not path.exists():
            continue
        with open(path) as f:
            f.seek(offset)
            lines = f.readlines()
            offset = f.tell()
        complete = [line for line in lines if line.endswith("\n")]
        offset -= sum(len(line) for line in lines[len(complete):])
        if complete:
            try:
                progress({"stage": "training", **json.loads(complete[-1])})
            except Exception:  # progress reporting must never break training
                log.exception("progress callback failed")


def finetune(config: FinetuneConfig, *, name: str | None = None, progress: Callable[[dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None, poll_interval: float = 2.0,
             model_dir: Path | None = None, time_limit_s: float | None = None) -> dict:
    """Run one recipe; returns the summary (candidates, metrics, timings).

    Raises RunCancelled (``should_stop`` turned true: the run is deleted), TrainingTimeLimit (past
    ``time_limit_s``: training stops at the next step, checkpoints kept), or the failure itself.
    Celery's own time limits do not apply in the solo pool the training queue uses: this one does.
    """
    from transformers import AutoTokenizer

    from .evaluate import evaluate_generator, load_generator
    from .export import base_weights, build_artifacts, register_candidates

    started = time.perf_counter()
    report = progress or (lambda record: None)
    base = resolve_base(config)
    base_dir, parent = base_weights(base)
    name = name or f"{parent.name.split('+')[0]}+lora-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(model_dir or settings.MEDASSIST_MODEL_DIR) / "finetuned" / name
    run_dir = root / "run"
    resuming = bool(config.resume_from)
    if resuming:  # confined to the fine-tuning runs' directories (and resolved once, here)
        config = replace(config, resume_from=str(confined_resume_dir(config.resume_from, root.parent.parent)))
    if root.exists() and not resuming:
        raise FileExistsError(f"a run named {name} already exists at {root}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    timings: dict[str, float] = {}

    deadline = time.monotonic() + time_limit_s if time_limit_s else None

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    def cancelled() -> bool:
        return should_stop is not None and should_stop()

    def stop_requested() -> bool:
        return cancelled() or out_of_time()

    try:
        report({"stage": "preparing data"})
        t = time.perf_counter()
        prepared = prepare_data(config)
        tokenized = training_data.tokenize_examples(prepared.train, base_dir, max_length=config.max_length,
                                                    workers=config.data_workers)
        tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        data_path = run_dir / "train.pt"
        import torch

        torch.save([{"input_ids": e.input_ids, "labels": e.labels,
                     "weights": answer_weights(e.labels, config.answer_loss_weight if e.task == "qa" else 1.0)}
                    for e in tokenized], data_path)
        timings["data_s"] = round(time.perf_counter() - t, 1)
        if cancelled():
            raise RunCancelled("cancelled before training")

        report({"stage": "evaluating the base model", "questions": len(prepared.eval_qa)})
        t = time.perf_counter()
        before = evaluate_generator(load_generator(base_dir), prepared.eval_qa, prepared.eval_records,
                                    predictions_path=run_dir / "eval_before.jsonl")
        timings["evaluate_before_s"] = round(time.perf_counter() - t, 1)

        report({"stage": "training", "examples": len(tokenized)})
        t = time.perf_counter()
        done = threading.Event()
        follower = threading.Thread(target=_follow_progress, args=(run_dir, progress, stop_requested, done, poll_interval),
                                    daemon=True)
        follower.start()
        try:
            summary = run_trainer(config, run_dir=run_dir, data_path=data_path, base_dir=base_dir, pad_token_id=pad_id)
        finally:
            done.set()
            follower.join()
        timings["train_s"] = round(time.perf_counter() - t, 1)
        if cancelled():
            raise RunCancelled(f"cancelled at step {summary.get('steps')} of {summary.get('total_steps')}")
        if summary.get("stopped"):
            raise TrainingTimeLimit(f"stopped at step {summary.get('steps')} of {summary.get('total_steps')} after the "
                                    f"{time_limit_s:.0f} s time limit; resume with resume_from={run_dir}")

        report({"stage": "exporting", "formats": list(config.export_formats)})
        t = time.perf_counter()
        artifacts = build_artifacts(base_dir=base_dir, adapter_dir=summary["adapter_dir"], root=root,
                                    formats=config.export_formats, progress=lambda msg: report({"stage": msg}))
        timings["export_s"] = round(time.perf_counter() - t, 1)
        if cancelled():
            raise RunCancelled("cancelled during export")

        report({"stage": "evaluating the fine-tuned model"})
        t = time.perf_counter()
        after = evaluate_generator(load_generator(root / "torch-fp32"), prepared.eval_qa, prepared.eval_records,
                                   predictions_path=run_dir / "eval_after.jsonl")
        timings["evaluate_after_s"] = round(time.perf_counter() - t, 1)
        timings["total_s"] = round(time.perf_counter() - started, 1)

        loss_curve = _loss_curve(run_dir / PROGRESS_FILE)
        metrics = {"before": before, "after": after, "evaluation": prepared.evaluation_key, "training": summary,
                   "timings": timings, "loss_curve": loss_curve}
        version_config = {"finetune": config.as_dict(), "dataset_hash": prepared.dataset_hash,
                          "sources": prepared.sources, "train_examples": len(prepared.train),
                          "parent": parent.label, "base_dir_trained_from": str(base_dir),
                          "logs": str(run_dir / PROGRESS_FILE), "adapter_dir": summary["adapter_dir"]}
        if cancelled():
            raise RunCancelled("cancelled before registration")
        versions = register_candidates(name=name, artifacts=artifacts, parent=parent, config=version_config,
                                       metrics=metrics, evaluation_key=prepared.evaluation_key, before=before,
                                       after=after)
    except RunCancelled:
        shutil.rmtree(root, ignore_errors=True)  # a cancelled run leaves nothing behind
        raise
    except BaseException:
        # Nothing half-made stays behind: no artifacts, no registered version. A failed run keeps its
        # run directory (checkpoints, progress log) so it can be inspected or resumed.
        for child in root.iterdir() if root.exists() else ():
            if child.name != "run":
                shutil.rmtree(child, ignore_errors=True)
        raise
    finally:
        _remove_partial(root)
    result = {"name": name, "candidates": [v.label for v in versions], "candidate_ids": [v.pk for v in versions],
              "parent": parent.label, "dataset_hash": prepared.dataset_hash, "evaluation": prepared.evaluation_key,
              "before": before, "after": after, "training": {k: v for k, v in summary.items() if k != "adapter_dir"},
              "timings": timings, "run_dir": str(run_dir)}
    report({"stage": "done", "candidates": result["candidates"]})
    return result


def _remove_partial(root: Path) -> None:
    for partial in root.glob("*.partial") if root.exists() else ():
        shutil.rmtree(partial, ignore_errors=True)


def _loss_curve(path: Path, points: int = 50) -> list[list[float]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    every = max(1, len(records) // points)
    return [[r["step"], r["loss_avg"]] for r in records[::every]] + ([[records[-1]["step"], records[-1]["loss_avg"]]]
                                                                     if records and (len(records) - 1) % every else [])
