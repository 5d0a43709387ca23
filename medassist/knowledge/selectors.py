"""Reads of the knowledge layer: concept lookup, co-occurrence graphs, supporting documents.

Graphs are built from the database once per process and cached; the cache key includes the row
count and newest id of the source, so an import (or corpus growth) is noticed at the next query
with one cheap aggregate query.
"""
from __future__ import annotations

import threading

from django.db.models import Count, Max, Q

from .discovery import CHECK_TAGS, CooccurrenceGraph, Edge
from .models import Concept, Cooccurrence, DocumentConcept

_graphs: dict[tuple, CooccurrenceGraph] = {}
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


def cooccurrence_graph(*, source: str, until_year: int | None = None) -> CooccurrenceGraph:
    """The undirected co-occurrence graph of one source, optionally only up to a year (cached)."""
    rows = Cooccurrence.objects.filter(source=source, directed=False)
    if until_year is None:
        rows = rows.filter(year=Cooccurrence.ALL_YEARS)
    else:
        # Dated rows only: year 0 is the all-years total and would count every pair twice.
        rows = rows.filter(year__gt=0, year__lte=until_year)
    # MeSH check tags (Humans, Female, Aged, ...) co-occur with everything and bridge nothing.
    generic = Concept.objects.filter(name__in=CHECK_TAGS).values("pk")
    rows = rows.exclude(concept_a_id__in=generic).exclude(concept_b_id__in=generic)
    state = rows.aggregate(n=Count("id"), newest=Max("id"))
    key = (source, until_year, state["n"], state["newest"])
    with _lock:
        graph = _graphs.get(key)
        if graph is None:
            edges = (Edge(a, b, float(count or 0), year or None)
                     for a, b, count, year in rows.values_list("concept_a_id", "concept_b_id", "count", "year")
                     .iterator(chunk_size=10_000))
            graph = CooccurrenceGraph.from_edges(edges)
            for old in [k for k in _graphs if k[:2] == key[:2]]:
                del _graphs[old]
            _graphs[key] = graph
    return graph


def concepts_by_id(*, ids) -> dict[str, Concept]:
    return {c.pk: c for c in Concept.objects.filter(pk__in=list(ids))}


def supporting_documents(*, a: str, b: str, until_year: int | None = None, limit: int = 3) -> list[dict]:
    """Corpus documents that mention both concepts (the evidence for an A-B link)."""
    docs = DocumentConcept.objects.filter(concept_id=a).values_list("document_id", flat=True)
    links = DocumentConcept.objects.filter(concept_id=b, document_id__in=docs).select_related("document")
    if until_year is not None:
        links = links.filter(document__year__lte=until_year)
    out = []
    for link in links.order_by("-document__year")[:limit]:
        doc = link.document
        out.append({"pmid": doc.pmid, "title": doc.title[:300], "year": doc.year})
    return out
