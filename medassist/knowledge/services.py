"""Writes to the knowledge layer that are not bulk imports: literature jobs adding to the corpus.

``corpus_add_documents`` stores a chunk's abstracts as ``Document`` rows (source "job") with their
concept links, and adds them to the corpus co-occurrence graph that the hypothesis kind ranks with.
It reuses the importers' pieces (``corpus.ConceptResolver``, ``corpus.extracted_links``,
``importers.concepts_ensure``, the corpus pair counting of ``corpus.corpus_cooccurrence_add``) so a
job's document is linked and counted exactly as an imported one.

Identity and idempotence: a document is its owner and PMID, or (without a PMID) its owner and exact
title and text (issue 13: the same PMID from two owners is two documents, each visible as
``visibility.py`` says).
One already in the corpus -- from an import, an earlier job, or an earlier delivery of this chunk --
is left as it is and counted nothing more (``added: false``); only documents created now are
counted.  Documents, links and counts are written in one transaction under the corpus write lock,
so a chunk either adds all of its documents with their counts or none.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count

from medassist.audit.services import audit_record

from .corpus import (
    BATCH_SIZE,
    ConceptResolver,
    corpus_cooccurrence_add,
    corpus_cooccurrence_rebuild,
    corpus_write_lock,
    extracted_links,
)
from .importers import concepts_ensure
from .models import Document, DocumentConcept
from .visibility import current_reader

__all__ = ["CorpusAddResult", "corpus_document_error", "corpus_add_documents", "corpus_delete_documents"]

_CURRENT = object()  # corpus_add_documents' default owner: the current reader (the job's owner)

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
                         resolver: ConceptResolver | None = None, owner_id=_CURRENT,
                         visibility: str | None = None) -> CorpusAddResult:
    """Store abstracts as corpus documents with their concept links and add them to the corpus graph.

    ``items`` are literature items (``text``, optional ``title``, ``pmid``, ``year``);
    ``concepts_per_item`` their ``concepts.extract_concepts`` dicts, resolved to concept ids as the
    importers do (by MeSH name first; see ``ConceptResolver``).  ``resolver`` may be one the caller
    already built for these concepts (``ConceptResolver.for_extracted``); otherwise one is built here.
    ``owner_id`` (default: the current reader, i.e. the job's owner) owns the new documents;
    ``visibility`` defaults to private; without an owner (an operator's write) it is always shared.
    Identity is per owner: a PMID another owner (or an import) holds becomes a document of this owner.
    A bulk operation: about ten queries per call, whatever the number of items.  Raises ValueError
    for an item ``corpus_document_error`` refuses (check first to fail just that item).
    """
    started = time.perf_counter()
    if len(items) != len(concepts_per_item):
        raise ValueError(f"{len(items)} items but {len(concepts_per_item)} concept lists")
    for index, item in enumerate(items):
        if problem := corpus_document_error(item):
            raise ValueError(f"items[{index}].{problem}")
    owner_id = current_reader() if owner_id is _CURRENT else owner_id
    if owner_id is None:  # an operator's write (no job owner): nobody to keep it private for
        visibility = Document.Visibility.SHARED
    visibility = visibility or Document.Visibility.PRIVATE
    if visibility not in Document.Visibility.values:
        raise ValueError(f"visibility must be one of {', '.join(Document.Visibility.values)}, not {visibility!r}")
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
                        Document.objects.filter(pmid__in=pmids, owner_id=owner_id).values_list("pk", "pmid"))
    texts = [key[2] for key in keys if key[0] == "text"]
    if texts:
        existing.update((("text", title, abstract), pk) for pk, title, abstract in
                        Document.objects.filter(pmid__isnull=True, abstract__in=texts, owner_id=owner_id)
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
                            abstract=item["text"], year=item.get("year"), source=Document.Source.JOB,
                            owner_id=owner_id, visibility=visibility)
        new[key] = (document, dict(links.counts))

    counts = concepts_ensure(new_concepts)
    Document.objects.bulk_create([document for document, _ in new.values()], batch_size=BATCH_SIZE)
    DocumentConcept.objects.bulk_create(
        [DocumentConcept(document_id=document.pk, concept_id=concept_id, count=n)
         for document, links in new.values() for concept_id, n in links.items()],
        batch_size=BATCH_SIZE)
    # Only shared documents enter the stored graph every user ranks with (private ones: selectors overlay them).
    counts.update(corpus_cooccurrence_add(documents=[(document.year, links) for document, links in new.values()
                                                     if document.visibility == Document.Visibility.SHARED]))

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
    if new:  # audited (issue 13): who wrote which documents into the corpus, no text from them
        _audit_corpus_write(owner_id=owner_id, operation="add", visibility=visibility,
                            document_ids=[document.pk for document, _ in new.values()])
    return CorpusAddResult(documents=outcomes, counts=counts, seconds=time.perf_counter() - started)


@transaction.atomic
def corpus_delete_documents(*, owner_id: int) -> int:
    """Delete every corpus document ``owner_id`` owns (a user's data deletion) and recount the corpus graph
    without them. Returns the number of documents deleted."""
    corpus_write_lock()
    deleted = Document.objects.filter(owner_id=owner_id).count()
    if deleted:
        ids = list(Document.objects.filter(owner_id=owner_id).values_list("pk", flat=True)[:100])
        Document.objects.filter(owner_id=owner_id).delete()  # their concept links go with them (CASCADE)
        corpus_cooccurrence_rebuild()
        _audit_corpus_write(owner_id=owner_id, operation="delete", count=deleted, document_ids=ids)
    return deleted


def _audit_corpus_write(*, owner_id, operation: str, document_ids: list, count: int | None = None,
                        visibility: str | None = None) -> None:
    """One ``corpus.write`` audit event per write (issue 13), the documents' owner as actor."""
    owner = get_user_model().objects.filter(pk=owner_id).first() if owner_id is not None else None
    detail = {"operation": operation, "documents": count if count is not None else len(document_ids),
              "document_ids": document_ids[:100], "owner_id": owner_id}
    if visibility:
        detail["visibility"] = visibility
    audit_record(action="corpus.write", actor=owner, object_type="knowledge.document", detail=detail)
