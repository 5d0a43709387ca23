"""`manage.py audit_verify [--anchor [PATH]]`: recompute the audit hash chain; exit 1 naming every broken event."""
from django.core.management.base import BaseCommand

from medassist.audit.services import audit_anchor_check, audit_verify_chain, default_anchor_path


class Command(BaseCommand):
    help = ("Verify the audit trail's SHA-256 hash chain. Lists every broken event and exits non-zero if any; "
            "with --anchor, also checks the heads that audit_anchor recorded outside the database.")

    def add_arguments(self, parser):
        parser.add_argument("--anchor", nargs="?", const="", default=None,
                            help=f"check the anchor file too (default {default_anchor_path()})")

    def handle(self, *args, anchor=None, **options):
        report = audit_verify_chain()
        problems = audit_anchor_check(anchor or None) if anchor is not None else []
        for broken in report.broken:
            self.stderr.write(f"audit chain BROKEN at event {broken.id}: {broken.reason}")
        if report.broken_count > len(report.broken):
            self.stderr.write(f"... and {report.broken_count - len(report.broken)} more broken events")
        for problem in problems:
            self.stderr.write(f"audit anchor MISMATCH: {problem}")
        if report.ok and not problems:
            anchored = " and consistent with the anchors" if anchor is not None else ""
            self.stdout.write(f"audit chain OK: {report.checked} events verified{anchored}")
            return
        if not report.ok:
            self.stderr.write(f"audit chain BROKEN: {report.broken_count} of {report.checked} events fail verification")
        raise SystemExit(1)
