"""The diagnosis ranker's evaluation harness: link-hold-out vignettes and top-k accuracy.

:func:`cases_from_hsdn_holdout` builds vignettes whose diagnosis the ranker must find without most of
the case's own links (see its docstring for why links, not whole diseases, are held out);
:func:`evaluate` / :func:`evaluate_many` rank them with rankers rebuilt without those links and report
top-1/3/10/20 and MRR@20.  ``manage.py evaluate diagnosis`` runs it (docs/evaluation.md); the ranker
is :mod:`medassist.knowledge.diagnosis`.

Public interface::

    cases_from_hsdn_holdout(hsdn_path, *, fraction=0.2, seed=0, findings_per_case=5, n_cases=None,
                            pool_size=None, kept_links=1) -> (held_out_links, cases)
    evaluate(ranker_factory, cases, *, weights=None, encoder=None) -> dict   # n, top1, ..., mrr_at_20
    evaluate_many(ranker_factory, cases, {label: rank() kwargs}, *, progress=None) -> {label: dict}
"""
from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from medassist.knowledge.diagnosis import ComponentWeights, DiagnosisRanker, TextEncoder
from medassist.knowledge.findings import normalize_concept_id
from medassist.knowledge.hsdn import HsdnLink, read_hsdn

__all__ = ["cases_from_hsdn_holdout", "evaluate", "evaluate_many", "Progress", "open_world_cases_nhamcs",
           "open_world_cases_ddxplus", "open_world_cases_hsdn", "hsdn_disease_count", "DiseaseMatcher",
           "evaluate_open", "grid_search_open"]

# Wraps an iterable of a known length (e.g. in a progress bar) and yields the same items.
Progress = Callable[[Iterable, int], Iterable]


def cases_from_hsdn_holdout(hsdn_path: Path, *, fraction: float = 0.2, seed: int = 0, findings_per_case: int = 5,
                            n_cases: int | None = None, pool_size: int | None = None, kept_links: int = 1
                            ) -> tuple[set[tuple[str, str]], list[dict]]:
    """Vignettes with held-out symptom links: a non-circular test of the ranker.

    Holding whole diseases out makes them unrankable (no row), and building cases from the very
    links the ranker holds is circular (the case *is* the disease's row).  So we hold out links:

    * a *fold* samples ``fraction`` of the eligible diseases (those with >= 2 x
      ``findings_per_case`` links, so a disease keeps a real profile after the hold-out);
    * for each sampled disease, a case is ``findings_per_case`` symptoms drawn uniformly from its
      ``pool_size`` (default 3 x ``findings_per_case``) most co-occurring symptoms -- the ones a
      typical presentation would show, not its rarest associations;
    * all of the case's (disease, symptom) links are held out of that fold's ranker **except
      one** (chosen at random): with zero overlap a cosine ranker cannot score the disease at all,
      so that case would measure vocabulary coverage rather than ranking.  The other
      ``findings_per_case - 1`` findings are unknown to the disease's row, but they still attract
      every *other* disease that has them -- the test asks whether one remaining link plus the
      disease's specificity beats all competitors carrying the rest of the evidence.  That is
      harsher than real use, where most of a patient's findings are in the knowledge;
    * folds repeat (fresh disease samples) until ``n_cases`` cases exist (default: one fold).

    Returns ``(held_out_links, cases)``: the union of held-out (disease id, symptom id) pairs, and
    JSONL-style cases ``{"findings", "age", "sex", "diagnosis", "codes", "fold", "held_out_links"}``.
    :func:`evaluate` ranks each case with a ranker built without exactly *that case's* links (so
    competitors keep all of theirs); ~15 ms a build, ~3 s for 200 cases.
    """
    links = read_hsdn(hsdn_path)
    by_disease: dict[str, list[HsdnLink]] = defaultdict(list)
    for link in links:
        by_disease[link.disease_id].append(link)
    eligible = sorted(d for d, ls in by_disease.items() if len(ls) >= 2 * findings_per_case)
    per_fold = max(1, round(fraction * len(eligible)))
    pool_size = pool_size or 3 * findings_per_case
    rng = random.Random(seed)
    target = n_cases if n_cases is not None else per_fold

    cases: list[dict] = []
    held_all: set[tuple[str, str]] = set()
    fold = 0
    while len(cases) < target:
        for disease in rng.sample(eligible, per_fold):
            if len(cases) >= target:
                break
            ranked = sorted(by_disease[disease], key=lambda lk: (-lk.cooccurs, -lk.tfidf, lk.symptom_id))
            chosen = rng.sample(ranked[:pool_size], findings_per_case)
            keep = set(rng.sample(range(findings_per_case), min(kept_links, findings_per_case)))
            held = [[disease, lk.symptom_id] for k, lk in enumerate(chosen) if k not in keep]
            held_all.update((d, s) for d, s in held)
            first = chosen[0]
            cases.append({
                "findings": [lk.symptom_name for lk in chosen],
                "age": None,
                "sex": None,
                "diagnosis": first.disease_name,
                "codes": [disease] + ([first.doid] if first.doid else []),
                "fold": fold,
                "held_out_links": held,
            })
        fold += 1
    return held_all, cases


def _is_case_disease(concept_id: str, name: str, xrefs: Sequence[str], case: Mapping) -> bool:
    """MeSH id first (strict: HSDN maps Myocardial Ischemia and Coronary Artery Disease to one DOID);
    a DOID only when the case has no MeSH code; the name only when it has no code at all."""
    codes = {normalize_concept_id(str(c)) for c in case.get("codes") or []}
    mesh = {c for c in codes if c.startswith("MESH:")}
    if mesh:
        return concept_id in mesh
    if codes:
        return bool(codes & set(xrefs))
    return name.strip().lower() == str(case.get("diagnosis", "")).strip().lower()


def evaluate(ranker_factory: Callable[[frozenset], DiagnosisRanker], cases: Sequence[Mapping], *,
             weights: ComponentWeights | None = None, encoder: TextEncoder | None = None) -> dict:
    """Top-1/3/10 (and top-20, mean reciprocal rank within the top 20) accuracy over JSONL-style cases.

    ``ranker_factory(exclude_links)`` is called once per distinct set of held-out links (a case's
    ``held_out_links``, i.e. once per case of :func:`cases_from_hsdn_holdout`; once with
    ``frozenset()`` for all cases without any) and must return a ranker built without them, e.g.
    ``lambda links: DiagnosisRanker.from_hsdn(path, exclude_links=links, icd10=False)``.
    A case is a hit at k when a diagnosis in the top k has the case's MeSH id among ``codes``
    (or the same DOID, or -- when neither is given -- the same name).  ``weights``/``encoder`` go
    to :meth:`DiagnosisRanker.rank`.
    """
    return evaluate_many(ranker_factory, cases, {"": {"weights": weights, "encoder": encoder}})[""]


def evaluate_many(ranker_factory: Callable[[frozenset], DiagnosisRanker], cases: Sequence[Mapping],
                  configurations: Mapping[str, Mapping], *, progress: Progress | None = None) -> dict[str, dict]:
    """:func:`evaluate` for several configurations (label -> ``rank()`` keyword arguments, e.g.
    ``{"weights": ComponentWeights(hpo=0.5)}``) on the same cases and the same rankers: each
    ranker is built once and ranks every case under every configuration.  ``progress(iterable,
    total)`` may wrap the loop over rankers (e.g. a progress bar); it must yield the same items."""
    depth = 20  # deep enough for the top-20 figure (Semigran et al. report top 20)
    groups: dict[frozenset, list[Mapping]] = defaultdict(list)
    for case in cases:
        groups[frozenset(tuple(x) for x in case.get("held_out_links") or ())].append(case)

    ranks: dict[str, list[int | None]] = {label: [] for label in configurations}
    latencies: dict[str, list[float]] = {label: [] for label in configurations}
    items = groups.items() if progress is None else progress(groups.items(), len(groups))
    for links, group in items:
        ranker = ranker_factory(links)
        for case in group:
            findings = ranker.resolve(case["findings"])  # once per case, whatever the configuration
            for label, kwargs in configurations.items():
                t0 = time.perf_counter()
                order = ranker.ranked_indices(findings, top_k=depth, age=case.get("age"), sex=case.get("sex"),
                                              **kwargs)
                latencies[label].append((time.perf_counter() - t0) * 1000)
                ranks[label].append(next((k for k, i in enumerate(order, start=1) if _is_case_disease(
                    ranker.disease_ids[i], ranker.disease_names[i], ranker.disease_xrefs[i], case)), None))
    return {label: _metrics(ranks[label], latencies[label], len(groups)) for label in configurations}


def _metrics(ranks: list[int | None], latencies: list[float], rankers_built: int) -> dict:
    n = len(ranks)

    def at(k: int) -> float:
        return round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) if n else 0.0

    return {
        "n": n,
        "top1": at(1),
        "top3": at(3),
        "top10": at(10),
        "top20": at(20),
        "mrr_at_20": round(sum(1.0 / r for r in ranks if r is not None) / n, 4) if n else 0.0,
        "outside_top20": sum(1 for r in ranks if r is None),
        "rank_ms_median": round(statistics.median(latencies), 3) if latencies else None,
        "rank_ms_max": round(max(latencies), 3) if latencies else None,
        "rankers_built": rankers_built,
    }


# --- open world: the Bayes ranker over many sources, on cases from sources it did not read -------------------


def open_world_cases_nhamcs(visits, *, limit: int = 2000, seed: int = 0) -> list[dict]:
    """Vignettes from NHAMCS visits (a held-out half): the visit's reasons for visit (symptom-module RFV
    codes, 1xxx) -> its first-listed diagnosis that names a disease (not a V code such as "follow-up
    examination": :func:`~medassist.knowledge.diagnosis_sources.is_pseudo_diagnosis`); age and sex as recorded."""
    import random

    from medassist.knowledge.diagnosis_sources import is_pseudo_diagnosis

    cases = []
    for v in visits:
        rfvs = [f"RFV:{r}" for r in v.rfvs if r.startswith("1")]
        diagnoses = [d for d in v.diagnoses if not is_pseudo_diagnosis(d)]
        if not rfvs or not diagnoses:
            continue
        cases.append({"findings": rfvs, "age": v.age, "sex": v.sex, "codes": [f"ICD9CM:{diagnoses[0]}"],
                      "diagnosis": ""})
    random.Random(seed).shuffle(cases)
    return cases[:limit]


def open_world_cases_ddxplus(folder: Path, vocabulary, *, per_condition: int = 5, findings_per_case: int = 4,
                             seed: int = 0) -> list[dict]:
    """DDXPlus-style cases from its 49 condition definitions: ``per_condition`` random subsets of
    ``findings_per_case`` symptom evidences, each evidence read through the finding vocabulary from its
    English question; the disease named by its ICD-10 codes and name."""
    import json
    import random

    from medassist.knowledge.diagnosis_sources import FILES, FindingIndex, ddxplus_evidence_findings, ddxplus_icd10

    conditions = json.loads((folder / FILES["ddxplus"]).read_text(encoding="utf-8"))
    evidences = json.loads((folder / FILES["ddxplus_evidences"]).read_text(encoding="utf-8"))
    index = FindingIndex({})
    index.vocabulary = vocabulary
    mapped = ddxplus_evidence_findings(evidences, index)
    rng = random.Random(seed)
    cases = []
    for name, cond in conditions.items():
        pool = sorted({f for ev in cond.get("symptoms", {}) for f in mapped.get(ev, ()) if not f.startswith("DDXPLUS:")})
        if not pool:
            continue
        codes = [f"ICD10CM:{c}" for c in ddxplus_icd10(cond)]
        for _ in range(per_condition):
            chosen = rng.sample(pool, min(findings_per_case, len(pool)))
            cases.append({"findings": chosen, "codes": codes, "diagnosis": cond.get("cond-name-eng") or name})
    return cases


def open_world_cases_hsdn(folder: Path, *, diseases: int = 300, findings_per_case: int = 5, seed: int = 0,
                          known: Callable[[Mapping], bool] | None = None) -> list[dict]:
    """HSDN top-10 hold-out: ``diseases`` random diseases, ``findings_per_case`` of their top-10 symptoms by
    name (the ranker is built without HSDN); the disease named by its MeSH id, UMLS CUI and name.

    Most HSDN diseases are in no other source, so a ranker built without HSDN cannot name them: with
    ``known`` (e.g. ``lambda case: bool(DiseaseMatcher(ranker).targets(case))``) only diseases it holds
    are sampled, and the set measures ranking rather than the hold-out emptying the universe."""
    import csv
    import random

    from medassist.knowledge.diagnosis_sources import FILES

    by_disease: dict[str, dict] = {}
    with open(folder / FILES["hsdn"], encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            entry = by_disease.setdefault(row["disease_mesh_id"], {
                "codes": [f"MESH:{row['disease_mesh_id']}"] + ([f"UMLS:{row['disease_umls']}"] if row["disease_umls"] else []),
                "diagnosis": row["disease_mesh_term"], "symptoms": []})
            entry["symptoms"].append(row["symptom_mesh_term"])
    pool = sorted(d for d in by_disease if known is None or known(by_disease[d]))
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(diseases, len(pool)))
    return [{"findings": rng.sample(by_disease[d]["symptoms"], min(findings_per_case, len(by_disease[d]["symptoms"]))),
             "codes": by_disease[d]["codes"], "diagnosis": by_disease[d]["diagnosis"]} for d in chosen]


def hsdn_disease_count(folder: Path) -> int:
    import csv

    from medassist.knowledge.diagnosis_sources import FILES

    with open(folder / FILES["hsdn"], encoding="utf-8") as fh:
        return len({row["disease_mesh_id"] for row in csv.DictReader(fh, delimiter="\t")})


class DiseaseMatcher:
    """A case's disease -> the ranker's disease rows: by code (the ranker's ids and every crosswalk xref,
    e.g. ``UMLS:C0032285``, ``ICD9CM:486``; an ICD-10-CM code also by its category) and by name or
    synonym (order-free: "pneumonia, bacterial" = "bacterial pneumonia").

    ``targets(case, exact=True)`` drops the ICD-10-CM category rule: a case coded J45 (asthma) then
    matches only a disease that carries J45 itself, not every disease with a J45.x code (exercise-induced
    or cough-variant asthma ...), and J45.909 only a disease with that code.  The category rule flatters
    the scores; the evaluation reports both."""

    def __init__(self, ranker) -> None:
        from medassist.knowledge.diagnosis_sources import name_key

        self._key = name_key
        self.by_code: dict[str, set[int]] = {}
        self.by_category: dict[str, set[int]] = {}
        self.by_name: dict[tuple, set[int]] = {}
        synonyms = getattr(ranker, "disease_synonyms", None) or [[] for _ in ranker.disease_ids]
        for i, (cid, name, xrefs, syns) in enumerate(zip(ranker.disease_ids, ranker.disease_names,
                                                          ranker.disease_xrefs, synonyms, strict=True)):
            for code in (cid, *xrefs):
                code = code.replace("UMLS_CUI:", "UMLS:")
                self.by_code.setdefault(code, set()).add(i)
                if code.startswith("ICD10CM:"):
                    self.by_category.setdefault(code.split(".")[0], set()).add(i)
            for n in (name, *syns):
                self.by_name.setdefault(self._key(n), set()).add(i)

    def targets(self, case: Mapping, *, exact: bool = False) -> set[int]:
        out: set[int] = set()
        for code in case.get("codes") or []:
            code = str(code).replace("UMLS_CUI:", "UMLS:")
            if code.upper().startswith("UMLS:"):
                code = "UMLS:" + code.split(":", 1)[1].upper()
            out |= self.by_code.get(code, set())
            if code.startswith("ICD10CM:") and not exact:
                out |= self.by_category.get(code.split(".")[0], set())
        if case.get("diagnosis"):
            out |= self.by_name.get(self._key(case["diagnosis"]), set())
        return out


def evaluate_open(ranker, cases: Sequence[Mapping], *, weights=None, top_k: int = 20, progress=None) -> dict:
    """top-1/3/10/20 of ``ranker`` on ``cases``; a case whose disease the ranker does not know counts as a
    miss and is counted in ``outside_universe``.  ``exact`` holds the same figures (and ``outside_universe``)
    when a case's disease is matched by its exact codes or name only (:meth:`DiseaseMatcher.targets`,
    ``exact=True``): no ICD-10-CM category."""
    matcher = DiseaseMatcher(ranker)
    ranks: list[int | None] = []
    exact_ranks: list[int | None] = []
    latencies: list[float] = []
    outside = outside_exact = 0
    for case in cases:
        targets = matcher.targets(case)
        exact = matcher.targets(case, exact=True)
        outside += not targets
        outside_exact += not exact
        started = time.perf_counter()
        kwargs = {"weights": weights} if weights is not None else {}
        order = ranker.ranked_indices(case["findings"], top_k=top_k, age=case.get("age"), sex=case.get("sex"), **kwargs)
        latencies.append(time.perf_counter() - started)
        ranks.append(next((r for r, i in enumerate(order, start=1) if i in targets), None))
        exact_ranks.append(next((r for r, i in enumerate(order, start=1) if i in exact), None))
        if progress is not None:
            progress.update(1)
    out = _metrics(ranks, latencies, 1)
    out["outside_universe"] = outside
    out["exact"] = {k: v for k, v in _metrics(exact_ranks, latencies, 1).items()
                    if k in ("n", "top1", "top3", "top10", "top20", "mrr_at_20", "outside_top20")}
    out["exact"]["outside_universe"] = outside_exact
    return out


def grid_search_open(sets: Sequence[tuple[object, Sequence[Mapping]]], grid: Sequence, *, depth: int = 20,
                     progress=None) -> list[list[dict]]:
    """Every weight setting of ``grid`` (``BayesWeights``) on every ``(ranker, cases)`` of ``sets``: each case is
    scored once (``ranker.parts``: the candidates and each component's values), then ranked under all
    settings at once (one matrix product). Returns ``[set][setting] -> metrics`` (n, top1/3/10/20,
    mrr_at_20, outside_universe) with the same hit rule as :func:`evaluate_open` (ties: more NHAMCS visits
    first, as the ranker orders)."""
    import numpy as np

    out = []
    for ranker, cases in sets:
        matcher = DiseaseMatcher(ranker)
        visits = np.asarray(ranker.visits, dtype=float)
        ranks = np.full((len(grid), len(cases)), depth + 1, dtype=np.int64)
        outside = 0
        names = None
        weights = None
        for n, case in enumerate(cases):
            targets = matcher.targets(case)
            outside += not targets
            candidates, values = ranker.parts(case["findings"], age=case.get("age"), sex=case.get("sex"))
            if names is None:
                names = list(values)
                weights = np.array([[w.of(c) for c in names] for w in grid])
            hit = [k for k, i in enumerate(candidates.tolist()) if i in targets]
            if progress is not None:
                progress.update(1)
            if not hit:
                continue
            parts = np.stack([values[c][candidates] for c in names])  # components x candidates
            scores = weights @ parts  # settings x candidates
            vis = visits[candidates]
            best = np.full(len(grid), depth + 1, dtype=np.int64)
            for k in hit:
                s = scores[:, k:k + 1]
                above = (scores > s) | ((scores == s) & (vis > vis[k]))
                best = np.minimum(best, 1 + above.sum(axis=1))
            ranks[:, n] = best
        per_set = []
        for g in range(len(grid)):
            r = ranks[g]
            total = max(len(cases), 1)
            metrics = {"n": len(cases), "outside_universe": outside,
                       "mrr_at_20": round(float(np.where(r <= depth, 1.0 / r, 0.0).sum() / total), 4)}
            for k in (1, 3, 10, 20):
                metrics[f"top{k}"] = round(float((r <= k).sum() / total), 4)
            per_set.append(metrics)
        out.append(per_set)
    return out
