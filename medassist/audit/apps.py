from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "medassist.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from django.core import checks

        from . import signals  # noqa: F401  (login failures, admin changes)
        from .services import check_audit_key, check_trusted_proxies

        checks.register(check_trusted_proxies)
        checks.register(check_audit_key, checks.Tags.security, deploy=True)
