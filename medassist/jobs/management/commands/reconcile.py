"""``manage.py reconcile [--loop]``: re-send chunks that have no live delivery, finalise finished jobs.

Run one ``--loop`` process beside the workers (compose's ``reconcile`` service); running two at once is
safe. A database or broker outage is logged and waited out, never fatal to the loop.
"""
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from medassist.jobs.reconcile import jobs_reconcile


class Command(BaseCommand):
    help = "Re-send chunks with no live delivery and finalise jobs whose items are all final."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="run a pass every --interval seconds, for ever")
        parser.add_argument("--interval", type=float, default=None,
                            help="seconds between passes (default: MEDASSIST_RECONCILE_INTERVAL)")

    def handle(self, *args, loop=False, interval=None, **options):
        interval = interval or settings.MEDASSIST_RECONCILE_INTERVAL
        if loop:
            self.stdout.write(f"reconcile: a pass every {interval:g} s", ending="\n")
            self.stdout.flush()
        while True:
            try:
                report = jobs_reconcile()
            except DatabaseError as exc:
                close_old_connections()
                self.stderr.write(f"reconcile: database unreachable ({type(exc).__name__}); trying again")
            else:
                if report or not loop:
                    self.stdout.write(f"reconcile: sent {report.sent} chunk(s), failed {report.failed_chunks} "
                                      f"chunk(s) ({report.failed_items} items), finalised {report.finalised} job(s)"
                                      + (f", {report.send_errors} broker error(s)" if report.send_errors else ""))
                    self.stdout.flush()
            if not loop:
                return
            close_old_connections()
            time.sleep(interval)
