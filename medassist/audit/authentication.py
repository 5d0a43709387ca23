"""Token authentication that records failed attempts in the audit trail."""
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from medassist.audit.services import audit_record, client_ip


class AuditedTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            # Never store the presented token: only that a bad one was presented, from where.
            audit_record(action="auth.login_failed", ip=client_ip(request),
                         detail={"via": "token", "reason": str(exc.detail), "path": request.path[:200]})
            raise
