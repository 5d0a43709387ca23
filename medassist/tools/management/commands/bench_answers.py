"""`manage.py bench_answers`: how well yes/no/maybe answers hold up, generator vs evidence vs pooled.

Every figure is on held-out PubMedQA questions (PQA-L, shared data), with the fine-tuning folds
(``training.data.pubmedqa_folds``): the answer-evidence model is trained on four folds and scored on
the fifth. The generator's label probabilities come either from scoring a registered generator on the
questions (the fine-tuning evaluation's prompts: the whole abstract, conclusion included), or from
``--predictions`` files, the ``eval_before.jsonl`` / ``eval_after.jsonl`` a fine-tuning run writes for
its held-out fold (so a fine-tuned model is only ever scored on questions it was not trained on).

Rows: the generator alone, the evidence alone (conclusion as PubMedQA gives it, and as found in the
unlabelled abstract text), and the two pooled at each generator weight (``--weights``; the served
answer uses ``MEDASSIST_QA_GENERATOR_WEIGHT``). Writes section ``bench_answers`` of docs/benchmarks.md.

    python manage.py bench_answers --generator active --limit 100
    python manage.py bench_answers --predictions var/models/finetuned/*/run/eval_after.jsonl
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from medassist.tools.reports import format_table, machine_description, write_section

LABELS = ("yes", "no", "maybe")


class Command(BaseCommand):
    help = "Held-out PubMedQA accuracy of yes/no/maybe answers: generator alone, evidence alone, pooled."

    def add_arguments(self, parser):
        parser.add_argument("--generator", default=None,
                            help="score this generator version (id, or 'active') on the questions")
        parser.add_argument("--predictions", nargs="+", type=Path, default=[],
                            help="held-out generator predictions (JSON lines with id and probabilities), "
                                 "e.g. a fine-tuning run's run/eval_after.jsonl")
        parser.add_argument("--limit", type=int, default=0, help="score only the first N questions (0 = all)")
        parser.add_argument("--weights", default="0.25,0.5,1,2", help="generator weights to pool with")
        parser.add_argument("--label", default="", help="how the table names the generator probabilities")
        parser.add_argument("--section", default="bench_answers",
                            help="docs/benchmarks.md section to write (one per generator compared)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
        parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")

    def handle(self, *args, generator, predictions, limit, weights, label, section, no_write, no_progress=False,
               **options):
        self.no_progress = no_progress
        from medassist.kinds.literature import pool_label_probabilities
        from medassist.knowledge.summarize import conclusion_sentences
        from training.data import pubmedqa_folds, read_records
        from training.prepare import pubmedqa_path
        from workers.runtime import answer_evidence

        label_arg = label
        if not generator and not predictions:
            raise CommandError("give --generator (to score one) or --predictions (held-out prediction files)")
        try:
            weight_list = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError as exc:
            raise CommandError(f"--weights: {exc}") from exc
        source = pubmedqa_path()
        if not source.is_file():
            raise CommandError(f"PubMedQA not found at {source} (set MEDASSIST_SHARED_DATA)")
        records = [r for r in read_records(source) if r.label and r.conclusion]
        by_id = {r.id: r for r in records}
        raw = json.loads(source.read_text())

        # 1. Evidence, cross-validated: each question read by a model that never saw it.
        evidence, evidence_flat = {}, {}
        for fold in self._progress(pubmedqa_folds(records), desc="evidence folds", unit="fold"):
            held = set(fold)
            train = [r for r in records if r.id not in held]
            model = answer_evidence.AnswerEvidenceModel(
                answer_evidence.train([r.conclusion for r in train], [r.label for r in train]))
            for record_id in fold:
                evidence[record_id] = model.predict(by_id[record_id].conclusion)["probabilities"]
                # As a user submits it: one unlabelled text, the conclusion found by position or cue.
                text = " ".join(raw[record_id]["CONTEXTS"]) + " " + by_id[record_id].conclusion
                spans, _ = conclusion_sentences(text)
                evidence_flat[record_id] = model.predict(" ".join(text[s:e] for s, e in spans))["probabilities"]

        # 2. The generator's label probabilities.
        generated: dict[str, dict] = {}
        for path in predictions:
            for line in path.read_text().splitlines():
                row = json.loads(line)
                generated[str(row["id"])] = row["probabilities"]
        seconds = None
        if generator:
            version, scores, seconds = self._score(generator, records[:limit] if limit else records)
            generated.update(scores)
            label = label or version.label
        label = label or ", ".join(str(p) for p in predictions)
        ids = [r.id for r in records if r.id in generated]
        if not ids:
            raise CommandError("no question has generator probabilities")

        def accuracy(probabilities: dict[str, dict]) -> tuple[float, Counter]:
            predicted = Counter()
            correct = 0
            for record_id in ids:
                p = probabilities[record_id]
                answer = max(LABELS, key=lambda k: p[k])
                predicted[answer] += 1
                correct += answer == by_id[record_id].label
            return correct / len(ids), predicted

        majority = max(Counter(by_id[i].label for i in ids).values()) / len(ids)
        rows = []

        def add(name: str, probabilities: dict[str, dict]) -> None:
            acc, predicted = accuracy(probabilities)
            rows.append([name, f"{acc:.1%}", f"{(acc - majority) * 100:+.1f} pts",
                         " / ".join(str(predicted[k]) for k in LABELS)])

        add("generator alone (label likelihood)", generated)
        add("evidence alone (the conclusion as PubMedQA gives it)", evidence)
        add("evidence alone (conclusion found in the unlabelled abstract)", evidence_flat)
        served = float(settings.MEDASSIST_QA_GENERATOR_WEIGHT)
        for w in weight_list:
            mark = " (served)" if w == served else ""
            add(f"pooled, generator weight {w:g}{mark}",
                {i: pool_label_probabilities(generated[i], evidence_flat[i], w) for i in ids})
        table = format_table(["answers from", "accuracy", "vs majority class", "predicted yes / no / maybe"], rows)
        command = "python manage.py bench_answers " + " ".join(
            ([f"--generator {generator}"] if generator else []) + ([f"--limit {limit}"] if limit else [])
            + (["--predictions " + " ".join(str(p) for p in predictions)] if predictions else [])
            + ([f"--label '{label_arg}'"] if label_arg else [])
            + ([f"--section {section}"] if section != "bench_answers" else []))
        body = (f"### Yes/no/maybe answers: {label}, evidence, pooled (held-out PubMedQA)\n\n"
                f"Command: `{command}`  \nMachine: {machine_description()}  \n"
                f"Generator probabilities: {label} ({len(ids)} questions"
                f"{f', {seconds:.2f} s per question' if seconds else ''}); evidence: trained on the other 4 "
                f"folds for each question; majority class {majority:.1%}. Pooling: a weighted product of the "
                f"two readings' probabilities (evidence weight 1), the evidence read from the conclusion "
                f"found in the unlabelled text, as served.\n\n{table}\n")
        self.stdout.write(body)
        if not no_write:
            self.stdout.write(f"written to {write_section(section, body)}")

    def _progress(self, iterable, **kwargs):
        """A bar on stderr; disable=None: only when stderr is a terminal."""
        from tqdm import tqdm

        return tqdm(iterable, file=sys.stderr, disable=True if getattr(self, "no_progress", False) else None,
                    **kwargs)

    def _score(self, generator: str, records) -> tuple:
        from medassist.knowledge.prompts import ANSWER_SURFACE
        from medassist.registry.models import ModelVersion
        from training.data import build_examples
        from workers.runtime.store import load_engine

        try:
            version = (ModelVersion.objects.get(role="generator", status="active") if generator == "active"
                       else ModelVersion.objects.get(role="generator", pk=int(generator)))
        except (ModelVersion.DoesNotExist, ValueError) as exc:
            raise CommandError(f"--generator {generator}: no such generator version") from exc
        engine = load_engine(version, threads=settings.MEDASSIST_TORCH_THREADS)
        examples = [e for e in build_examples(records, tasks=["qa"]) if e.task == "qa"]
        started = time.perf_counter()
        scores = {}
        for start in self._progress(range(0, len(examples), 16), desc="generator", unit="batch"):
            chunk = examples[start:start + 16]
            probabilities = engine.score_options([engine.chat_prompt(e.turns[0][0]) for e in chunk],
                                                 [ANSWER_SURFACE[k] for k in LABELS])
            for example, p in zip(chunk, probabilities, strict=True):
                scores[example.group] = {k: p[ANSWER_SURFACE[k]] for k in LABELS}
        return version, scores, (time.perf_counter() - started) / max(len(examples), 1)
