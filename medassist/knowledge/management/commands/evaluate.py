"""`manage.py evaluate {qa,diagnosis,hypothesis} [--data PATH]`: measured quality next to its anchors.

- ``diagnosis``: top-1/3/10/20 on cases in the documented JSONL format
  (``{"findings": [...], "age": .., "sex": .., "diagnosis": "name", "codes": ["MESH:D..."]}``); by
  default vignettes built from held-out HSDN symptom links (see ``cases_from_hsdn_holdout``).
  Anchor: online symptom checkers put the right diagnosis first in 34% of vignettes and in the
  top 20 in 58% (Semigran et al., BMJ 2015).
- ``hypothesis``: edge hold-out ROC AUC on the MEDLINE disease co-occurrence network, time-sliced
  AUC on the PubMedQA MeSH corpus, and ranks of the dated gold pairs of medline-discoveries that
  the graph covers, per measure. Anchor: AGATHA reports ROC AUC up to 0.97 (time-sliced).
- ``qa``: PubMedQA accuracy of the active generator (label likelihood) over PubMedQA-format JSON,
  reported per fold of a 5-fold split of the questions (the folds a fine-tuned model must be
  evaluated on: never train on a fold you report). Anchors: majority class 55.2%, BioGPT 78.2%,
  single human 78.0%.

Each writes its section of docs/evaluation.md with the command that produced it.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from medassist.common.benchmarks import format_table, machine_description

EVALUATION_MD = Path(settings.BASE_DIR) / "docs" / "evaluation.md"


def write_section(name: str, body: str) -> Path:
    import re

    text = EVALUATION_MD.read_text() if EVALUATION_MD.exists() else (
        "# Evaluation\n\nEach section is written by `python manage.py evaluate ...` and names its command, "
        "data and anchors.\n")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"<!-- {name}:start -->\n{body.rstrip()}\n\n_Measured {stamp}._\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    EVALUATION_MD.parent.mkdir(parents=True, exist_ok=True)
    EVALUATION_MD.write_text(text)
    return EVALUATION_MD


def shared(*parts: str) -> Path:
    path = Path(settings.MEDASSIST_SHARED_DATA).joinpath(*parts)
    if not path.exists():
        raise CommandError(f"data not found at {path} (set MEDASSIST_SHARED_DATA or pass --data)")
    return path


class Command(BaseCommand):
    help = "Evaluate diagnosis ranking, hypothesis generation or question answering against real data."

    def add_arguments(self, parser):
        parser.add_argument("task", choices=["qa", "diagnosis", "hypothesis"])
        parser.add_argument("--data", type=Path, default=None, help="a file in the task's documented format")
        parser.add_argument("--cases", type=int, default=200, help="diagnosis: held-out vignettes to build")
        parser.add_argument("--limit", type=int, default=None, help="qa: only the first N questions")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-write", action="store_true")

    def handle(self, *args, task, data, cases, limit, seed, no_write, **options):
        started = time.perf_counter()
        body = {"diagnosis": self._diagnosis, "hypothesis": self._hypothesis, "qa": self._qa}[task](
            data=data, cases=cases, limit=limit, seed=seed)
        command = "python manage.py evaluate " + task + (f" --data {data}" if data else "")
        body = body.replace("{command}", command) + (
            f"\n\nMachine: {machine_description()}; {time.perf_counter() - started:.0f} s.")
        self.stdout.write(body)
        if not no_write:
            self.stdout.write(f"\nwritten to {write_section(task, body)}")

    # --- diagnosis -----------------------------------------------------------------------------------------------

    def _diagnosis(self, *, data, cases, seed, **_):
        from medassist.knowledge.diagnosis import DiagnosisRanker, cases_from_hsdn_holdout, evaluate

        hsdn = shared("hsdn-symptoms-disease", "symptoms-DO.tsv")
        if data:
            case_list = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
            source = f"{len(case_list)} cases from {data}"
        else:
            _, case_list = cases_from_hsdn_holdout(hsdn, seed=seed, n_cases=cases)
            source = (f"{len(case_list)} vignettes of 5 findings drawn from a disease's 15 most frequent HSDN symptoms; "
                      "4 of the 5 (disease, symptom) links are removed from that case's ranker (1 kept), so the case "
                      "is never read back from the ranker's own row")

        def factory(links):
            return DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, icd10=False)

        result = evaluate(factory, case_list)
        table = format_table(["metric", "medassist", "anchor"], [
            ["top-1", f"{result['top1']:.1%}", "34% (symptom checkers, Semigran et al. BMJ 2015)"],
            ["top-3", f"{result['top3']:.1%}", "-"],
            ["top-10", f"{result['top10']:.1%}", "-"],
            ["top-20", f"{result['top20']:.1%}", "58% (symptom checkers)"],
            ["MRR@20", f"{result['mrr_at_20']:.3f}", "-"],
            ["rank() latency, median / max", f"{result['rank_ms_median']} / {result['rank_ms_max']} ms", "-"],
        ])
        return (f"## Diagnosis (`{{command}}`)\n\n{source}. Ranker: HSDN TF-IDF cosine over "
                f"{result['rankers_built']} rebuilt rankers. Caveat: 119 candidate diseases here vs an open list for "
                f"the symptom checkers, so the anchor is orientation, not a like-for-like comparison.\n\n{table}")

    # --- hypothesis ----------------------------------------------------------------------------------------------

    def _hypothesis(self, *, data, seed, **_):
        from medassist.knowledge.discovery import (
            MEASURES,
            CooccurrenceGraph,
            edge_holdout_auc,
            gold_ranks,
            load_annotated_relations,
            load_medline_disease_edges,
            load_mesh_terms,
            load_pubmedqa_mesh_edges,
            time_sliced_auc,
        )

        medline_edges, _ = load_medline_disease_edges(shared("medline-cooccurrence", "disease-disease-cooccurrence.tsv"))
        name_to_id = load_mesh_terms(shared("mesh-2015", "terms.tsv"))  # {preferred name: descriptor id}
        corpus = load_pubmedqa_mesh_edges(data or shared("pubmedqa", "pqal_train.json"), name_to_id=name_to_id)
        cutoff = 2010
        gold = load_annotated_relations(shared("medline-discoveries", "annotated-relations.tsv"))
        gold_pairs = [(g["c1"], g["c2"]) for g in gold]
        corpus_graph = CooccurrenceGraph.from_edges(corpus)
        rows = []
        for measure in MEASURES:
            holdout = edge_holdout_auc(medline_edges, measure=measure, seed=seed)
            sliced = time_sliced_auc(corpus, cutoff_year=cutoff, measure=measure, seed=seed)
            ranks = [r for r in gold_ranks(corpus_graph, gold_pairs, measure=measure) if r.get("rank")]
            rows.append([measure, f"{holdout['auc']:.3f}", f"{sliced['auc']:.3f}",
                         f"{len(ranks)}/{len(gold_pairs)}",
                         f"{statistics.median(r['percentile'] for r in ranks):.0f}" if ranks else "-"])
        graph = CooccurrenceGraph.from_edges(medline_edges)
        start = "DOID:10652"
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            graph.discover(start, top_k=10)
            timings.append((time.perf_counter() - t0) * 1000)
        table = format_table(["measure", "edge hold-out AUC (MEDLINE disease graph)",
                              f"time-sliced AUC (PubMedQA MeSH corpus, cutoff {cutoff})",
                              "gold pairs covered", "median percentile of covered gold pairs"], rows)
        return (f"## Hypothesis generation (`{{command}}`)\n\nEdge hold-out: 10% of the {graph.n_edges:,} edges of "
                f"the MEDLINE disease co-occurrence graph ({len(graph.ids)} diseases; the file lists each pair twice) "
                f"hidden, scored against as many random non-edges. Time-sliced: graph from PubMedQA abstracts up to "
                f"{cutoff} (MeSH headings), positives = pairs first co-occurring later. Gold: the 400 dated pairs of "
                f"medline-discoveries, ranked where the small PubMedQA graph holds both concepts unlinked. Anchor: "
                f"AGATHA reports time-sliced ROC AUC up to 0.97 on all of MEDLINE (a far larger graph).\n\n{table}\n\n"
                f"One `discover()` on the MEDLINE disease graph: median {statistics.median(timings):.1f} ms.")

    # --- qa ------------------------------------------------------------------------------------------------------

    def _qa(self, *, data, limit, seed, **_):
        from medassist.registry.management.commands.bench_models import LABELS, qa_prompt
        from medassist.registry.models import ModelVersion
        from workers.runtime.store import load_engine

        path = data or shared("pubmedqa", "pqal_train.json")
        records = [{"id": k, "question": r["QUESTION"], "context": " ".join(r["CONTEXTS"]), "label": r["final_decision"]}
                   for k, r in sorted(json.loads(path.read_text()).items())][:limit]
        version = ModelVersion.objects.filter(role="generator", status="active").first()
        if version is None:
            raise CommandError("no active generator: run `python manage.py models_prepare`")
        generator = load_engine(version)
        scores = generator.score_options([qa_prompt(generator, r) for r in records], list(LABELS))
        correct = [LABELS[max(s, key=s.get)] == r["label"] for s, r in zip(scores, records, strict=True)]
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        folds = [[correct[i] for i in order[k::5]] for k in range(5)]
        accuracies = [sum(f) / len(f) for f in folds if f]
        majority = max({r["label"] for r in records}, key=lambda x: sum(r["label"] == x for r in records))
        majority_share = sum(r["label"] == majority for r in records) / len(records)
        table = format_table(["", "accuracy"], [
            [f"{version.label}, 5 folds (mean ± sd)", f"{statistics.mean(accuracies):.1%} ± "
                                                      f"{statistics.pstdev(accuracies):.1%}"],
            *[[f"fold {i + 1}", f"{a:.1%}"] for i, a in enumerate(accuracies)],
            [f"majority class here ('{majority}')", f"{majority_share:.1%}"],
            ["anchors: majority (test set) / BioGPT / single human", "55.2% / 78.2% / 78.0%"],
        ])
        return (f"## PubMedQA (`{{command}}`)\n\n{len(records)} expert-labelled questions ({path.name}); the answer is "
                f"the most likely of Yes/No/Maybe after the abstract and question (label likelihood, no parsing). "
                f"The model is used as-is (no fine-tuning yet), so every fold is held out.\n\n{table}")
