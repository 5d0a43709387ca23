"""`manage.py purge_expired [--dry-run]`: apply MEDASSIST_RETENTION_DAYS (issue 13, privacy).

Deletes the inputs and results of every final job older than its kind's retention (the job row, its
counts and audit events stay; its status becomes ``purged``). Meant to run periodically: cron, a
systemd timer or a Kubernetes CronJob, e.g. hourly (see the README). Audited per job as ``job.purge``
with the OS user running the command as actor.
"""
from django.conf import settings
from django.core.management.base import BaseCommand

from medassist.audit.services import os_actor
from medassist.jobs.retention import jobs_expired, purge_expired


class Command(BaseCommand):
    help = "Delete inputs and results of final jobs past their kind's retention (MEDASSIST_RETENTION_DAYS)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count the jobs due, delete nothing")

    def handle(self, *args, dry_run: bool = False, **options):
        configured = ", ".join(f"{k}={v}" for k, v in sorted(settings.MEDASSIST_RETENTION_DAYS.items())) or "none"
        if dry_run:
            due = jobs_expired().count()
            self.stdout.write(f"retention (days): {configured}; {due} job(s) due; nothing deleted (--dry-run)")
            return
        done = purge_expired(actor_name=os_actor())
        summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(done.items())) or "none"
        self.stdout.write(f"retention (days): {configured}; purged {sum(done.values())} job(s) ({summary})")
