"""Model versions: one active per role, promotion retires the previous one and is audited."""
import pytest
from django.db import IntegrityError, transaction

from medassist.audit.models import AuditEvent
from medassist.registry.models import ModelVersion
from medassist.registry.services import model_version_promote, model_version_register


def test_first_version_of_a_role_becomes_active_and_promotion_retires_it(alice):
    first = model_version_register(role="generator", name="smollm2-135m", format="torch-fp32")
    second = model_version_register(role="generator", name="smollm2-135m", format="torch-int8")
    assert (first.status, second.status) == ("active", "candidate")
    model_version_promote(version=second, actor=alice, force=True, reason="smaller and as accurate")
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("retired", "active")
    event = AuditEvent.objects.filter(action="model.promote").last()
    assert event.actor_username == "alice" and event.model_version == second.label
    assert event.detail["previous"] == [first.label]


def test_database_refuses_two_active_versions_of_a_role(db):
    model_version_register(role="embedder", name="minilm", format="torch-fp32")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(role="embedder", name="other", format="onnx-int8", status="active")
