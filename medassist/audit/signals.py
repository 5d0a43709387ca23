"""Audit hooks for events Django raises itself: failed logins and every Django-admin change."""
from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from .services import audit_record, client_ip


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    # credentials is already cleansed of the password by Django; keep only the username.
    audit_record(
        action="auth.login_failed",
        ip=client_ip(request),
        detail={"username": str(credentials.get("username", ""))[:150], "via": "password"},
    )


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
