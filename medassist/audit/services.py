"""Writing and verifying the audit chain. The only code that creates AuditEvent rows."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant: the key of the Postgres advisory lock that serialises appends to the chain.
_CHAIN_LOCK_KEY = 0x6D6564617564


def _digest(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@transaction.atomic
def audit_record(
    *,
    action: str,
    actor=None,
    object_type: str = "",
    object_id: str | int = "",
    model_version: str = "",
    ip: str | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    """Append one event to the chain. Runs in the caller's transaction when there is one."""
    if connection.vendor == "postgresql":
        # Two writers must not both read the same last hash: serialise appends (released at commit).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    # SQLite needs nothing more: settings open write transactions with BEGIN IMMEDIATE.
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    event = AuditEvent(
        created_at=timezone.now(),
        actor_id=actor.pk if is_user else None,
        actor_username=actor.get_username() if is_user else "",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        model_version=model_version or "",
        ip=ip,
        detail=detail or {},
        prev_hash=last or GENESIS_HASH,
    )
    # Hash what the database will give back: JSON round-trip of detail, microsecond timestamps.
    event.hash = _digest(event.prev_hash, event.canonical_json())
    event.save(force_insert=True)
    return event


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""


def audit_verify_chain() -> ChainReport:
    """Recompute every hash in id order; report the first event that does not match."""
    prev = GENESIS_HASH
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev:
            return ChainReport(False, checked, event.pk, "its prev_hash does not match the previous event's hash "
                               "(an event before it was removed or changed)")
        expected = _digest(event.prev_hash, event.canonical_json())
        if event.hash != expected:
            return ChainReport(False, checked, event.pk, "its content does not match its hash (the row was altered)")
        prev = event.hash
        checked += 1
    return ChainReport(True, checked)


def client_ip(request) -> str | None:
    """The caller's address; behind a proxy trust only the first X-Forwarded-For hop it added."""
    if request is None:
        return None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    ip = forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR")
    return ip or None
