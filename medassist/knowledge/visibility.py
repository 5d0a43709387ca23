"""Who may see which corpus documents (issue 13, access control: the shared corpus).

A document is visible to a reader when it is shared (a job's documents whose owner holds
``knowledge.share_document``), has no owner (imports, an operator's writes) or the reader owns it. Every selector that returns
documents filters through :func:`visible_documents`.

Kinds run inside workers, far from the request: the job's owner reaches the selectors as the *current
reader*, a context variable that ``jobs.services.job_process_chunk`` sets around the handler
(:func:`reading_as`). Outside such a scope (a management command, an evaluation) the reader is
nobody, who sees shared documents only: the default fails closed.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db.models import Q, QuerySet

from .models import Document

__all__ = ["SHARE_PERMISSION", "NOBODY", "reading_as", "current_reader", "shared_q", "visible_q", "visible_documents",
           "may_share"]

SHARE_PERMISSION = "knowledge.share_document"
NOBODY = None  # the reader outside any job: shared documents only

_reader: ContextVar[int | None] = ContextVar("corpus_reader", default=NOBODY)


@contextmanager
def reading_as(user_id: int | None) -> Iterator[None]:
    """Selectors inside this block see what user ``user_id`` may see (None: shared documents only)."""
    token = _reader.set(user_id)
    try:
        yield
    finally:
        _reader.reset(token)


def current_reader() -> int | None:
    return _reader.get()


def shared_q(prefix: str = "") -> Q:
    """Documents every user sees: shared ones, and ownerless ones (imports, an operator's writes)."""
    return Q(**{f"{prefix}visibility": Document.Visibility.SHARED}) | Q(**{f"{prefix}owner__isnull": True})


def visible_q(reader: int | None, prefix: str = "") -> Q:
    """The filter for documents ``reader`` may see; ``prefix`` reaches them through a relation
    (``"document__"`` from a ``DocumentConcept``)."""
    return shared_q(prefix) if reader is None else shared_q(prefix) | Q(**{f"{prefix}owner_id": reader})


def visible_documents(reader: int | None) -> QuerySet[Document]:
    return Document.objects.filter(visible_q(reader))


def may_share(user) -> bool:
    """Whether ``user`` may add documents every user sees."""
    return bool(user is not None and user.is_active and user.has_perm(SHARE_PERMISSION))
