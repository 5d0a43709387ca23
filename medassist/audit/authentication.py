"""Token authentication (django-rest-knox: tokens stored hashed, with an expiry) that throttles and
audits failed attempts.

A request whose IP or token prefix is over the failure limit gets 429 before the token is looked up
or anything is written (guard.py); a failure is counted and, collapsed, recorded in the audit trail.
The presented token is never stored.
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

from medassist.audit import guard
from medassist.audit.services import client_ip


class AuditedTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.authenticate_header(request).encode().lower():
            return None  # no token presented: another authenticator (or none) applies
        attempt = guard.Attempt.for_token(ip=client_ip(request), token=header[1] if len(header) > 1 else b"")
        retry_after = guard.auth_blocked(attempt)
        if retry_after is not None:
            guard.auth_refused(attempt)
            raise exceptions.Throttled(wait=retry_after, detail="Too many failed authentication attempts.")
        try:
            try:
                return super().authenticate(request)
            except UnicodeDecodeError:  # knox decodes the token as UTF-8: any other bytes are just a bad token
                raise exceptions.AuthenticationFailed("Invalid token.") from None
        except exceptions.AuthenticationFailed as exc:
            guard.auth_failure(attempt, detail={"via": "token", "reason": str(exc.detail),
                                                "path": request.path[:200]})
            raise


class AuditedTokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme, unchanged for clients: "Authorization: Token <key>" (tokenAuth)."""

    target_class = AuditedTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization",
                                                   token_prefix=self.target.authenticate_header(None))
