"""`manage.py audit_verify`: recompute the audit hash chain; exit 1 naming the first broken event."""
from django.core.management.base import BaseCommand

from medassist.audit.services import audit_verify_chain


class Command(BaseCommand):
    help = "Verify the audit trail's SHA-256 hash chain. Exits non-zero at the first broken event."

    def handle(self, *args, **options):
        report = audit_verify_chain()
        if report.ok:
            self.stdout.write(f"audit chain OK: {report.checked} events verified")
            return
        self.stderr.write(f"audit chain BROKEN at event {report.broken_id}: {report.reason} "
                          f"({report.checked} events before it verified)")
        raise SystemExit(1)
