"""Writes to the knowledge layer that are not bulk imports: literature jobs adding to the corpus.

``corpus_add_documents`` stores a chunk's abstracts as ``Document`` rows (source "job") with their
concept links, and adds them to the corpus co-occurrence graph that the hypothesis kind ranks with.
It reuses the importers' pieces (``corpus.ConceptResolver``, ``corpus.extracted_links``,
``importers.concepts_ensure``, the corpus pair counting of ``corpus.corpus_cooccurrence_add``) so a
job's document is linked and counted exactly as an imported one.

Identity and idempotence: a document is its PMID, or (without a PMID) its exact title and text.
One already in the corpus -- from an import, an earlier job, or an earlier delivery of this chunk --
is left as it is and counted nothing more (``added: false``); only documents created now are
counted.  Documents, links and counts are written in one transaction under the corpus write lock,
so a chunk either adds all of its documents with their counts or none.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count

from .corpus import (
    BATCH_SIZE,
    ConceptResolver,
    corpus_cooccurrence_add,
    corpus_write_lock,
    extracted_links,
)
from .importers import concepts_ensure
from .models import Document, DocumentConcept

__all__ = ["CorpusAddResult", "corpus_document_error", "corpus_add_documents"]

_PMID_MAX = Document._meta.get_field("pmid").max_length
_YEAR_RANGE = (1, 32767)  # what Document.year (a positive small integer) can hold


@dataclass
class CorpusAddResult:
    # Per item, in order: {"document_id": int, "added": bool, "concepts_linked": int}.
    documents: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # documents_added, items_not_added, document_concepts, ...
    seconds: float = 0.0


def _pmid(item: dict) -> str | None:
    pmid = item.get("pmid")
    pmid = "" if pmid is None else str(pmid).strip()
    return pmid or None


def corpus_document_error(item: dict) -> str | None:
    """Why ``item`` cannot be stored as a corpus document (a sentence naming the field), or None."""
    if not (item.get("text") or "").strip():
        return "text: abstract is empty"
    pmid = _pmid(item)
    if pmid is not None and len(pmid) > _PMID_MAX:
        return f"pmid: {pmid[:30]!r} is longer than {_PMID_MAX} characters, too long for a PMID"
    year = item.get("year")
    if year is not None and (not isinstance(year, int) or isinstance(year, bool)
                             or not _YEAR_RANGE[0] <= year <= _YEAR_RANGE[1]):
        return f"year: {year} is not a publication year"
    return None


@transaction.atomic
def corpus_add_documents(*, items: Sequence[dict], concepts_per_item: Sequence[Sequence[dict]],
                         resolver: ConceptResolver | None = None) -> CorpusAddResult:
    """Store abstracts as corpus documents with their concept links and add them to the corpus graph.

    ``items`` are literature items (``text``, optional ``title``, ``pmid``, ``year``);
    ``concepts_per_item`` their ``concepts.extract_concepts`` dicts, resolved to concept ids as the
    importers do (by MeSH name first; see ``ConceptResolver``).  ``resolver`` may be one the caller
    already built for these concepts (``ConceptResolver.for_extracted``); otherwise one is built here.
    A bulk operation: about ten queries per call, whatever the number of items.  Raises ValueError
    for an item ``corpus_document_error`` refuses (check first to fail just that item).
    """
    started = time.perf_counter()
    if len(items) != len(concepts_per_item):
        raise ValueError(f"{len(items)} items but {len(concepts_per_item)} concept lists")
    for index, item in enumerate(items):
        if problem := corpus_document_error(item):
            raise ValueError(f"items[{index}].{problem}")
    corpus_write_lock()  # from here to commit: no other corpus writer reads or counts in between
    if resolver is None:
        resolver = ConceptResolver.for_extracted(c for found in concepts_per_item for c in found)

    # 1. Which items are documents the corpus already holds (one query per kind of key).
    keys = [("pmid", pmid) if (pmid := _pmid(item)) else ("text", item.get("title") or "", item["text"])
            for item in items]
    existing: dict[tuple, int] = {}
    pmids = [key[1] for key in keys if key[0] == "pmid"]
    if pmids:
        existing.update((("pmid", pmid), pk) for pk, pmid in
                        Document.objects.filter(pmid__in=pmids).values_list("pk", "pmid"))
    texts = [key[2] for key in keys if key[0] == "text"]
    if texts:
        existing.update((("text", title, abstract), pk) for pk, title, abstract in
                        Document.objects.filter(pmid__isnull=True, abstract__in=texts)
                        .values_list("pk", "title", "abstract"))

    # 2. The new documents (the first item of each key) and their links.
    new: dict[tuple, tuple[Document, dict[str, int]]] = {}
    new_concepts = []
    for key, item, found in zip(keys, items, concepts_per_item, strict=True):
        if key in existing or key in new:
            continue
        links = extracted_links(found=found, resolver=resolver)
        new_concepts += links.new_concepts
        document = Document(pmid=key[1] if key[0] == "pmid" else None, title=item.get("title") or "",
                            abstract=item["text"], year=item.get("year"), source=Document.Source.JOB)
        new[key] = (document, dict(links.counts))

    counts = concepts_ensure(new_concepts)
    Document.objects.bulk_create([document for document, _ in new.values()], batch_size=BATCH_SIZE)
    DocumentConcept.objects.bulk_create(
        [DocumentConcept(document_id=document.pk, concept_id=concept_id, count=n)
         for document, links in new.values() for concept_id, n in links.items()],
        batch_size=BATCH_SIZE)
    counts.update(corpus_cooccurrence_add(documents=[(document.year, links) for document, links in new.values()]))

    # 3. One outcome per item; a document that was there already reports the links it has.
    linked = dict(DocumentConcept.objects.filter(document_id__in=set(existing.values()))
                  .values("document_id").annotate(n=Count("id")).values_list("document_id", "n")) if existing else {}
    reported: set[tuple] = set()
    outcomes = []
    for key in keys:
        if key in new and key not in reported:
            document, links = new[key]
            outcomes.append({"document_id": document.pk, "added": True, "concepts_linked": len(links)})
            reported.add(key)
        elif key in new:  # the same document twice in one chunk: added once, by its first item
            document, links = new[key]
            outcomes.append({"document_id": document.pk, "added": False, "concepts_linked": len(links)})
        else:
            outcomes.append({"document_id": existing[key], "added": False,
                             "concepts_linked": linked.get(existing[key], 0)})
    counts.update({"documents_added": len(new), "items_not_added": len(items) - len(new),
                   "document_concepts": sum(len(links) for _, links in new.values())})
    return CorpusAddResult(documents=outcomes, counts=counts, seconds=time.perf_counter() - started)
