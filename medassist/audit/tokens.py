"""API tokens: issued, rotated and revoked only here, so that every change is audited.

Tokens are django-rest-knox ``AuthToken`` rows: the database holds a SHA-512 digest and the first 15
characters (``token_key``, to find the row), never the token; each expires
``MEDASSIST_TOKEN_TTL_HOURS`` after it is issued. The token itself is returned once (with its row), to be shown once.
"""
from __future__ import annotations

from django.db import transaction
from knox.models import AuthToken

from .services import audit_record


def _detail(token: AuthToken, via: str, **extra) -> dict:
    return {"via": via, "username": token.user.get_username(), "token_key": token.token_key[:8],
            "expiry": token.expiry.isoformat() if token.expiry else None, **extra}


@transaction.atomic
def token_create(*, user, via: str, actor=None, actor_name: str = "", ip: str | None = None) -> tuple[str, AuthToken]:
    """Issue a new token for ``user`` (earlier ones stay valid); audited as ``token.create``."""
    token, key = AuthToken.objects.create(user=user)
    audit_record(action="token.create", actor=actor, actor_name=actor_name, ip=ip, object_type="auth.user",
                 object_id=user.pk, detail=_detail(token, via))
    return key, token


@transaction.atomic
def token_rotate(*, user, via: str, current: AuthToken | None = None, actor=None, actor_name: str = "",
                 ip: str | None = None) -> tuple[str, AuthToken]:
    """Revoke ``current`` (or, without it, every token of ``user``) and issue a new one; audited as
    ``token.rotate``. Nothing changes unless both happen."""
    old = AuthToken.objects.filter(user=user)
    if current is not None:
        old = old.filter(pk=current.pk)
    revoked, _ = old.delete()
    token, key = AuthToken.objects.create(user=user)
    audit_record(action="token.rotate", actor=actor, actor_name=actor_name, ip=ip, object_type="auth.user",
                 object_id=user.pk, detail=_detail(token, via, revoked=revoked))
    return key, token
