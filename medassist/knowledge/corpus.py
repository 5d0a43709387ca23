"""The knowledge corpus' writers and the concept resolution they share with the importers.

- :class:`ConceptResolver`: extracted concept -> the concept id to store (by MeSH name first; the
  dictionary packages' own ids are often wrong, see ``concepts.py``), and :func:`extracted_links`,
  one document's concept links as every corpus writer makes them;
- the corpus co-occurrence graph: :func:`corpus_cooccurrence_rebuild` (recount from all stored
  documents) and :func:`corpus_cooccurrence_add` (add never-counted documents' pairs), both under
  :func:`corpus_write_lock`; :func:`cooccurrences_replace` makes one source's stored rows exactly
  the given ones (the importers' HSDN and MEDLINE graphs, and the corpus recount);
- the concept rows they create: ``SOURCE_*`` (``Concept.source`` values) and ``SOURCE_RANK`` (which
  source may rename a concept another created), :func:`concept_row`, :func:`semantic_group_for`.

The bulk importers (``importers.py``) and literature jobs (``services.corpus_add_documents``) write
the corpus through these, so a job's document is linked and counted exactly as an imported one.
"""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django.db import connection
from django.db.models import Q

from .concepts import SEMANTIC_GROUPS  # one table of readable groups for extraction and imports
from .models import Concept, Cooccurrence, Document, DocumentConcept
from .visibility import shared_q

__all__ = [
    "BATCH_SIZE",
    "LOOKUP_BATCH",
    "SOURCE_MESH",
    "SOURCE_HSDN",
    "SOURCE_DOID_MAP",
    "SOURCE_HEADING",
    "SOURCE_EXTRACTION",
    "SOURCE_HPO",
    "SOURCE_ICD10CM",
    "SOURCE_RANK",
    "batched",
    "semantic_group_for",
    "concept_row",
    "ConceptResolver",
    "ExtractedLinks",
    "extracted_links",
    "corpus_write_lock",
    "corpus_cooccurrence_rebuild",
    "corpus_pair_counts",
    "corpus_cooccurrence_add",
    "cooccurrences_replace",
]

# Any constant: the Postgres advisory lock that serialises writers of the corpus graph.
_CORPUS_LOCK_KEY = 0x6D6564636F7270
BATCH_SIZE = 5000  # rows per INSERT; Django lowers it where the database allows fewer parameters
LOOKUP_BATCH = 900  # ids per IN (...) query: below SQLite's historical 999-parameter limit

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
SOURCE_RANK = {SOURCE_MESH: 3, SOURCE_HPO: 3, SOURCE_ICD10CM: 3, SOURCE_HSDN: 2, SOURCE_DOID_MAP: 2,
               SOURCE_HEADING: 2, SOURCE_EXTRACTION: 1}

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def concept_row(*, concept_id: str, name: str, source: str, tree_numbers: Sequence[str] = (),
                semantic_group: str | None = None) -> Concept:
    """An unsaved ``Concept`` for ``concept_id`` ("MESH:D009203"): vocabulary from the prefix, semantic
    group from the tree numbers unless given."""
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
    for pks in batched(stale, LOOKUP_BATCH):
        Cooccurrence.objects.filter(pk__in=pks).delete()
    return {"cooccurrences": len(rows), "cooccurrences_deleted": len(stale)}


# --- concept resolution and links --------------------------------------------------------------------------


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
            for part in batched(wanted, max(per_query, 1)):
                rows += trusted.filter(Q(name_lower__in=[v for k, v in part if k == "name"])
                                       | Q(id__in=[v for k, v in part if k == "id"])).values_list(*fields)
        # The MeSH file's names first, so an older name from HSDN cannot take over a current one.
        for concept_id, name_lower, trees, source in sorted(rows, key=lambda r: (-SOURCE_RANK.get(r[3], 0), r[0])):
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
            links.new_concepts.append(concept_row(concept_id=concept_id, name=concept["name"], source=SOURCE_EXTRACTION,
                                                  tree_numbers=concept["tree_numbers"],
                                                  semantic_group=concept["semantic_group"]))
        links.counts[concept_id] += concept["count"]
    return links


# --- the corpus co-occurrence graph -------------------------------------------------------------------------


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


def corpus_pair_counts(*, documents) -> Counter[tuple[str, str, int]]:
    """(a, b, year) -> documents of the ``documents`` queryset linking both (``_corpus_pair_counts``' rule)."""
    years = dict(documents.values_list("pk", "year").iterator(chunk_size=BATCH_SIZE))
    concepts_by_doc: dict[int, list[str]] = defaultdict(list)
    for doc_id, concept_id in DocumentConcept.objects.filter(document__in=documents).values_list(
            "document_id", "concept_id").iterator(chunk_size=BATCH_SIZE):
        concepts_by_doc[doc_id].append(concept_id)
    return _corpus_pair_counts((years.get(doc_id), concept_ids) for doc_id, concept_ids in concepts_by_doc.items())


def corpus_cooccurrence_rebuild() -> dict[str, int]:
    """Recount the corpus graph from all stored shared documents (see ``_corpus_pair_counts``).

    Private documents (issue 13) are not in the stored graph: no other user's results may rest on them.
    Their owner's hypothesis jobs add their pairs on top (``selectors.cooccurrence_graph``).

    Recounting everything (not adding this import's counts) is what keeps imports idempotent and
    lets PubMedQA, MEDLINE and job documents share one graph.  It is a single pass over
    ``DocumentConcept``: milliseconds for the ~1,000 abstracts here; a corpus of millions would move
    this into SQL.  Call inside a transaction, after ``corpus_write_lock()``.
    """
    counts = corpus_pair_counts(documents=Document.objects.filter(shared_q()))
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
