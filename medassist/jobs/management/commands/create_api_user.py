"""`manage.py create_api_user NAME [--group GROUP ...]`: create (or reuse) a user and print only its API token.

Rights come from Django permissions given through groups, checked alike by the API and the admin
(staff status alone grants none). ``--group`` adds the user to a group; the built-in groups below are
created (and given their permissions) on first use, any other group must already exist (Django admin).
"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError

from medassist.audit.services import os_actor
from medassist.audit.tokens import token_create

# Built-in groups: name -> permissions ("app_label.codename").
BUILTIN_GROUPS: dict[str, tuple[str, ...]] = {
    # sees and exports every user's jobs (the API's job list and the admin)
    "job-viewers": ("jobs.view_all_jobs",),
    # runs fine-tuning jobs and promotes / rolls back model versions
    "model-managers": ("jobs.run_finetune", "registry.promote_modelversion"),
    # all of the above, plus the noop diagnostics kind (the bench_* commands use this group)
    "operators": ("jobs.view_all_jobs", "jobs.run_finetune", "jobs.run_diagnostics", "registry.promote_modelversion"),
}


def ensure_group(name: str) -> Group:
    """The group ``name``: a built-in one is created with its permissions if need be; others must exist."""
    if name not in BUILTIN_GROUPS:
        group = Group.objects.filter(name=name).first()
        if group is None:
            raise CommandError(f"no group {name!r}: create it in the admin, or use one of {', '.join(BUILTIN_GROUPS)}")
        return group
    group, _ = Group.objects.get_or_create(name=name)
    for perm in BUILTIN_GROUPS[name]:
        app_label, codename = perm.split(".", 1)
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is None:
            raise CommandError(f"permission {perm} does not exist: run `manage.py migrate` first")
        group.permissions.add(permission)
    return group


class Command(BaseCommand):
    help = "Create an API user (or reuse an existing one) and print its token, and nothing else, on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", action="append", default=[], dest="groups", metavar="GROUP",
                            help=f"add the user to this group (repeatable); built in: {', '.join(BUILTIN_GROUPS)}")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, groups, email, **options):
        wanted = [ensure_group(name) for name in groups]  # an unknown group fails before any user is made
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
        if created:
            user.set_unusable_password()  # an API user authenticates with its token
        user.save()
        user.groups.add(*wanted)
        # Tokens are stored hashed, so an existing one cannot be shown again: every run issues a new one
        # (audited, the OS user as actor); `rotate_token` revokes the old ones.
        key, _ = token_create(user=user, via="create_api_user", actor_name=os_actor())
        self.stdout.write(key)
