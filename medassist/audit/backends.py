"""The password-login throttle: Django's ModelBackend behind a failed-login check
(settings.AUTHENTICATION_BACKENDS names it instead of ModelBackend; permissions work as in ModelBackend).

While the caller's IP or the username is over the failure limit (guard.py), a password login is refused
before the password is checked: ``PermissionDenied`` stops Django's ``authenticate()``, which then sends
``user_login_failed``; signals.py counts that attempt without writing an audit row.
"""
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from . import guard
from .services import client_ip

# Set on the request when this backend refused it, so the failure signal only counts it.
BLOCKED_FLAG = "medassist_login_blocked"


class LoginThrottleBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is not None and username is not None:
            attempt = guard.Attempt.for_password(ip=client_ip(request), username=username)
            if guard.auth_blocked(attempt) is not None:
                setattr(request, BLOCKED_FLAG, True)
                raise PermissionDenied("too many failed logins")
        return super().authenticate(request, username=username, password=password, **kwargs)
