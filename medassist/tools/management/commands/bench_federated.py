"""`manage.py bench_federated`: centralised LoRA against federated LoRA (3 centres) without and with DP-SGD.

Every row trains the active generator's LoRA adapter with the same recipe on the same PubMedQA training
examples and is scored on the same held-out fold (label-likelihood accuracy on the questions, NLL of
the held-out abstracts), after merging the adapter as a registered candidate would be:

- base model: no training (the reference);
- centralised LoRA: one run over all the examples (``training.run.run_trainer``, in process);
- federated, no DP: the examples split into centres by publication year (``training.federated.centres``),
  ``rounds`` x ``local_steps`` per centre, FedAvg; the same number of optimizer steps in total as the
  centralised run (``rounds * centres * local_steps`` = its steps);
- federated, DP-SGD: the same, with per-centre DP-SGD whose noise multiplier is calibrated (Opacus,
  PRV accountant) so that the smallest centre, the one that spends most, ends at epsilon = ``--epsilon``
  at delta 1e-5 after every round.

Bytes per round: the adapter sent to every centre plus the adapters received. Wall time: training and
its data preparation (the evaluation is the same for every row and not counted).
Nothing is registered. Writes section ``federated`` of docs/benchmarks.md.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Centralised LoRA vs federated (3 centres) without and with DP: held-out NLL, accuracy, bytes, time."

    def add_arguments(self, parser):
        parser.add_argument("--examples", type=int, default=48, help="training examples (all rows)")
        parser.add_argument("--eval-examples", type=int, default=30, help="held-out questions scored")
        parser.add_argument("--centres", type=int, default=3)
        parser.add_argument("--rounds", type=int, default=4)
        parser.add_argument("--epsilon", type=float, default=1.0, help="per-centre DP target at delta 1e-5")
        parser.add_argument("--engine", choices=("ray", "inprocess"), default="ray")
        parser.add_argument("--no-write", action="store_true")

    def handle(self, *args, examples, eval_examples, centres, rounds, epsilon, engine, no_write, **options):
        import torch
        from opacus.accountants.utils import get_noise_multiplier
        from transformers import AutoTokenizer

        from medassist.tools.reports import format_table, machine_description, write_section
        from training import data as training_data
        from training.config import FinetuneConfig
        from training.evaluate import evaluate_generator, load_generator
        from training.export import base_weights, merge_adapter
        from training.federated.config import FederatedConfig
        from training.federated.run import assign_centres, train_federated
        from training.run import answer_weights, prepare_data, resolve_base, run_trainer

        config = FinetuneConfig(max_train_examples=examples, max_eval_examples=eval_examples, grad_accumulation=1,
                                epochs=1.0, checkpoint_every=0)
        base_dir, parent = base_weights(resolve_base(config))
        prepared = prepare_data(config)
        steps = math.ceil(len(prepared.train) / config.batch_size)  # the centralised run: one epoch
        local_steps = max(1, round(steps / (rounds * centres)))
        records = [r for source in config.sources for r in training_data.read_records(source)]
        fed = FederatedConfig(centres=centres, rounds=rounds, local_steps=local_steps, min_centres=centres,
                              engine=engine)
        _, partition = assign_centres(prepared.train, records, fed)
        smallest = min(row["records"] for row in partition)
        noise = get_noise_multiplier(target_epsilon=epsilon, target_delta=config.dp_delta,
                                     sample_rate=min(1.0, config.batch_size / smallest), steps=rounds * local_steps,
                                     accountant="prv")
        self.stdout.write(f"{len(prepared.train)} examples, {len(prepared.eval_qa)} held-out questions; centralised "
                          f"{steps} steps; federated {rounds} rounds x {centres} centres x {local_steps} steps; "
                          f"DP noise multiplier {noise:.2f} for epsilon {epsilon} (smallest centre {smallest})")
        work = Path(tempfile.mkdtemp(prefix="bench-federated-"))

        def score(adapter_dir: Path | None, label: str) -> dict:
            model_dir = base_dir
            if adapter_dir is not None:
                model_dir = work / f"merged-{label}"
                merge_adapter(base_dir, adapter_dir, model_dir)
            scores = evaluate_generator(load_generator(model_dir), prepared.eval_qa, prepared.eval_records)
            if adapter_dir is not None:
                shutil.rmtree(model_dir, ignore_errors=True)
            return scores

        rows = []
        try:
            base = score(None, "base")
            rows.append(["base model (no training)", base["nll"], base["accuracy"], "-", "-", "-", "-"])

            started = time.perf_counter()
            run_dir = work / "centralised"
            run_dir.mkdir()
            tokenized = training_data.tokenize_examples(prepared.train, base_dir, max_length=config.max_length)
            tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
            torch.save([{"input_ids": e.input_ids, "labels": e.labels,
                         "weights": answer_weights(e.labels, config.answer_loss_weight)} for e in tokenized],
                       run_dir / "train.pt")
            summary = run_trainer(config, run_dir=run_dir, data_path=run_dir / "train.pt", base_dir=base_dir,
                                  pad_token_id=pad_id)
            wall = time.perf_counter() - started
            central = score(Path(summary["adapter_dir"]), "centralised")
            rows.append(["centralised LoRA", central["nll"], central["accuracy"], "-", "-", "-", f"{wall:.0f}"])
            self.stdout.write(f"centralised: {central} in {wall:.0f} s")

            for label, dp in (("federated, 3 centres, no DP", False), (f"federated, 3 centres, DP-SGD (target "
                                                                       f"epsilon {epsilon:g})", True)):
                recipe = FinetuneConfig(**{**config.as_dict(), "dp": dp, "noise_multiplier": noise if dp else 1.0})
                run_dir = work / ("federated-dp" if dp else "federated")
                run_dir.mkdir()
                started = time.perf_counter()
                trained = train_federated(recipe, fed, base_dir=base_dir, run_dir=run_dir, report=lambda r: None,
                                          cancelled=lambda: False, out_of_time=lambda: False, evaluate_base=False)
                wall = time.perf_counter() - started
                scores = score(trained["adapter_dir"], "dp" if dp else "nodp")
                done = [r for r in trained["outcome"]["rounds"] if r["round"] > 0]
                per_round = sum(r["bytes_sent"] + r["bytes_received"] for r in done) / max(1, len(done))
                spent = max((c.get("epsilon") or 0.0) for c in trained["outcome"]["centres"].values()) if dp else None
                rows.append([label, scores["nll"], scores["accuracy"], len(done), f"{per_round / 1e6:.2f}",
                             f"{spent:.2f}" if dp else "inf", f"{wall:.0f}"])
                self.stdout.write(f"{label}: {scores}, epsilon {spent}, {wall:.0f} s")
        finally:
            shutil.rmtree(work, ignore_errors=True)

        table = format_table(["run", "held-out NLL", "PubMedQA accuracy (label likelihood)", "rounds",
                              "MB per round (sent + received)", "max centre epsilon (delta 1e-5)", "wall s (training)"],
                             rows)
        central_nll, fed_nll, dp_nll = rows[1][1], rows[2][1], rows[3][1]
        partition_lines = "\n".join(
            f"- {row['centre']}: {row['records']} records, years {row['years'][0]}-{row['years'][1]}"
            f"{', ' + str(row['undated']) + ' undated' if row['undated'] else ''}, labels {row['labels']}"
            if row["years"] else f"- {row['centre']}: {row['records']} records (undated)" for row in partition)
        command = (f"python manage.py bench_federated --examples {examples} --eval-examples {eval_examples} "
                   f"--centres {centres} --rounds {rounds} --epsilon {epsilon:g} --engine {engine}")
        body = (f"### Federated LoRA (Flower) against centralised LoRA\n\nCommand: `{command}`  \n"
                f"Machine: {machine_description()}  \nBase: {parent.label}; recipe r={config.lora_r}, top "
                f"{config.lora_top_layers} layers, batch {config.batch_size}, lr {config.learning_rate}; "
                f"{len(prepared.train)} PubMedQA training examples, {len(prepared.eval_qa)} held-out questions "
                f"(fold {config.eval_fold + 1} of {config.folds}). Centralised: {steps} steps; federated: {rounds} "
                f"rounds x {centres} centres x {local_steps} local steps, FedAvg, engine {engine}; DP-SGD noise "
                f"multiplier {noise:.2f} (clip {config.max_grad_norm}), calibrated so the smallest centre "
                f"ends at epsilon {epsilon:g}.\n\nCentres (publication-year bands):\n\n{partition_lines}\n\n{table}\n\n"
                f"Federated without DP vs centralised: held-out NLL {100 * (fed_nll - central_nll) / central_nll:+.2f}% "
                f"relative (target: within 2%). DP-SGD at epsilon {epsilon:g}: NLL "
                f"{100 * (dp_nll - central_nll) / central_nll:+.2f}% relative to centralised, accuracy "
                f"{rows[3][2] - rows[1][2]:+.3f} absolute.\n")
        self.stdout.write(body)
        if not no_write:
            self.stdout.write(f"wrote {write_section('federated', body)}")
