"""Audit hooks for events Django raises itself: failed logins and every Django-admin change."""
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from . import guard
from .backends import BLOCKED_FLAG
from .services import audit_record, client_ip


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # credentials is already cleansed of the password by Django. The username is kept only when such an
    # account exists: a name that matches none is often a password typed into the wrong field.
    username = str(credentials.get("username", "") or "")
    attempt = guard.Attempt.for_password(ip=client_ip(request), username=username)
    if request is not None and getattr(request, BLOCKED_FLAG, False):
        guard.auth_refused(attempt)  # refused by the throttle: counted, not written
        return
    user_model = get_user_model()
    known = bool(username) and user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists()
    detail = {"username": username[:150], "via": "password"} if known else {"username": None, "via": "password",
                                                                           "unknown_username": True}
    guard.auth_failure(attempt, detail=detail)


@receiver(post_save, sender=LogEntry)
def _admin_change(sender, instance: LogEntry, created: bool, **kwargs):
    if not created:
        return
    flag = {1: "add", 2: "change", 3: "delete"}.get(instance.action_flag, str(instance.action_flag))
    audit_record(
        action="admin.change",
        actor=instance.user,
        object_type=f"{instance.content_type.app_label}.{instance.content_type.model}" if instance.content_type else "",
        object_id=instance.object_id or "",
        detail={"operation": flag, "object": instance.object_repr[:200], "message": instance.get_change_message()[:500]},
    )
