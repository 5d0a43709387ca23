"""Registering, promoting and rolling back model versions.

A promotion replaces the active version of a role only when the candidate scores no worse on the
evaluation sets both have (``metrics["evaluations"]``, written by the fine-tuning code). A candidate
with no evaluation scores at all is never "worse" by that test, so it is refused as well: replacing an
active version with an unscored one needs ``force`` with a reason. A user with the
``registry.promote_modelversion`` permission may force a refusal with a reason. Promotions, refusals
and rollbacks are all audited.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from medassist.audit.services import audit_record

from .models import ModelVersion


@dataclass(frozen=True)
class MetricRule:
    higher_is_better: bool
    tolerance: float  # how much worse still counts as equal: evaluation sets are small, scores are noisy
    relative: bool  # tolerance as a fraction of the active version's value, else in the metric's own unit


# How each evaluation metric is compared; metrics not named here are ignored.
METRIC_RULES: dict[str, MetricRule] = {
    # accuracy: higher is better; worse when lower by more than 0.005 absolute (half a point)
    "accuracy": MetricRule(higher_is_better=True, tolerance=0.005, relative=False),
    # nll (mean negative log-likelihood): lower is better; worse when higher by more than 1% relative
    "nll": MetricRule(higher_is_better=False, tolerance=0.01, relative=True),
}


@dataclass(frozen=True)
class Comparison:
    """A candidate's scores against the active version's, on the evaluation sets both have."""

    comparable: bool  # at least one known metric was compared on a shared evaluation set
    worse: list[str] = field(default_factory=list)  # one readable line per metric that got worse
    detail: dict = field(default_factory=dict)  # JSON-able, for the audit trail


class PromotionRefused(Exception):
    """The candidate scores worse than the active version, or has no scores to compare; ``force`` with
    a reason overrides it. ``comparison.worse`` holds one readable line per reason."""

    def __init__(self, version: ModelVersion, active: ModelVersion, comparison: Comparison):
        self.version, self.active, self.comparison = version, active, comparison
        self.unscored = not has_scores(version)
        self.summary = (f"{version.label} has no evaluation scores to compare with the active {active.label}"
                        if self.unscored else f"{version.label} scores worse than the active {active.label}")
        super().__init__(f"{self.summary}: {'; '.join(comparison.worse)}")


class RollbackImpossible(Exception):
    """The role has no earlier active version to go back to."""


def _evaluations(version: ModelVersion) -> dict:
    metrics = version.metrics if isinstance(version.metrics, dict) else {}
    evaluations = metrics.get("evaluations")
    return evaluations if isinstance(evaluations, dict) else {}


def _score(value) -> float | None:
    # bool is an int to Python but never a score; NaN/inf would make every comparison meaningless.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def has_scores(version: ModelVersion) -> bool:
    """Whether ``version`` has at least one usable score (a known metric) on some evaluation set."""
    return any(isinstance(scores, dict) and any(_score(scores.get(metric)) is not None for metric in METRIC_RULES)
               for scores in _evaluations(version).values())


UNSCORED = "the candidate has no evaluation scores (metrics.evaluations): nothing shows it is no worse"


def compare_versions(candidate: ModelVersion, active: ModelVersion) -> Comparison:
    """Compare ``candidate`` with ``active`` metric by metric on the evaluation sets both were scored on.

    A candidate without any score counts as worse (``UNSCORED``): otherwise an unevaluated artifact
    would pass the check that an evaluated one can fail."""
    ours, theirs = _evaluations(candidate), _evaluations(active)
    shared = sorted(key for key in ours.keys() & theirs.keys()
                    if isinstance(ours[key], dict) and isinstance(theirs[key], dict))
    worse: list[str] = []
    sets: dict[str, dict] = {}
    for key in shared:
        compared = {}
        for metric, rule in METRIC_RULES.items():
            mine, reference = _score(ours[key].get(metric)), _score(theirs[key].get(metric))
            if mine is None or reference is None:
                continue
            margin = rule.tolerance * abs(reference) if rule.relative else rule.tolerance
            is_worse = mine < reference - margin if rule.higher_is_better else mine > reference + margin
            compared[metric] = {"candidate": mine, "active": reference, "worse": is_worse}
            if is_worse:
                sign = "<" if rule.higher_is_better else ">"
                worse.append(f"{metric} on {key}: {mine:.3f} {sign} active {reference:.3f}")
        if compared:
            sets[key] = {"metrics": compared, "n": {"candidate": ours[key].get("n"), "active": theirs[key].get("n")}}
    if not has_scores(candidate):
        worse.append(UNSCORED)
    detail = {
        "candidate": candidate.label,
        "active": active.label,
        "comparable": bool(sets),
        "sets": sets,
        "not_shared": sorted(ours.keys() ^ theirs.keys()),
        "worse": worse,
    }
    return Comparison(comparable=bool(sets), worse=worse, detail=detail)


def model_version_promote(*, version: ModelVersion, actor=None, ip: str | None = None, reason: str = "",
                          force: bool = False, actor_name: str = "") -> ModelVersion:
    """Make ``version`` the active one of its role; the previous active one is retired. Audited.

    Refused (``PromotionRefused``, audited as ``model.promote_refused``) when ``version`` scores worse
    than the active version on a shared evaluation set, unless ``force`` is set with a reason.
    """
    reason = (reason or "").strip()
    if force and not reason:
        raise ValueError("a forced promotion needs a reason: it is recorded in the audit trail")
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelVersion.Status.ACTIVE:
            return version  # already active: nothing changes, nothing to audit
        previous = list(ModelVersion.objects.select_for_update()
                        .filter(role=version.role, status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk))
        comparison = compare_versions(version, previous[0]) if previous else None
        if comparison is not None and comparison.worse and not force:
            # Decided before any write, so this block commits only the refusal's audit event.
            audit_record(
                action="model.promote_refused", actor=actor, actor_name=actor_name, ip=ip,
                object_type="registry.modelversion",
                object_id=version.pk, model_version=version.label,
                detail={"role": version.role, "active": previous[0].label, "reason": reason,
                        "comparison": comparison.detail},
            )
            refusal = PromotionRefused(version, previous[0], comparison)
        else:
            # Retire first: the partial unique index allows one active row per role at any moment.
            ModelVersion.objects.filter(pk__in=[p.pk for p in previous]).update(status=ModelVersion.Status.RETIRED)
            version.status = ModelVersion.Status.ACTIVE
            version.promoted_at = timezone.now()
            version.save(update_fields=["status", "promoted_at"])
            audit_record(
                action="model.promote", actor=actor, actor_name=actor_name, ip=ip, object_type="registry.modelversion",
                object_id=version.pk,
                model_version=version.label,
                detail={"role": version.role, "previous": [p.label for p in previous], "reason": reason,
                        "forced": bool(force), "comparison": comparison.detail if comparison else None},
            )
            return version
    # Raised outside the atomic block, so the refusal's audit event is kept (unless the caller's own
    # transaction rolls back).
    raise refusal


@transaction.atomic
def model_version_rollback(*, role: str, actor=None, ip: str | None = None, reason: str = "",
                           actor_name: str = "") -> ModelVersion:
    """Make the previously active version of ``role`` active again; the current one is retired. Audited.

    No metrics check: the version was active before. "Previously active" is the retired version of the
    role promoted most recently, so two rollbacks in a row switch back and forth.
    """
    if role not in ModelVersion.Role.values:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ModelVersion.Role.values)}")
    current = (ModelVersion.objects.select_for_update()
               .filter(role=role, status=ModelVersion.Status.ACTIVE).first())
    target = (ModelVersion.objects.select_for_update()
              .filter(role=role, status=ModelVersion.Status.RETIRED, promoted_at__isnull=False)
              .exclude(pk=current.pk if current else None)
              .order_by("-promoted_at", "-pk").first())
    if target is None:
        now = f" (the active one is {current.label})" if current else " (none is active)"
        raise RollbackImpossible(f"The {role} role has no previously active version to roll back to{now}.")
    if current is not None:
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    target.status = ModelVersion.Status.ACTIVE
    target.promoted_at = timezone.now()
    target.save(update_fields=["status", "promoted_at"])
    audit_record(
        action="model.rollback", actor=actor, actor_name=actor_name, ip=ip, object_type="registry.modelversion",
        object_id=target.pk,
        model_version=target.label,
        detail={"role": role, "from": current.label if current else None, "to": target.label, "reason": reason},
    )
    return target


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


def model_version_list() -> QuerySet[ModelVersion]:
    """Every version, by role, newest first (the API filters by role and status)."""
    return ModelVersion.objects.order_by("role", "-created_at", "-pk")
