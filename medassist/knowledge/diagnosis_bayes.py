"""A differential diagnosis over thousands of diseases: naive Bayes over many association sources.

Built from an :class:`~medassist.knowledge.diagnosis_sources.AssociationSet` (the ``DiagnosisAssociation``
tables once ``knowledge_import associations`` has run, or the shared files directly).  No Django.

Model (every number in a result can be re-derived from this)
    For each source s and each disease d that s covers, P_s(f | d):

    * ``nhamcs`` (real ED visits): ``(1 - lambda) * (n(d, f) + alpha * p(f)) / (n(d) + alpha) + lambda * p(f)``:
      n(d, f) visits with diagnosis d and reason f, n(d) visits with d, p(f) the share of all visits giving
      reason f (the background), alpha = ``ALPHA`` (additive smoothing toward the background) and lambda =
      ``LAMBDA`` (a share of the background mixed in, Jelinek-Mercer).  Without the mixture a reason never
      coded for a disease with many visits cost it up to log(alpha / (n(d) + alpha)) (-5.9 nats for
      pneumonia's 700 visits) while a disease seen in 3 visits lost under 1 nat, so sparsely seen
      diagnoses won on findings the ED coding simply words differently; with it one unlinked finding costs
      at most log(lambda).  LAMBDA was chosen on the development cases of ``evaluate diagnosis
      --open-world`` (seeds 1 and 2; 0, 0.1, 0.25, 0.4 tried), never on the reported seed;
    * presence-only sources (``hsdn`` top-10, ``dbpedia``, ``do``, ``ddxplus``, imported ``custom``
      files): ``P_IN * weight`` when the source links d and f, ``P_OUT`` when it does not; the
      background P_s(f) is the mean over the diseases the source covers (a Bernoulli naive Bayes: a link
      to a rare finding is worth more than a link to fever).

    Each source's evidence for d is a log likelihood ratio against its background, summed over the
    findings the case states (unstated findings, and those in a family, past or hypothetical context --
    ``Finding.context`` -- are not evidence either way)::

        present f:  log(P_s(f|d) / P_s(f))          denied f:  log((1 - P_s(f|d)) / (1 - P_s(f)))

    A source that does not cover d, or never names f, contributes 0 for it (no penalty for missing
    knowledge).  The prior is NHAMCS' visit frequency, ``log((n(d) + 0.5) / (N + 0.5 D))``, and given age
    and sex ``log P(d | age band, sex)`` smoothed toward it with ``BETA`` pseudo-visits.  Then::

        score(d) = w_prior * prior(d) + sum_s w_s * llr_s(d)

    with the weights of :class:`BayesWeights` (``evaluate diagnosis`` reports how they were chosen);
    each term is a ``score_components`` entry (value, weight, contribution; contributions sum to the
    score).  ``probability`` is the softmax of the scores over the listed candidates.  A disease is a
    candidate only with a present finding some source links to it.

Tried on the development cases and not adopted (issue 17; paired bootstrap over the 2,000 NHAMCS and 490
DDXPlus development cases of ``evaluate diagnosis --open-world``, its weight grid also re-run for each)
    * a hierarchical back-off of the NHAMCS estimate: P(f | d) smoothed toward the mixture, by d's visits
      per ICD-9-CM code, of its 3-character categories' P(f | c) (itself smoothed toward p(f); d's own
      visits left out of its category, alpha 5, category alpha 2; also without the leave-out and alpha
      2-20) instead of straight toward p(f).  At fixed weights the development objective (mean MRR@20)
      moved +0.001 (95% CI -0.001 to +0.004; NHAMCS +0.002, DDXPlus +0.001): diagnoses seen in <= 5
      visits reached the top 10 more often (4% -> 9% of their cases), but the sparse diagnoses that
      borrowed their category's reasons also outranked common ones about as often;
    * DIAG2/DIAG3 visits counted at half weight (the reasons for visit are mostly the first-listed
      diagnosis'): NHAMCS MRR@20 +0.006 (95% CI +0.002 to +0.010), DDXPlus -0.003, objective +0.001 (CI
      -0.003 to +0.005); with the grid re-run +0.003 (CI -0.004 to +0.011), most of it a shift of weight
      from HSDN that costs the DDXPlus cases.
    Both are within the 0.002 the grid search treats as a tie, so the simpler model stays.
    * a MeSH finding no other source than HSDN names counting also as its nearest MeSH-tree ancestor
      that another source names (145 findings; e.g. Hyperalgesia -> Somatosensory Disorders, its tree
      parent, not Pain): on HSDN hold-out development cases (seeds 1 and 2, ranker without HSDN) top-20
      6.7% -> 8.0% but MRR@20 0.021 -> 0.020 (all weights 1: 0.030 -> 0.029).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from .diagnosis import Diagnosis, _normalize_sex, write_weights_document
from .diagnosis_sources import AssociationSet, age_band
from .findings import Abbreviations, Finding, SymptomVocabulary, normalize_concept_id, resolve_findings

__all__ = ["BayesWeights", "BayesRanker", "default_bayes_weights", "write_bayes_weights", "BAYES_WEIGHTS_FILE", "ALPHA", "LAMBDA",
           "BETA", "P_IN", "P_OUT"]

ALPHA = 2.0  # NHAMCS smoothing, in visits
LAMBDA = 0.25  # NHAMCS: share of the background p(f) mixed into P(f | d)
BETA = 20.0  # age/sex prior smoothing, in visits
P_IN = 0.5  # P(finding | disease) of a presence-only link
P_OUT = 0.02  # ... and without one (the source covers the disease but does not name the finding)
N_UNMATCHED = 5
SOURCE_LABELS = {"nhamcs": "NHAMCS 2010 ED visits", "hsdn": "HSDN top-10 symptoms", "dbpedia": "DBpedia symptoms",
                 "do": "Disease Ontology has_symptom", "ddxplus": "DDXPlus", "prior": "NHAMCS visit frequency"}


@dataclass(frozen=True)
class BayesWeights:
    prior: float = 1.0
    nhamcs: float = 1.0
    hsdn: float = 1.0
    dbpedia: float = 1.0
    do: float = 1.0
    ddxplus: float = 1.0
    custom: float = 1.0  # every imported source not named above

    def of(self, source: str) -> float:
        return float(getattr(self, source, self.custom))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# The weights `manage.py evaluate diagnosis` chose on development cases (knowledge/data/diagnosis_bayes_weights.json).
BAYES_WEIGHTS_FILE = Path(__file__).resolve().parent / "data" / "diagnosis_bayes_weights.json"


def default_bayes_weights(path: Path | str | None = None) -> BayesWeights:
    path = Path(path or BAYES_WEIGHTS_FILE)
    if not path.is_file():
        return BayesWeights()
    data = json.loads(path.read_text(encoding="utf-8"))
    return BayesWeights(**{k: float(v) for k, v in data["weights"].items() if k in BayesWeights().as_dict()})


def write_bayes_weights(weights: BayesWeights | Mapping[str, float], *, chosen_by: str, method: str,
                        path: Path | str | None = None) -> Path:
    """Write ``weights`` to ``path`` (default ``BAYES_WEIGHTS_FILE``) with what chose them (``chosen_by``: the
    command; ``method``: how) and when; :func:`default_bayes_weights` reads it back."""
    checked = weights if isinstance(weights, BayesWeights) else BayesWeights(
        **{k: float(v) for k, v in weights.items() if k in BayesWeights().as_dict()})
    return write_weights_document(Path(path or BAYES_WEIGHTS_FILE), checked.as_dict(), chosen_by=chosen_by,
                                  method=method)


class _Source:
    """One source's log likelihood ratios: link deltas (sparse, diseases x findings) on top of a
    per-disease/per-finding base for findings it does not link."""

    def __init__(self, name: str, n_d: int, n_f: int) -> None:
        self.name = name
        self.covers = np.zeros(n_d, dtype=bool)
        self.knows = np.zeros(n_f, dtype=bool)
        self.base_pos_d = np.zeros(n_d)  # nhamcs: log(alpha / (n(d) + alpha)) (same for every finding)
        self.base_pos_f = np.zeros(n_f)  # presence-only: log(P_OUT / P_s(f))
        self.base_neg_f = np.zeros(n_f)
        self.pos: sparse.csc_matrix | None = None  # link value - base, present
        self.neg: sparse.csc_matrix | None = None
        self.prob: sparse.csr_matrix | None = None  # P_s(f|d) of the links, for explanations

    def column(self, matrix: sparse.csc_matrix, j: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = matrix.indptr[j], matrix.indptr[j + 1]
        return matrix.indices[start:end], matrix.data[start:end]


class BayesRanker:
    kind = "bayes"

    def __init__(self, associations: AssociationSet, *, abbreviations: Abbreviations | None = None,
                 weights: BayesWeights | None = None, version: str | None = None) -> None:
        self.weights = weights or BayesWeights()
        self.version = version
        self.abbreviations = abbreviations
        self.vocabulary: SymptomVocabulary = associations.vocabulary or SymptomVocabulary.from_names(
            associations.finding_names)
        diseases = associations.diseases
        self.disease_ids = list(diseases)
        self._disease_index = {d: i for i, d in enumerate(self.disease_ids)}
        self.disease_names = [diseases[d].name for d in self.disease_ids]
        self.disease_xrefs = [sorted(diseases[d].xrefs) for d in self.disease_ids]
        self.disease_synonyms = [sorted(diseases[d].synonyms - {diseases[d].name}) for d in self.disease_ids]
        self.finding_ids = list(associations.finding_names)
        self._finding_index = {f: j for j, f in enumerate(self.finding_ids)}
        self.finding_names = [associations.finding_names[f] for f in self.finding_ids]
        self._implies = {self._finding_index[f]: [self._finding_index[t] for t in ts if t in self._finding_index]
                         for f, ts in associations.implies.items() if f in self._finding_index}
        self._code_to_finding = {code: f for f, codes in associations.finding_codes.items() for code in codes}
        n_d, n_f = len(self.disease_ids), len(self.finding_ids)

        by_source: dict[str, list] = defaultdict(list)
        for a in associations.associations:
            i, j = self._disease_index.get(a.disease), self._finding_index.get(a.finding)
            if i is not None and j is not None:
                by_source[a.source].append((i, j, a.weight, a.count))
        self.sources: dict[str, _Source] = {}
        visits = associations.visits
        total = max(associations.total_visits, 1)
        for name, rows in sorted(by_source.items()):
            src = _Source(name, n_d, n_f)
            ii = np.array([r[0] for r in rows], dtype=np.int64)
            jj = np.array([r[1] for r in rows], dtype=np.int64)
            src.covers[ii] = True
            src.knows[jj] = True
            if name == "nhamcs":
                n_dis = np.array([visits.get(d, {}).get("n", 0) for d in self.disease_ids], dtype=float)
                n_pair = np.array([r[3] for r in rows], dtype=float)
                n_f_tot = np.bincount(jj, weights=n_pair, minlength=n_f)  # visits x diagnoses giving f
                p_f = np.clip(n_f_tot / total, 1e-6, 0.999)
                p_link = (1 - LAMBDA) * (n_pair + ALPHA * p_f[jj]) / (n_dis[ii] + ALPHA) + LAMBDA * p_f[jj]
                src.covers = n_dis > 0
                src.base_pos_d = np.where(n_dis > 0, np.log((1 - LAMBDA) * ALPHA / (n_dis + ALPHA) + LAMBDA), 0.0)
                pos_val = np.log(p_link / p_f[jj]) - src.base_pos_d[ii]
                # denied: log((1 - P(f|d)) / (1 - p(f))); the non-link value ~ 0 (P(f|d) < p(f) there)
                neg_val = np.log(np.clip(1 - p_link, 1e-6, 1) / (1 - p_f[jj]))
            else:
                n_cov = max(int(src.covers.sum()), 1)
                p_link = np.clip(P_IN * np.array([r[2] for r in rows], dtype=float), 1e-4, 0.99)
                df_mass = np.bincount(jj, weights=p_link, minlength=n_f)
                df = np.bincount(jj, minlength=n_f)
                p_bg = (df_mass + (n_cov - df) * P_OUT) / n_cov
                p_bg = np.clip(p_bg, 1e-6, 0.999)
                src.base_pos_f = np.where(src.knows, np.log(P_OUT / p_bg), 0.0)
                src.base_neg_f = np.where(src.knows, np.log((1 - P_OUT) / (1 - p_bg)), 0.0)
                pos_val = np.log(p_link / p_bg[jj]) - src.base_pos_f[jj]
                neg_val = np.log((1 - p_link) / (1 - p_bg[jj])) - src.base_neg_f[jj]
            src.pos = sparse.csc_matrix((pos_val, (ii, jj)), shape=(n_d, n_f))
            src.neg = sparse.csc_matrix((neg_val, (ii, jj)), shape=(n_d, n_f))
            src.prob = sparse.csr_matrix((p_link, (ii, jj)), shape=(n_d, n_f))
            self.sources[name] = src
        self._links_any = sum((s.prob != 0).astype(np.float64) for s in self.sources.values()).tocsc() \
            if self.sources else sparse.csc_matrix((n_d, n_f))
        # typical findings per disease (for "missing"): the strongest P over sources
        best = None
        for s in self.sources.values():
            best = s.prob if best is None else best.maximum(s.prob)
        self._typical = best.tocsr() if best is not None else sparse.csr_matrix((n_d, n_f))

        # priors
        n_dis = np.array([visits.get(d, {}).get("n", 0) for d in self.disease_ids], dtype=float)
        self._visits = n_dis
        self.visits = n_dis  # NHAMCS visits per disease (the ranking's tie-break)
        self._prior = np.log((n_dis + 0.5) / (total + 0.5 * n_d))
        self._strata: dict[str, np.ndarray] = {}
        strata_totals: dict[str, float] = defaultdict(float)
        for entry in visits.values():
            for stratum, n in (entry.get("strata") or {}).items():
                strata_totals[stratum] += n
        for stratum, n_st in strata_totals.items():
            counts = np.array([visits.get(d, {}).get("strata", {}).get(stratum, 0) for d in self.disease_ids],
                              dtype=float)
            base = np.exp(self._prior)
            self._strata[stratum] = np.log((counts + BETA * base) / (n_st + BETA))
        self.stats = {"diseases": n_d, "findings": n_f, "links": {k: int(v.prob.nnz) for k, v in self.sources.items()},
                      "nhamcs_visits": int(associations.total_visits)}

    # --- inputs ---
    def resolve(self, findings: Sequence[Finding | str | Mapping]) -> list[Finding]:
        mapped = []
        for item in findings:
            if isinstance(item, str) and normalize_concept_id(item) in self._code_to_finding:
                item = {"concept_id": self._code_to_finding[normalize_concept_id(item)], "text": item}
            elif isinstance(item, Mapping) and item.get("concept_id"):
                cid = normalize_concept_id(str(item["concept_id"]))
                if cid not in self._finding_index and cid in self._code_to_finding:
                    item = {**item, "concept_id": self._code_to_finding[cid]}
            mapped.append(item)
        return resolve_findings(mapped, self.vocabulary, self.abbreviations, name_of=self._finding_name)

    def _finding_name(self, cid: str) -> str | None:
        j = self._finding_index.get(cid)
        return self.finding_names[j] if j is not None else None

    def disease_index(self, concept_id: str) -> int | None:
        return self._disease_index.get(concept_id)

    # --- scoring ---
    def _score(self, findings, *, age=None, sex=None, weights: BayesWeights | None = None):
        if age is not None and not (0 <= int(age) <= 130):
            raise ValueError(f"age must be between 0 and 130, not {age}")
        weights = weights or self.weights
        resolved = findings if findings and all(isinstance(f, Finding) for f in findings) else self.resolve(findings)
        present: dict[int, Finding] = {}
        negated: dict[int, Finding] = {}
        for f in resolved:
            j = self._finding_index.get(f.concept_id) if f.concept_id else None
            if j is None or f.context:  # family / past / hypothetical: not evidence about the patient now
                continue
            (negated if f.negated else present).setdefault(j, f)
        for j, f in list(present.items()):  # a finding also counts as the findings it implies
            for k in self._implies.get(j, ()):
                present.setdefault(k, f)
        for j, f in list(negated.items()):
            for k in self._implies.get(j, ()):
                negated.setdefault(k, f)
        for j in present:
            negated.pop(j, None)
        n = len(self.disease_ids)
        values: dict[str, np.ndarray] = {}
        support = np.zeros(n, dtype=bool)
        for name, src in self.sources.items():
            v = np.zeros(n)
            for j in present:
                if not src.knows[j]:
                    continue
                v += src.base_pos_d + src.base_pos_f[j]
                rows, data = src.column(src.pos, j)
                v[rows] += data
                support[rows] = True
            for j in negated:
                if not src.knows[j]:
                    continue
                v += src.base_neg_f[j]
                rows, data = src.column(src.neg, j)
                v[rows] += data
            values[name] = np.where(src.covers, v, 0.0)
        sex_norm = _normalize_sex(sex)
        band = age_band(age)
        prior = self._prior
        if band and sex_norm and f"{band}|{sex_norm}" in self._strata:
            prior = self._strata[f"{band}|{sex_norm}"]
        values["prior"] = prior
        candidates = np.flatnonzero(support)
        order, score = self.order(candidates, values, weights)
        return order, score, values, present, negated, weights

    def parts(self, findings, *, age: int | None = None, sex: str | None = None) -> tuple[np.ndarray, dict]:
        """(candidate disease indices, each component's values over all diseases): what a score is made of,
        independent of the weights, so a grid search over weights ranks a case many times from one pass."""
        order, score, values, *_ = self._score(findings, age=age, sex=sex)
        return np.asarray(sorted(order), dtype=np.int64), values

    def order(self, candidates: np.ndarray, values: Mapping[str, np.ndarray], weights: BayesWeights,
              *, top_k: int | None = None) -> tuple[list[int], np.ndarray]:
        """The candidates ranked by ``sum_c weights.of(c) * values[c]`` (ties: more NHAMCS visits first), and
        the scores over all diseases."""
        score = sum(weights.of(c) * v for c, v in values.items())
        order = candidates[np.lexsort((-self._visits[candidates], -score[candidates]))].tolist()
        return (order if top_k is None else order[:top_k]), score

    def ranked_indices(self, findings, *, top_k: int = 10, **kwargs) -> list[int]:
        return self._score(findings, **kwargs)[0][:top_k]

    def rank(self, findings, *, top_k: int = 10, age: int | None = None, sex: str | None = None,
             weights: BayesWeights | None = None, **_ignored) -> list[Diagnosis]:
        order, score, values, present, negated, weights = self._score(findings, age=age, sex=sex, weights=weights)
        top = order[:top_k]
        if not top:
            return []
        listed = score[order[:max(top_k, 50)]]
        probs = np.exp(listed - listed.max())
        probs /= probs.sum()
        out = []
        for rank, i in enumerate(top, start=1):
            parts = {c: {"value": round(float(values[c][i]), 4), "weight": weights.of(c),
                         "contribution": round(float(weights.of(c) * values[c][i]), 4)}
                     for c in values if c == "prior" or self.sources[c].covers[i]}
            out.append(self._diagnosis(i, rank, float(score[i]), float(probs[rank - 1]), parts, present, negated,
                                       age, sex))
        return out

    def _diagnosis(self, i, rank, score, probability, parts, present, negated, age, sex) -> Diagnosis:
        matched, contradicted = [], []
        for j, f in present.items():
            per = {name: round(float(src.prob[i, j]), 4) for name, src in self.sources.items() if src.prob[i, j] > 0}
            if per:
                matched.append({"concept_id": self.finding_ids[j], "name": self.finding_names[j], "text": f.text,
                                "p_finding_given_disease": per})
        for j, f in negated.items():
            per = {name: round(float(src.prob[i, j]), 4) for name, src in self.sources.items() if src.prob[i, j] > 0}
            if per:
                contradicted.append({"concept_id": self.finding_ids[j], "name": self.finding_names[j],
                                     "text": f.text, "p_finding_given_disease": per})
        row = self._typical.getrow(i)
        reported = set(present) | set(negated)
        typical = sorted(zip(row.indices.tolist(), row.data.tolist(), strict=True), key=lambda t: -t[1])
        unmatched = [{"concept_id": self.finding_ids[j], "name": self.finding_names[j], "p": round(p, 4)}
                     for j, p in typical if j not in reported and not self.finding_ids[j].startswith("DDXPLUS:")
                     ][:N_UNMATCHED]
        name = self.disease_names[i]
        explanation = _explain(name, rank, score, probability, parts, matched, contradicted, unmatched)
        return Diagnosis(concept_id=self.disease_ids[i], name=name, score=round(score, 4), rank=rank,
                         icd10cm=self.icd10cm(i), matched=matched, unmatched=unmatched, contradicted=contradicted,
                         explanation=explanation, xrefs=list(self.disease_xrefs[i]),
                         components={"probability": round(probability, 4),
                                     "nhamcs_visits": int(self._visits[i])},
                         notes=[], score_components=parts)

    def icd10cm(self, i: int) -> list[dict]:
        codes = [x.split(":", 1)[1] for x in self.disease_xrefs[i] if x.startswith("ICD10CM:") and "-" not in x]
        if codes:  # the codes whose description names the disease first ("Pneumonia, unspecified organism")
            name = self.disease_names[i].lower()
            described = sorted(((c, _icd10_description(c)) for c in codes),
                               key=lambda cd: (name not in cd[1].lower(), len(cd[0]), cd[0]))
            return [{"code": c, "description": d, "match": "crosswalk"} for c, d in described[:5]]
        from .icd10 import icd10cm_matches

        return icd10cm_matches(self.disease_names[i])

    def disease_name_map(self) -> dict[str, list[str]]:
        return {d: [n, *s] for d, n, s in zip(self.disease_ids, self.disease_names, self.disease_synonyms,
                                              strict=True)}


def _icd10_description(code: str) -> str:
    from .icd10 import icd10cm_description

    return icd10cm_description(code)


def _explain(name, rank, score, probability, parts, matched, contradicted, unmatched) -> str:
    head = (f"{name} is ranked #{rank} (score {score:.2f}, {probability:.0%} of the listed differential; "
            + " + ".join(f"{SOURCE_LABELS.get(c, c)} {p['contribution']:.2f}" for c, p in parts.items()) + ")")
    rest = []
    if matched:
        rest.append("because " + ", ".join(
            f"{m['name']} (P={max(m['p_finding_given_disease'].values()):.2f})" for m in matched[:4])
            + " " + ("is" if len(matched) == 1 else "are") + " linked to it")
    if contradicted:
        rest.append("while the denied " + ", ".join(m["name"] for m in contradicted[:3]) + " count against it")
    if unmatched:
        rest.append("its typical " + ", ".join(m["name"] for m in unmatched[:3]) + " were not reported")
    return head + (" " + "; ".join(rest) if rest else "") + "."
