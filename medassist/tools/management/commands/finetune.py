"""`manage.py finetune`: run one LoRA fine-tuning recipe from the command line (same code as a finetune job).

    python manage.py finetune                          # the default recipe (docs/benchmarks.md)
    python manage.py finetune --set num_workers=2 --set epochs=0.5 --name my-run
    python manage.py finetune --sources pubmedqa medline --set tasks='["qa","summary"]'
    python manage.py finetune --write-benchmark        # also record the run in docs/benchmarks.md

Prints progress, then the before/after table; the result is a set of *candidate* versions (promote
one with the API or Django admin). ``--set KEY=VALUE`` takes JSON values (bare words are strings).
"""
from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError


def parse_overrides(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise CommandError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


class Command(BaseCommand):
    help = "Fine-tune the generator with LoRA (Ray Train on CPU) and register candidate versions."

    def add_arguments(self, parser):
        parser.add_argument("--sources", nargs="+", default=None, help="pubmedqa, medline, corpus or data files")
        parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                            help="override a FinetuneConfig knob (training/config.py)")
        parser.add_argument("--name", default=None, help="run and model version name (default: generated)")
        parser.add_argument("--write-benchmark", action="store_true",
                            help="write the result to docs/benchmarks.md (section finetune)")

    def handle(self, *args, sources, overrides, name, write_benchmark, **options):
        from training.config import ConfigError, FinetuneConfig
        from training.run import finetune

        values = parse_overrides(overrides)
        if sources:
            values["sources"] = sources
        try:
            config = FinetuneConfig.from_dict(values)
        except (ConfigError, TypeError) as exc:
            raise CommandError(str(exc)) from exc
        last = {"t": 0.0}

        def progress(record: dict) -> None:
            if record.get("stage") == "training" and "step" in record:
                if time.monotonic() - last["t"] < 10 and record["step"] != record["total_steps"]:
                    return
                last["t"] = time.monotonic()
                extra = f" epsilon {record['epsilon']}" if "epsilon" in record else ""
                self.stdout.write(f"  step {record['step']}/{record['total_steps']}  loss {record['loss_avg']:.4f}  "
                                  f"{record['tokens_per_s']:.0f} tokens/s  {record['elapsed_s']:.0f} s{extra}")
            else:
                self.stdout.write(f"- {record.get('stage')}")

        result = finetune(config, name=name, progress=progress)
        self.stdout.write(self.style.SUCCESS(f"registered candidates: {', '.join(result['candidates'])}"))
        table = result_table(result)
        self.stdout.write(table)
        if write_benchmark:
            from medassist.tools.reports import machine_description, write_section

            command = "python manage.py finetune " + " ".join(
                [f"--set {k}={json.dumps(v)}" for k, v in values.items() if k != "sources"] +
                ([f"--sources {' '.join(sources)}"] if sources else []) + ["--write-benchmark"])
            body = (f"### LoRA fine-tuning: one run of the recipe\n\nCommand: `{command.strip()}`  \nMachine: "
                    f"{machine_description()}  \nRecipe: `{json.dumps(config.as_dict(), sort_keys=True)}`\n\n{table}\n")
            path = write_section("finetune", body)
            self.stdout.write(f"wrote {path}")


def result_table(result: dict) -> str:
    from medassist.tools.reports import format_table

    before, after, training, timings = result["before"], result["after"], result["training"], result["timings"]
    rows = [
        ["held-out QA accuracy", f"{before.get('accuracy', float('nan')):.3f}", f"{after.get('accuracy', float('nan')):.3f}",
         f"{before.get('n', 0)} questions ({result['evaluation']}); predicted before {before.get('predicted')}, "
         f"after {after.get('predicted')}"],
        ["held-out abstract NLL", f"{before.get('nll', float('nan')):.4f}", f"{after.get('nll', float('nan')):.4f}",
         f"{before.get('nll_texts', 0)} abstracts"],
    ]
    table = format_table(["metric", "before", "after", "notes"], rows)
    details = format_table(["training", "value"], [
        ["steps", f"{training['steps']} ({training['train_examples']} examples)"],
        ["tokens/s", f"{training['tokens_per_s']:.0f} ({training['world_size']} worker(s) x "
                     f"{training['threads_per_worker']} threads, {training['precision']})"],
        ["final training loss", training.get("final_loss")],
        *([["epsilon (DP)", f"{training['epsilon']} at delta {training['delta']}"]] if "epsilon" in training else []),
        ["wall time", " / ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in timings.items())],
        ["dataset hash", result["dataset_hash"][:16]],
        ["candidates", ", ".join(result["candidates"])],
    ])
    return f"{table}\n\n{details}\n"
