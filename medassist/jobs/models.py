"""Jobs and their items: the system of record for every batch the portal submits.

A ``Job`` is one submission of one kind; its ``JobItem`` rows (unique per job and index) hold each
input and, once processed, its result or error. Counters on the job are updated atomically in the
same transaction that stores item results, so progress is exact even when chunks are redelivered.
"""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        PARTIALLY_FAILED = "partially_failed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        # privacy (issue 13): inputs and results deleted (retention or DELETE); row, counts, audit kept
        PURGED = "purged"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.PARTIALLY_FAILED, Status.FAILED, Status.CANCELLED, Status.PURGED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # privacy (issue 13): deleting a user keeps their (purged) job rows as the record, ownerless.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="jobs")
    kind = models.CharField(max_length=40, db_index=True)
    queue = models.CharField(max_length=20)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    source = models.JSONField(default=dict, blank=True, help_text="how the items arrived: inline or a file")
    total_items = models.PositiveIntegerField(default=0)
    succeeded_items = models.PositiveIntegerField(default=0)
    failed_items = models.PositiveIntegerField(default=0)
    chunk_size = models.PositiveIntegerField(default=64)
    model_version = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="jobs", help_text="main model version that produced the results")
    model_versions = models.JSONField(default=dict, blank=True, help_text="role -> version label, all used")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    error = models.TextField(blank=True)
    status_detail = models.JSONField(default=dict, blank=True,
                                     help_text="live progress a long-running kind reports (e.g. training step and loss)")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True, help_text="when its inputs and results were deleted")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "idempotency_key"], condition=Q(idempotency_key__isnull=False),
                                    name="unique_idempotency_key_per_owner"),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        # Access control (issue 13): given through groups; the API and the admin check the same ones.
        # Staff status alone grants none of them.
        permissions = [
            ("view_all_jobs", "Can see and export every user's jobs"),
            ("run_finetune", "Can run fine-tuning jobs"),
            ("run_diagnostics", "Can run the noop diagnostics kind (queue benchmarks)"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.status})"

    @property
    def processed_items(self) -> int:
        return self.succeeded_items + self.failed_items

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class JobItem(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    input = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_item_index_per_job")]
        indexes = [models.Index(fields=["job", "status", "index"])]

    def __str__(self) -> str:
        return f"item {self.index} of {self.job_id} ({self.status})"


class JobChunk(models.Model):
    """One Celery task's share of a job (items ``start <= index < end``) and the state of its delivery.

    Stored with the job, in the submit transaction: the database, not the broker, knows what is left to
    do. ``reconcile`` re-sends a chunk that has no live delivery (never sent, sent long ago and never
    started, or started and no longer heartbeating) and stops one that keeps killing its worker.
    """

    class State(models.TextChoices):
        PENDING = "pending"  # stored; not (yet) handed to the broker
        QUEUED = "queued"  # handed to the broker at enqueued_at
        RUNNING = "running"  # a delivery claimed it at started_at; it heartbeats while it runs
        DONE = "done"  # every item final (or the job is); nothing more to run

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    deliveries = models.PositiveSmallIntegerField(default=0, help_text="deliveries that started running it")
    time_limit = models.PositiveIntegerField(help_text="hard time limit of one delivery, seconds")
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "start"]
        constraints = [models.UniqueConstraint(fields=["job", "start"], name="unique_chunk_start_per_job")]
        indexes = [models.Index(fields=["state", "job"])]

    def __str__(self) -> str:
        return f"chunk {self.start}-{self.end} of {self.job_id} ({self.state})"
