"""What an audit event stores, and the canonical bytes its hash covers (hash version 2).

Version 1 hashed the values the application held before the insert, so whatever the database
changed on the way in (an ``inet`` column normalising ``1.2.3.4/32``, jsonb dropping the sign of
``-0.0`` or turning ``1e16`` into an integer, refusing ``\\u0000`` or ``NaN``) left the stored row
different from what was hashed, or made the insert fail. Version 2 does two things:

* ``storable_*`` turn every value into one that both SQLite and Postgres store and give back
  unchanged (up to key order and integral floats): IPs are validated and normalised (invalid ->
  ``None``), NUL characters and lone surrogates in any string become U+FFFD, non-finite floats
  (``inf``, ``-inf``, ``nan``, what ``1e309`` parses to) become the strings ``"Infinity"``,
  ``"-Infinity"`` and ``"NaN"``, ``-0.0`` becomes ``0.0``, tuples become lists, other objects their
  ``str``, dictionary keys strings (as json.dumps writes them); strings are cut to their column's
  length; nesting past 32 levels and integers too long to print become short placeholder strings.
* ``canonical_v2`` serialises the values *as read back*: sorted keys, integral floats written as
  integers (jsonb gives ``1e16`` back as an int), other floats by their shortest repr, IPs in
  ``ipaddress`` form, times in UTC with microseconds.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math

HASH_VERSION = 2
# Version 3: the same canonical form, hashed with HMAC-SHA256 under MEDASSIST_AUDIT_HMAC_KEY (services.py).
KEYED_HASH_VERSION = 3
REPLACEMENT = "\ufffd"


def clean_ip(value) -> str | None:
    """A valid IPv4/IPv6 address in normal form, or None (no zone ids: Postgres inet refuses them)."""
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None
    return str(address)


def storable_text(value, max_length: int | None = None) -> str:
    text = "" if value is None else str(value)
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: neither UTF-8 nor Postgres text can hold them
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text[:max_length] if max_length else text


def _json_key(key) -> str:
    """The key json.dumps would write (True -> "true", 1 -> "1"); other objects by their str."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(storable_json(key))
    return str(key)


def storable_json(value, _depth: int = 0):
    """``value`` as JSON that SQLite and Postgres (jsonb) store and return unchanged."""
    if _depth > 32:
        return "<nested too deeply>"  # never fail the insert: the event is recorded, the detail cut
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Python will not print an int of over 4,300 digits; write such a number as text.
        return value if value.bit_length() <= 12_000 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return 0.0 if value == 0 else value
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(_json_key(k)): storable_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_json(v, _depth + 1) for v in value]
    return storable_text(value)


def _canonical_value(value):
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # 1.0 == 1 and -0.0 == 0: jsonb may give either form back
    if isinstance(value, dict):
        return {k: _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_value(v) for v in value]
    return value


def canonical_v2(*, created_at: dt.datetime, actor_id, actor_username, action, object_type, object_id,
                 model_version, ip, detail, version: int = HASH_VERSION) -> str:
    payload = {
        "v": version,
        "created_at": created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "actor_username": actor_username,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "model_version": model_version,
        "ip": None if ip is None else (clean_ip(ip) or str(ip)),
        "detail": _canonical_value(detail),
    }
    # ensure_ascii: the bytes hashed never depend on how a string's characters are encoded.
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
