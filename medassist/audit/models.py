"""The audit trail: append-only, SHA-256 hash-chained events.

Each event stores who did what to which object, from where, with which model version. ``hash`` is
``sha256(prev_hash + canonical(event))``, where the canonical form depends on ``hash_version``
(1: the original ``canonical_json``, kept so old chains verify; 2: ``canonical.canonical_v2`` over
the values exactly as stored; 3: the same, hashed with HMAC-SHA256 under a key from the environment),
so changing or removing any row breaks the chain from that row on (``manage.py audit_verify`` finds it).
On Postgres triggers refuse UPDATE, DELETE and TRUNCATE.
The actor is stored by id and name, not as a foreign key: deleting a user must not rewrite history.
"""
from __future__ import annotations

import json

from django.db import models

from .canonical import HASH_VERSION, KEYED_HASH_VERSION, canonical_v2


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        JOB_SUBMIT = "job.submit"
        JOB_VIEW = "job.view"
        JOB_CANCEL = "job.cancel"
        JOB_FINISH = "job.finish"
        RESULTS_READ = "results.read"
        RESULTS_EXPORT = "results.export"
        LOGIN_FAILED = "auth.login_failed"
        ADMIN_CHANGE = "admin.change"
        MODEL_PROMOTE = "model.promote"
        MODEL_PROMOTE_REFUSED = "model.promote_refused"
        MODEL_ROLLBACK = "model.rollback"
        AUDIT_VERIFY = "audit.verify"
        # issue 13: throttled logins, listings, probing, corpus writes, token changes
        AUTH_THROTTLED = "auth.throttled"
        JOB_LIST = "job.list"
        JOB_NOT_FOUND = "job.not_found"
        CORPUS_WRITE = "corpus.write"
        TOKEN_CREATE = "token.create"
        TOKEN_ROTATE = "token.rotate"

    created_at = models.DateTimeField(db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    model_version = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # 1: events written before hash version 2 (verified the old way); audit_record writes 2.
    hash_version = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["action", "created_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor_username or '-'} on {self.object_type} {self.object_id}"

    def canonical(self) -> str:
        """The bytes this event's hash covers, by its hash version."""
        if self.hash_version == 1:
            return self.canonical_json()
        if self.hash_version in (HASH_VERSION, KEYED_HASH_VERSION):
            return canonical_v2(created_at=self.created_at, actor_id=self.actor_id,
                                actor_username=self.actor_username, action=self.action,
                                object_type=self.object_type, object_id=self.object_id,
                                model_version=self.model_version, ip=self.ip, detail=self.detail,
                                version=self.hash_version)
        raise ValueError(f"unknown audit hash version {self.hash_version!r}")

    def canonical_json(self) -> str:
        """Hash version 1 (legacy): the fields in a stable form (sorted keys, no spaces, UTC ISO times)."""
        payload = {
            "created_at": self.created_at.isoformat(),
            "actor_id": self.actor_id,
            "actor_username": self.actor_username,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "model_version": self.model_version,
            "ip": self.ip,
            "detail": self.detail,
        }
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
