"""Model versions: every artifact that produces results (generator, embedder, concept dictionaries).

Exactly one version per role is ``active`` at a time (a partial unique constraint enforces it);
results record the version that produced them, so every answer is traceable to its model.
"""
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Role(models.TextChoices):
        GENERATOR = "generator"
        EMBEDDER = "embedder"
        CONCEPTS = "concepts"  # dictionary-based concept extraction (vocabulary packages)
        ANSWER_EVIDENCE = "answer_evidence"  # reads an abstract's conclusion for yes/no/maybe answers

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    role = models.CharField(max_length=20, choices=Role.choices)
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=40, help_text="e.g. torch-fp32, torch-int8, onnx-int8, dictionary")
    artifact_path = models.CharField(max_length=500, blank=True)
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the artifact set")
    size_bytes = models.BigIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["role", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["role", "name", "format"], name="unique_model_version"),
            models.UniqueConstraint(fields=["role"], condition=Q(status="active"), name="one_active_version_per_role"),
        ]
        # Promotion, forced promotion and rollback (API and admin); staff status alone is not enough.
        permissions = [("promote_modelversion", "Can promote, force-promote and roll back model versions")]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """How results name this version: ``role:name@format#id``."""
        return f"{self.role}:{self.name}@{self.format}#{self.pk}"
