"""`manage.py bench_training`: LoRA training throughput by layout, and parallel tokenization, on real data.

The same PubMedQA training examples and the same recipe (``FinetuneConfig`` defaults) run as:

- in-process (Ray Train local mode, ``num_workers=0``), all cores as threads: the baseline;
- Ray Train ``TorchTrainer`` with 1 worker x all cores, and with N workers x (cores / N) threads (DDP over gloo).

Each layout processes the same examples (one epoch), so tokens/s compare directly; the table gives
the training-loop rate and the wall time including Ray start-up. A second table times tokenizing
the training set in-process against a Ray ActorPool. Writes section ``training`` of docs/benchmarks.md.
Progress bars over the runs go to stderr when it is a terminal (``--no-progress``: never).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Measure LoRA training tokens/s with 1 and N Ray workers against in-process training."

    def add_arguments(self, parser):
        parser.add_argument("--examples", type=int, default=48, help="training examples per layout (one epoch)")
        parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="the N of the N-worker layout")
        parser.add_argument("--lora-top-layers", type=int, default=None, help="default: the recipe's")
        parser.add_argument("--no-write", action="store_true")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")

    def handle(self, *args, examples, workers, lora_top_layers, no_write, no_progress=False, **options):
        import torch
        from tqdm import tqdm

        from medassist.tools.reports import format_table, machine_description, write_section
        from training import data as training_data
        from training.config import FinetuneConfig
        from training.export import base_weights
        from training.run import prepare_data, resolve_base, run_trainer

        cores = os.cpu_count() or 1
        base_config = FinetuneConfig(max_train_examples=examples, epochs=1.0, grad_accumulation=1, checkpoint_every=0)
        if lora_top_layers is not None:
            base_config.lora_top_layers = lora_top_layers
        base_dir, _ = base_weights(resolve_base(base_config))
        prepared = prepare_data(base_config)

        # Tokenization: in-process vs a Ray ActorPool (start-up included: that is what a run pays).
        token_rows = []
        tokenized = None
        # disable=None: a bar only when stderr is a terminal; external_write_mode keeps lines off the bar.
        disable = True if no_progress else None
        for data_workers in tqdm((1, workers), desc="tokenization", unit="run", file=sys.stderr, disable=disable):
            started = time.perf_counter()
            out = training_data.tokenize_examples(prepared.train, base_dir, max_length=base_config.max_length,
                                                  workers=data_workers)
            seconds = time.perf_counter() - started
            tokenized = tokenized or out
            tokens = sum(len(e.input_ids) for e in out)
            token_rows.append([f"{'in-process' if data_workers == 1 else f'Ray ActorPool x {data_workers}'}",
                               len(out), f"{tokens:,}", f"{seconds:.1f}", f"{tokens / seconds:,.0f}"])
            with tqdm.external_write_mode():
                self.stdout.write(f"tokenize workers={data_workers}: {seconds:.1f} s")

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        layouts = [("in-process (local mode)", 0, cores), ("Ray Train", 1, cores)]
        if workers > 1:
            layouts.append(("Ray Train (DDP, gloo)", workers, max(1, cores // workers)))
        rows, baseline = [], None
        work = Path(tempfile.mkdtemp(prefix="bench-training-"))
        try:
            data_path = work / "train.pt"
            torch.save([{"input_ids": e.input_ids, "labels": e.labels} for e in tokenized], data_path)
            for label, num_workers, threads in tqdm(layouts, desc="training layouts", unit="layout", file=sys.stderr,
                                                    disable=disable):
                run_dir = work / f"run-{num_workers}"
                run_dir.mkdir()
                config = FinetuneConfig(**{**base_config.as_dict(), "num_workers": num_workers,
                                           "threads_per_worker": threads})
                started = time.perf_counter()
                summary = run_trainer(config, run_dir=run_dir, data_path=data_path, base_dir=base_dir, pad_token_id=pad_id)
                wall = time.perf_counter() - started
                rate = summary["tokens_per_s"]
                baseline = baseline or rate
                rows.append([label, f"{max(1, num_workers)} x {threads}", summary["steps"], f"{summary['tokens']:,}",
                             f"{rate:.0f}", f"{rate / baseline:.2f}x", f"{wall:.0f}", summary["precision"]])
                with tqdm.external_write_mode():
                    self.stdout.write(f"{label} {num_workers}x{threads}: {rate:.0f} tokens/s, {wall:.0f} s wall")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            try:
                import ray

                ray.shutdown()
            except Exception:
                pass

        train_table = format_table(["layout", "workers x threads", "optimizer steps", "tokens", "tokens/s (loop)",
                                    "vs in-process", "wall s (incl. start-up)", "precision"], rows)
        token_table = format_table(["tokenization", "examples", "tokens", "seconds (incl. start-up)", "tokens/s"],
                                   token_rows)
        command = f"python manage.py bench_training --examples {examples} --workers {workers}" + (
            f" --lora-top-layers {lora_top_layers}" if lora_top_layers is not None else "")
        body = (f"### LoRA training throughput by layout\n\nCommand: `{command}`  \nMachine: {machine_description()}  \n"
                f"Recipe: r={base_config.lora_r} on {', '.join(base_config.target_modules)}, top "
                f"{base_config.lora_top_layers or 'all'} layers, batch {base_config.batch_size}, max length "
                f"{base_config.max_length}; {len(tokenized)} PubMedQA QA examples, one epoch per layout.\n\n"
                f"{train_table}\n\n{token_table}\n")
        self.stdout.write(body)
        if not no_write:
            self.stdout.write(f"wrote {write_section('training', body)}")
