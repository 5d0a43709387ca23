"""Registering and promoting model versions."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from medassist.audit.services import audit_record

from .models import ModelVersion


@transaction.atomic
def model_version_promote(*, version: ModelVersion, actor=None, ip: str | None = None, reason: str = "") -> ModelVersion:
    """Make ``version`` the active one of its role; the previous active one is retired. Audited."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    previous = list(ModelVersion.objects.select_for_update()
                    .filter(role=version.role, status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk))
    # Retire first: the partial unique index allows one active row per role at any moment.
    ModelVersion.objects.filter(pk__in=[p.pk for p in previous]).update(status=ModelVersion.Status.RETIRED)
    version.status = ModelVersion.Status.ACTIVE
    version.promoted_at = timezone.now()
    version.save(update_fields=["status", "promoted_at"])
    audit_record(
        action="model.promote", actor=actor, ip=ip, object_type="registry.modelversion", object_id=version.pk,
        model_version=version.label,
        detail={"role": version.role, "previous": [p.label for p in previous], "reason": reason},
    )
    return version


@transaction.atomic
def model_version_register(*, role: str, name: str, format: str, activate_if_none: bool = True, **fields) -> ModelVersion:
    """Create (or return the existing) version; make it active when its role has none yet."""
    version, _ = ModelVersion.objects.get_or_create(role=role, name=name, format=format, defaults=fields)
    has_active = ModelVersion.objects.filter(role=role, status=ModelVersion.Status.ACTIVE).exists()
    if activate_if_none and not has_active:
        version = model_version_promote(version=version, reason="first version of its role")
    return version


def model_version_active(*, role: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(role=role, status=ModelVersion.Status.ACTIVE).first()
