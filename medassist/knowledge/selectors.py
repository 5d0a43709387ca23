"""Reads of the knowledge layer: concept lookup, co-occurrence graphs, supporting documents, and the
queries behind the diagnosis ranker (imported HSDN links, tree numbers, corpus symptom-disease pairs).

Graphs are built from the database once per process and cached; the cache key includes the row
count, newest id and total count of the source's rows, so an import, or a literature job adding
documents (which raises counts of existing pairs without adding rows), is noticed at the next query
with one cheap aggregate query.

Extracted concepts (``concepts.extract_concepts``) carry the vocabulary packages' MeSH ids, which
are often wrong; ``concept_resolver_for`` and ``concept_with_resolved_id`` correct them against the
imported MeSH concepts, by name, the way the importers link documents.

Documents are read as a *reader* (issue 13, ``visibility.py``): ``supporting_documents`` returns only
documents the reader may see, and the corpus graph is the stored graph of shared documents plus, for a
reader with private documents, their pairs (cached per reader). The default reader is the job's owner,
set by the worker around the kind's handler; outside a job, nobody (shared documents only).
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

from django.db.models import Count, Max, Q, Sum

from .corpus import ConceptResolver, corpus_pair_counts
from .discovery import CHECK_TAGS, CooccurrenceGraph, Edge
from .hsdn import HsdnLink
from .models import Concept, Cooccurrence, Document, DocumentConcept
from .visibility import current_reader, visible_q

_graphs: dict[tuple, CooccurrenceGraph] = {}
_CURRENT = object()  # a ``reader`` default: the current reader (``visibility.current_reader``)
_lock = threading.Lock()

def concept_resolve(*, text: str) -> Concept | None:
    """A concept by id ("MESH:D009203", "D009203") or by name/synonym, case-insensitively."""
    text = (text or "").strip()
    if not text:
        return None
    candidates = [text, f"MESH:{text}"] if ":" not in text else [text]
    concept = Concept.objects.filter(pk__in=candidates).first()
    if concept is not None:
        return concept
    concept = Concept.objects.filter(name_lower=text.lower()).order_by("vocabulary").first()
    if concept is not None:
        return concept
    # Synonyms are a JSON list: a containment query where the database supports it.
    try:
        return Concept.objects.filter(synonyms__contains=[text.lower()]).first()
    except Exception:  # SQLite has no JSON containment
        return None


def concept_suggestions(*, text: str, limit: int = 5) -> list[str]:
    words = [w for w in (text or "").lower().split() if len(w) > 2]
    if not words:
        return []
    query = Q()
    for word in words:
        query &= Q(name_lower__contains=word)
    return list(Concept.objects.filter(query).order_by("name_lower").values_list("name", flat=True)[:limit])


_MAX_PRIVATE_GRAPHS = 8  # cached graphs with one reader's private documents on top (the oldest goes first)


def _private_edges(*, reader: int, until_year: int | None, generic) -> Iterable[Edge]:
    """The corpus pairs of ``reader``'s private documents, counted as the stored graph counts shared ones."""
    mine = Document.objects.filter(owner_id=reader, visibility=Document.Visibility.PRIVATE)
    for (a, b, year), n in corpus_pair_counts(documents=mine).items():
        if a in generic or b in generic:
            continue
        if (until_year is None and year == Cooccurrence.ALL_YEARS) or (
                until_year is not None and Cooccurrence.ALL_YEARS < year <= until_year):
            yield Edge(a, b, float(n), year or None)


def cooccurrence_graph(*, source: str, until_year: int | None = None, reader=_CURRENT) -> CooccurrenceGraph:
    """The undirected co-occurrence graph of one source, optionally only up to a year (cached).

    The stored corpus graph counts shared documents only; for a ``reader`` (a user id; default the current
    reader, ``visibility.reading_as``) with private documents, their pairs are added on top (issue 13)."""
    reader = current_reader() if reader is _CURRENT else reader
    private: tuple = (None,)
    if source == Cooccurrence.Source.CORPUS and reader is not None:
        mine = Document.objects.filter(owner_id=reader, visibility=Document.Visibility.PRIVATE).aggregate(
            n=Count("id"), newest=Max("id"))
        if mine["n"]:
            private = (reader, mine["n"], mine["newest"])
    rows = Cooccurrence.objects.filter(source=source, directed=False)
    if until_year is None:
        rows = rows.filter(year=Cooccurrence.ALL_YEARS)
    else:
        # Dated rows only: year 0 is the all-years total and would count every pair twice.
        rows = rows.filter(year__gt=0, year__lte=until_year)
    # MeSH check tags (Humans, Female, Aged, ...) co-occur with everything and bridge nothing.
    generic = Concept.objects.filter(name__in=CHECK_TAGS).values("pk")
    rows = rows.exclude(concept_a_id__in=generic).exclude(concept_b_id__in=generic)
    state = rows.aggregate(n=Count("id"), newest=Max("id"), total=Sum("count"))
    key = (source, until_year, private[0], state["n"], state["newest"], state["total"], *private[1:])
    with _lock:
        graph = _graphs.get(key)
        if graph is None:
            edges = (Edge(a, b, float(count or 0), year or None)
                     for a, b, count, year in rows.values_list("concept_a_id", "concept_b_id", "count", "year")
                     .iterator(chunk_size=10_000))
            if private[0] is not None:  # duplicate pairs are summed by from_edges
                names = set(Concept.objects.filter(name__in=CHECK_TAGS).values_list("pk", flat=True))
                edges = itertools.chain(edges, _private_edges(reader=private[0], until_year=until_year, generic=names))
            graph = CooccurrenceGraph.from_edges(edges)
            for old in [k for k in _graphs if k[:3] == key[:3]]:
                del _graphs[old]
            overlays = [k for k in _graphs if k[2] is not None]
            for old in overlays[:max(0, len(overlays) - _MAX_PRIVATE_GRAPHS + 1)]:
                del _graphs[old]
            _graphs[key] = graph
    return graph


def concept_resolver_for(*, found: Iterable[dict]) -> ConceptResolver:
    """The resolver for a batch of ``extract_concepts`` dicts: it reads only the trusted concepts their
    names or package ids can resolve to (one query on Postgres; one per 999 on SQLite), not the whole
    MeSH table, so a job chunk pays one small query for all its concepts."""
    return ConceptResolver.for_extracted(found)


def concept_with_resolved_id(*, found: dict, resolver: ConceptResolver) -> dict:
    """``found`` (an ``extract_concepts`` dict) with its ids corrected against the imported concepts.

    ``id``/``mesh_id`` become what ``resolver`` resolves the concept to, which is also the concept a
    corpus document links (``corpus.extracted_links``).  ``id_source`` says how:
    "mesh-2015 by name" (a MeSH 2015 descriptor of that name; "<source> by name" for a MeSH concept
    another importer created), "package" (the package's id: nothing imported contradicts it, e.g.
    nothing is imported), or "package, mesh id rejected" (the package's MeSH id is another
    descriptor and the name is no MeSH name: ``mesh_id`` null, ``id`` the DrugBank id or null).
    ``package_id`` keeps the package's MeSH id where it differs from ``mesh_id``.
    """
    concept_id, how = resolver.resolve_extracted(found)
    mesh_id = concept_id.removeprefix("MESH:") if concept_id and concept_id.startswith("MESH:") else None
    corrected = {**found, "id": concept_id, "mesh_id": mesh_id, "id_source": how}
    if found.get("mesh_id") and found["mesh_id"] != mesh_id:
        corrected["package_id"] = found["mesh_id"]
    return corrected


def concepts_by_id(*, ids) -> dict[str, Concept]:
    return {c.pk: c for c in Concept.objects.filter(pk__in=list(ids))}


def supporting_documents(*, a: str, b: str, until_year: int | None = None, limit: int = 3,
                         reader=_CURRENT) -> list[dict]:
    """Corpus documents that mention both concepts (the evidence for an A-B link), among those ``reader``
    (a user id; None: nobody) may see; by default the current reader (``visibility.reading_as``)."""
    reader = current_reader() if reader is _CURRENT else reader
    docs = DocumentConcept.objects.filter(concept_id=a).values_list("document_id", flat=True)
    links = DocumentConcept.objects.filter(visible_q(reader, "document__"), concept_id=b,
                                           document_id__in=docs).select_related("document")
    if until_year is not None:
        links = links.filter(document__year__lte=until_year)
    out = []
    for link in links.order_by("-document__year")[:limit]:
        doc = link.document
        out.append({"pmid": doc.pmid, "title": doc.title[:300], "year": doc.year})
    return out


def hsdn_state() -> dict:
    """Row count, newest id and total count of the imported HSDN links: changes with every re-import
    (``cooccurrences_replace`` deletes and re-inserts, so ids move even for identical data)."""
    return Cooccurrence.objects.filter(source=Cooccurrence.Source.HSDN).aggregate(
        rows=Count("id"), newest=Max("id"), total=Sum("count"))


def hsdn_links() -> tuple[HsdnLink, ...]:
    """The imported HSDN symptom -> disease links as ``hsdn.HsdnLink`` rows, in import order.

    Names are the file's own where the import recorded them (``metrics``; so a ranker built from the
    tables ranks exactly like one built from the file), else the concept's current name.
    """
    rows = (Cooccurrence.objects.filter(source=Cooccurrence.Source.HSDN).order_by("id")
            .values_list("concept_a_id", "concept_a__name", "concept_b_id", "concept_b__name", "count", "score",
                         "metrics"))
    return tuple(
        HsdnLink(disease_id=disease, disease_name=metrics.get("disease_name") or disease_name,
                 symptom_id=symptom, symptom_name=metrics.get("symptom_name") or symptom_name,
                 cooccurs=int(count), tfidf=float(score or 0.0), doid=metrics.get("doid") or "",
                 doid_name=metrics.get("doid_name") or "")
        for symptom, symptom_name, disease, disease_name, count, score, metrics in rows.iterator(chunk_size=5_000))


def concept_tree_numbers(*, ids: Iterable[str]) -> dict[str, list[str]]:
    """Concept id -> its MeSH tree numbers, for those of ``ids`` that are imported with some."""
    return dict(Concept.objects.filter(pk__in=list(ids)).exclude(tree_numbers=[]).values_list("id", "tree_numbers"))


def corpus_links(*, diseases: Iterable[str], symptoms: Iterable[str]) -> list[tuple[str, str, int]]:
    """All-years corpus co-occurrence rows (a, b, count) between one of ``diseases`` and one of
    ``symptoms``. The corpus graph is undirected (a < b by id), so either side may be the disease."""
    diseases, symptoms = list(diseases), list(symptoms)
    rows = Cooccurrence.objects.filter(source=Cooccurrence.Source.CORPUS, year=Cooccurrence.ALL_YEARS).filter(
        Q(concept_a_id__in=diseases, concept_b_id__in=symptoms) | Q(concept_a_id__in=symptoms, concept_b_id__in=diseases))
    return list(rows.values_list("concept_a_id", "concept_b_id", "count"))


def corpus_state() -> dict:
    """Row count, newest id and total count of the corpus graph: changes whenever an import recounts it
    or a literature job adds documents."""
    return Cooccurrence.objects.filter(source=Cooccurrence.Source.CORPUS, year=Cooccurrence.ALL_YEARS).aggregate(
        rows=Count("id"), newest=Max("id"), total=Sum("count"))


def association_state() -> dict:
    """Row count, newest id and summed evidence of the imported diagnosis associations: changes with every
    re-import (deleted links and upserts move the newest id or the sum)."""
    from .models import DiagnosisAssociation

    return DiagnosisAssociation.objects.aggregate(rows=Count("id"), newest=Max("id"), total=Sum("count"))


def association_set():
    """The imported diagnosis associations as a ``diagnosis_sources.AssociationSet`` (what the Bayes
    ranker is built from), with the finding vocabulary rebuilt from the stored names and synonyms."""
    from .diagnosis_sources import Association, AssociationSet, Disease, clinical_vocabulary_from_rows
    from .models import DiagnosisAssociation, DiagnosisDisease, DiagnosisFinding

    diseases, visits = {}, {}
    total = 0
    for cid, name, xrefs, synonyms, n, weighted, strata in DiagnosisDisease.objects.values_list(
            "concept_id", "concept__name", "xrefs", "synonyms", "visits", "visits_weighted", "strata"):
        diseases[cid] = Disease(cid, name, set(xrefs), {name, *synonyms})
        if n:
            visits[cid] = {"n": n, "weighted": weighted, "strata": strata}
    names, codes, synonyms, implies = {}, {}, {}, {}
    for cid, name, c, s, imp in DiagnosisFinding.objects.values_list("concept_id", "concept__name", "codes",
                                                                     "synonyms", "implies"):
        names[cid], codes[cid], synonyms[cid] = name, set(c), set(s)
        if imp:
            implies[cid] = list(imp)
    rows = [Association(d, f, s, w, c) for d, f, s, w, c in DiagnosisAssociation.objects.values_list(
        "disease_id", "finding_id", "source", "weight", "count").iterator(chunk_size=10_000)]
    from .models import Concept

    nhamcs_total = Concept.objects.filter(id=NHAMCS_TOTAL_ID).values_list("code", flat=True).first()
    total = int(nhamcs_total) if nhamcs_total and nhamcs_total.isdigit() else sum(v["n"] for v in visits.values())
    return AssociationSet(diseases=diseases, finding_names=names, finding_codes=codes, finding_synonyms=synonyms,
                          associations=rows, implies=implies, visits=visits, total_visits=total,
                          vocabulary=clinical_vocabulary_from_rows(names, synonyms))


NHAMCS_TOTAL_ID = "NHAMCS:visits"  # a marker concept: its code is the number of NHAMCS visits with a diagnosis
