"""Input and output shapes of the model-registry API."""
from rest_framework import serializers

from .models import ModelVersion


class ModelVersionSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True, help_text="how results name this version: role:name@format#id")

    class Meta:
        model = ModelVersion
        fields = ["id", "label", "role", "name", "format", "status", "checksum", "size_bytes", "metrics", "config",
                  "parent", "created_at", "promoted_at"]
        read_only_fields = fields


class PromoteSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="why; recorded in the audit trail (required with force)")
    force = serializers.BooleanField(required=False, default=False,
                                     help_text="promote even though the candidate scores worse than the active version")


class RollbackSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ModelVersion.Role.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="why; recorded in the audit trail")
