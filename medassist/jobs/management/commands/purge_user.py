"""`manage.py purge_user USERNAME [--yes]`: deactivate a user and delete their data (issue 13, privacy).

Every job of theirs is purged (inputs and results deleted; rows, counts and audit events kept), their
API tokens and their own corpus documents are deleted, and the account is deactivated. The user row
stays so that audit events keep naming the actor. Audited as ``user.purge`` (and ``job.purge`` per job)
with the OS user as actor.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from medassist.audit.services import os_actor
from medassist.jobs.retention import user_purge


class Command(BaseCommand):
    help = "Deactivate a user and delete their job inputs and results, tokens and corpus documents."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--reason", default="user data deletion", help="recorded in the audit trail")

    def handle(self, *args, username: str, yes: bool = False, reason: str = "", **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if not yes and input(f"Delete all data of {username!r} and deactivate the account? [y/N] ").lower() != "y":
            raise CommandError("cancelled; nothing was changed")
        done = user_purge(user=user, actor_name=os_actor(), reason=reason)
        self.stdout.write(f"{done.username}: deactivated; {done.jobs_purged} job(s) purged, "
                          f"{done.documents_deleted} corpus document(s) and {done.tokens_deleted} token(s) deleted")
