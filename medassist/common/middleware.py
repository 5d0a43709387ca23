"""Request middleware for deployment safety (issue 13, deployment defaults).

``ForwardedProtoFromTrustedProxies`` drops ``X-Forwarded-Proto`` unless the direct peer
(REMOTE_ADDR) is one of ``MEDASSIST_TRUSTED_PROXIES``. Django's ``SECURE_PROXY_SSL_HEADER`` believes
that header from anyone; with this middleware in front, only a configured proxy can say a request
arrived over HTTPS (which decides the HTTPS redirect and ``request.is_secure()``).
"""
from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

HEADER = "HTTP_X_FORWARDED_PROTO"


def trusted_proxy_networks(entries) -> tuple:
    try:
        return tuple(ipaddress.ip_network(str(e).strip(), strict=False) for e in entries or () if str(e).strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"MEDASSIST_TRUSTED_PROXIES: {exc}") from exc


def is_trusted_proxy(address: str | None, networks) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


class ForwardedProtoFromTrustedProxies:
    def __init__(self, get_response):
        self.get_response = get_response
        self.networks = trusted_proxy_networks(getattr(settings, "MEDASSIST_TRUSTED_PROXIES", ()))

    def __call__(self, request):
        if HEADER in request.META and not is_trusted_proxy(request.META.get("REMOTE_ADDR"), self.networks):
            del request.META[HEADER]
        return self.get_response(request)
