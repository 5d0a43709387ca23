"""Failed-login throttle: a flood of bad tokens or passwords never reaches the database or the audit trail.

DRF throttles run after authentication, and every failed authentication appends an audit row under
the chain's global lock, rows nobody can delete. So failures are counted here first, in the cache
(Redis in production, per process in the embedded default), per fixed window of
``MEDASSIST_AUTH_FAILURE_WINDOW`` seconds and per key:

* the client IP (an IPv6 address by its /64: one host owns a whole /64),
* for API tokens, the token prefix (knox's ``token_key``, the first 15 characters), so guessing the
  rest of one token is limited however many addresses it comes from,
* for passwords, the username.

Keys are stored as digests, never as the token or the username. Once a key has
``MEDASSIST_AUTH_FAILURE_LIMIT`` failures in the window, every attempt that matches it is refused
before any database lookup (the API answers 429 with Retry-After).

Repeats are collapsed: per IP and window only the first failure is written as an ``auth.login_failed``
event; reaching the limit writes one ``auth.throttled`` event with the count; everything else is only
counted, and the next event written for that IP says how many attempts went unwritten before it
(``unwritten_before``). A flood therefore costs at most two rows per source and window.
"""
from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

from .services import audit_record

# How long the unwritten-attempts tally of an IP is kept waiting for its next event.
_UNWRITTEN_TTL_S = 7 * 24 * 3600


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def ip_key(ip: str | None) -> str:
    """The IP itself, an IPv6 address as its /64 network, or "unknown"."""
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "unknown"
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class Attempt:
    """One authentication attempt: who it comes from and what it tries."""

    ip: str | None
    keys: dict[str, str] = field(default_factory=dict)  # kind -> digest, e.g. {"ip": ..., "prefix": ...}

    @classmethod
    def for_token(cls, *, ip: str | None, token: bytes | str) -> Attempt:
        from knox.settings import CONSTANTS

        if isinstance(token, bytes):
            token = token.decode("latin-1")  # as the header arrived: every byte maps to one character
        keys = {"ip": ip_key(ip)}
        if token:
            keys["prefix"] = _digest(token[:CONSTANTS.TOKEN_KEY_LENGTH])
        return cls(ip=ip, keys=keys)

    @classmethod
    def for_password(cls, *, ip: str | None, username: str) -> Attempt:
        return cls(ip=ip, keys={"ip": ip_key(ip), "username": _digest(str(username or "").casefold())})


def _limit() -> int:
    return max(1, int(settings.MEDASSIST_AUTH_FAILURE_LIMIT))


def _window_s() -> int:
    return max(1, int(settings.MEDASSIST_AUTH_FAILURE_WINDOW))


def _window() -> tuple[int, int]:
    """The current window's number and the seconds left in it."""
    now, size = time.time(), _window_s()
    number = int(now // size)
    return number, max(1, int((number + 1) * size - now))


def _counter(kind: str, key: str, window: int) -> str:
    return f"medassist:authfail:{kind}:{key}:{window}"


def _unwritten(attempt: Attempt) -> str:
    return f"medassist:authfail:unwritten:{attempt.keys.get('ip', 'unknown')}"


def _incr(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout)
        return 1


def auth_blocked(attempt: Attempt) -> int | None:
    """Seconds until the attempt may be tried again when one of its keys is over the limit, else None."""
    window, left = _window()
    counts = cache.get_many([_counter(kind, key, window) for kind, key in attempt.keys.items()])
    return left if any(int(count) >= _limit() for count in counts.values()) else None


def _take_unwritten(attempt: Attempt) -> int:
    key = _unwritten(attempt)
    count = cache.get(key) or 0
    if count:
        cache.delete(key)
    return int(count)


def _count(attempt: Attempt) -> dict[str, int]:
    window, _ = _window()
    timeout = 2 * _window_s()
    return {kind: _incr(_counter(kind, key, window), timeout) for kind, key in attempt.keys.items()}


def auth_refused(attempt: Attempt) -> None:
    """An attempt refused while blocked: counted, never written. Only counters that exist are raised, so a
    flood of random tokens adds no cache keys (a small per-process cache would evict the blocking one)."""
    window, _ = _window()
    for kind, key in attempt.keys.items():
        try:
            cache.incr(_counter(kind, key, window))
        except ValueError:  # no failures under this key in this window
            pass
    _incr(_unwritten(attempt), _UNWRITTEN_TTL_S)


def auth_failure(attempt: Attempt, *, detail: dict, actor=None) -> str | None:
    """Count a failed attempt; append an audit event when it is the first of its IP in this window, or
    the one that reaches the limit. Returns the action written, or None when only counted."""
    counts = _count(attempt)
    limit = _limit()
    reached = sorted(kind for kind, count in counts.items() if count == limit)
    if counts.get("ip") == 1 and not reached:
        action, extra = "auth.login_failed", {}
    elif reached:
        action = "auth.throttled"
        extra = {"failures": max(counts.values()), "limit": limit, "window_s": _window_s(), "blocked": reached}
    else:
        _incr(_unwritten(attempt), _UNWRITTEN_TTL_S)
        return None
    unwritten = _take_unwritten(attempt)
    if unwritten:
        extra["unwritten_before"] = unwritten
    audit_record(action=action, actor=actor, ip=attempt.ip, detail={**detail, **extra})
    return action
