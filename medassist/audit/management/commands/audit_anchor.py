"""`manage.py audit_anchor [--anchor PATH]`: append the audit chain's head to a file outside the database.

Run it periodically (cron, a Celery beat entry); `audit_verify --anchor` then notices events removed
from the end of the chain, a TRUNCATE, `flush` or `migrate audit zero`. Keep the file where the
database's users cannot write (another host, a write-once bucket) or ship the logged line too.
"""
import json

import structlog
from django.core.management.base import BaseCommand

from medassist.audit.services import audit_anchor_write, default_anchor_path


class Command(BaseCommand):
    help = "Append the audit chain's head (id, hash, count) to an anchor file that audit_verify --anchor checks."

    def add_arguments(self, parser):
        parser.add_argument("--anchor", default=None, help=f"anchor file (default {default_anchor_path()})")

    def handle(self, *args, anchor=None, **options):
        head = audit_anchor_write(anchor)
        structlog.get_logger("medassist.audit").info("audit.anchor", **head)
        self.stdout.write(f"audit anchor written to {anchor or default_anchor_path()}: {json.dumps(head, sort_keys=True)}")
