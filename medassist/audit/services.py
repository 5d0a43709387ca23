"""Writing and verifying the audit chain. The only code that creates AuditEvent rows."""
from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from .canonical import HASH_VERSION, KEYED_HASH_VERSION, clean_ip, storable_json, storable_text
from .models import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant: the key of the Postgres advisory lock that serialises appends to the chain.
_CHAIN_LOCK_KEY = 0x6D6564617564
# How many broken events a report lists (it counts them all).
MAX_LISTED_BROKEN = 1000


def _hmac_key() -> bytes:
    return str(getattr(settings, "MEDASSIST_AUDIT_HMAC_KEY", "") or "").encode("utf-8")


def _digest(prev_hash: str, canonical: str, version: int = HASH_VERSION) -> str:
    """SHA-256 over the previous hash and the canonical event; from version 3 a keyed HMAC-SHA256, so that
    whoever can rewrite rows but not read the web/worker environment cannot recompute the chain."""
    message = (prev_hash + canonical).encode("utf-8")
    if version >= KEYED_HASH_VERSION:
        key = _hmac_key()
        if not key:
            raise ValueError("the event is HMAC-keyed and MEDASSIST_AUDIT_HMAC_KEY is not set")
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def _max_length(name: str) -> int | None:
    return AuditEvent._meta.get_field(name).max_length


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
    actor_name: str = "",
) -> AuditEvent:
    """Append one event to the chain. Runs in the caller's transaction when there is one.

    Every value is first made storable (canonical.py): what is hashed is exactly what SQLite or
    Postgres will give back, so no caller input can make a stored event differ from its hash or make
    the insert fail. An invalid ``ip`` is stored as NULL. ``actor_name`` names an actor that is not a
    Django user (``os_actor()`` for a command run from a shell); a user ``actor`` takes precedence.
    """
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
        actor_username=storable_text(actor.get_username() if is_user else actor_name, _max_length("actor_username")),
        action=storable_text(action, _max_length("action")),
        object_type=storable_text(object_type, _max_length("object_type")),
        object_id=storable_text(object_id, _max_length("object_id")),
        model_version=storable_text(model_version or "", _max_length("model_version")),
        ip=clean_ip(ip),
        detail=storable_json(detail or {}),
        prev_hash=last or GENESIS_HASH,
        hash_version=KEYED_HASH_VERSION if _hmac_key() else HASH_VERSION,
    )
    event.hash = _digest(event.prev_hash, event.canonical(), event.hash_version)
    event.save(force_insert=True)
    return event


def os_actor() -> str:
    """The operating-system user running this process, as an audit actor name ("os:<login>")."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (e.g. an arbitrary container uid)
        login = f"uid-{os.getuid()}"
    return f"os:{login}"


# A parameter value kept as it is: a short token without spaces (an enum, a model name, a number as
# text). Anything else may be free text from the user's input and is stored only as a fingerprint.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")


def audit_fingerprint(text: str) -> str:
    """A short keyed digest of free text: equal texts match across events, the text itself is not kept
    (HMAC under MEDASSIST_AUDIT_HMAC_KEY when set, so short texts cannot be guessed from the trail)."""
    data = str(text).encode("utf-8", "surrogatepass")
    key = _hmac_key()
    digest = hmac.new(key, data, hashlib.sha256) if key else hashlib.sha256(data)
    return f"sha256:{digest.hexdigest()[:16]}"


def audit_params(value):
    """Job params as the audit trail keeps them (issue 13, privacy): numbers, booleans and enum-like
    tokens as they are; every other string (a literature ``question``, a free-text start concept) as
    its ``audit_fingerprint``."""
    if isinstance(value, dict):
        return {str(k): audit_params(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [audit_params(v) for v in value]
    if isinstance(value, str) and not _PLAIN_VALUE.fullmatch(value):
        return audit_fingerprint(value)
    return value


@dataclass
class BrokenEvent:
    id: int
    reason: str


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_id: int | None = None  # the first broken event
    reason: str = ""  # why the first broken event is broken
    broken: list[BrokenEvent] = field(default_factory=list)  # up to MAX_LISTED_BROKEN, in id order
    broken_count: int = 0


PREV_MISMATCH = ("its prev_hash does not match the previous event's hash "
                 "(an event before it was removed or changed)")
CONTENT_MISMATCH = "its content does not match its hash (the row was altered)"
DOWNGRADED = "it is not HMAC-keyed although events before it are (written without the key)"


def audit_verify_chain() -> ChainReport:
    """Recompute every hash in id order; report every event that does not match.

    A break does not stop the check: each event is compared with the stored hash of the event before
    it, so one altered row is reported once and every event after it is still verified.
    """
    report = ChainReport(True, 0)
    prev = GENESIS_HASH
    keyed = False  # once events are HMAC-keyed, an unkeyed one after them is a forgery
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        reasons = []
        if event.prev_hash != prev:
            reasons.append(PREV_MISMATCH)
        if keyed and event.hash_version < KEYED_HASH_VERSION:
            reasons.append(DOWNGRADED)
        keyed = keyed or event.hash_version >= KEYED_HASH_VERSION
        try:
            expected = _digest(event.prev_hash, event.canonical(), event.hash_version)
        except (ValueError, TypeError) as exc:
            expected, reasons = None, [*reasons, f"its hash cannot be recomputed ({exc})"]
        if expected is not None and event.hash != expected:
            reasons.append(CONTENT_MISMATCH)
        if reasons:
            report.ok = False
            report.broken_count += 1
            if report.broken_id is None:
                report.broken_id, report.reason = event.pk, "; ".join(reasons)
            if len(report.broken) < MAX_LISTED_BROKEN:
                report.broken.append(BrokenEvent(event.pk, "; ".join(reasons)))
        prev = event.hash
        report.checked += 1
    return report


@lru_cache(maxsize=8)
def _networks(configured: tuple[str, ...]) -> tuple:
    try:
        return tuple(ipaddress.ip_network(str(entry).strip(), strict=False) for entry in configured if str(entry).strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"MEDASSIST_TRUSTED_PROXIES: {exc}") from exc


def check_trusted_proxies(app_configs=None, **kwargs):
    """System check: every MEDASSIST_TRUSTED_PROXIES entry is an IP or a CIDR network."""
    from django.core.checks import Error

    try:
        _networks(tuple(getattr(settings, "MEDASSIST_TRUSTED_PROXIES", ()) or ()))
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="List IPs or CIDRs, e.g. 10.0.0.0/8,::1", id="audit.E001")]
    return []


def check_audit_key(app_configs=None, **kwargs):
    """Deploy check (`manage.py check --deploy`): the audit chain is HMAC-keyed with a long enough key."""
    from django.core.checks import Error

    key = _hmac_key()
    if len(key) >= 32:
        return []
    problem = "is not set: audit events are hashed without a key" if not key else "is shorter than 32 characters"
    return [Error(f"MEDASSIST_AUDIT_HMAC_KEY {problem}, so whoever can rewrite audit rows can recompute the chain.",
                  hint='Set it in the environment of web and workers: python -c "import secrets; '
                       'print(secrets.token_hex(32))"', id="audit.E002")]


def _trusted(address: str) -> bool:
    networks = _networks(tuple(getattr(settings, "MEDASSIST_TRUSTED_PROXIES", ()) or ()))
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in networks)


def client_ip(request) -> str | None:
    """The caller's address, validated and normalised (None when there is no valid one).

    ``X-Forwarded-For`` is read only when the direct peer (REMOTE_ADDR) is one of
    ``MEDASSIST_TRUSTED_PROXIES``: then the right-most hop that is not itself a trusted proxy is the
    client. Anything else (no trusted proxy, an invalid hop) falls back to REMOTE_ADDR: a header
    anyone can send never decides the address that is audited.
    """
    if request is None:
        return None
    remote = clean_ip(request.META.get("REMOTE_ADDR"))
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if remote is None or not forwarded or not _trusted(remote):
        return remote
    hops = [clean_ip(hop) for hop in forwarded.split(",")]
    if any(hop is None for hop in hops):
        return remote
    for hop in reversed(hops):
        if not _trusted(hop):
            return hop
    return hops[0]  # every hop is a trusted proxy: the farthest one is the best we know


# --- Anchors: the chain's head, kept outside the database -------------------------------------------
# The chain alone cannot notice its newest events disappearing (tail deletion, TRUNCATE, `flush`,
# `migrate audit zero`): what is left still verifies. `manage.py audit_anchor` appends the current
# head (id, hash, event count) as one JSON line to a file outside the database; `audit_verify
# --anchor` checks that every anchored head is still there, unchanged, with as many events up to it.


def default_anchor_path():
    return Path(settings.VAR_DIR) / "audit" / "anchor.jsonl"


def audit_anchor_write(path=None) -> dict:
    """Append the chain's current head to the anchor file (created with its folder) and return it."""
    path = Path(path or default_anchor_path())
    with transaction.atomic():
        head = AuditEvent.objects.order_by("-id").values("id", "hash").first()
        count = AuditEvent.objects.count()
    anchor = {"id": head["id"] if head else None, "hash": head["hash"] if head else GENESIS_HASH,
              "count": count, "written_at": timezone.now().isoformat(), "database": connection.vendor}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(anchor, sort_keys=True) + "\n")
    return anchor


def audit_anchor_check(path=None) -> list[str]:
    """Every way the table disagrees with the anchors in ``path`` (empty: it agrees with all of them)."""
    path = Path(path or default_anchor_path())
    if not path.exists():
        return [f"anchor file {path} does not exist"]
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            anchor = json.loads(line)
            anchor_id, anchor_hash, anchor_count = anchor["id"], anchor["hash"], int(anchor["count"])
        except (ValueError, KeyError, TypeError):
            problems.append(f"anchor line {number} is not a valid anchor")
            continue
        if anchor_id is None:
            continue  # anchored an empty chain: anything since is consistent with it
        stored = AuditEvent.objects.filter(pk=anchor_id).values_list("hash", flat=True).first()
        if stored is None:
            problems.append(f"anchor line {number}: event {anchor_id} (head when anchored) is missing "
                            f"(events were deleted or the table was emptied)")
        elif stored != anchor_hash:
            problems.append(f"anchor line {number}: event {anchor_id} has a different hash than when anchored")
        else:
            count = AuditEvent.objects.filter(pk__lte=anchor_id).count()
            if count != anchor_count:
                problems.append(f"anchor line {number}: {count} events up to {anchor_id}, {anchor_count} when anchored")
    return problems
