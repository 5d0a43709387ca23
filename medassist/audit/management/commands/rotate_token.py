"""`manage.py rotate_token USERNAME`: revoke every API token of a user and print a new one (only the token).

Audited as ``token.rotate`` with the operating-system user as actor. Tokens are stored hashed: a lost
token cannot be shown again, only replaced this way.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from medassist.audit.services import os_actor
from medassist.audit.tokens import token_rotate


class Command(BaseCommand):
    help = "Revoke all API tokens of USERNAME and print a new one, and nothing else, on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: its tokens would not authenticate")
        key, _ = token_rotate(user=user, via="command", actor_name=os_actor())
        self.stdout.write(key)
