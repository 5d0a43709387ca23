"""`manage.py create_api_user NAME [--staff]`: create (or reuse) a user and print only its API token."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create an API user (or reuse an existing one) and print its token, and nothing else, on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="staff: sees every job, may run admin-only kinds")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, staff, email, **options):
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
        if created:
            user.set_unusable_password()  # an API user authenticates with its token
        if staff and not user.is_staff:
            user.is_staff = True
        user.save()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
