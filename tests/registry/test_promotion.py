"""Promotion checked against the active version's evaluation scores, forced promotion, rollback: services, API, admin."""
import pytest
from django.contrib.messages import get_messages

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_verify_chain
from medassist.registry.models import ModelVersion
from medassist.registry.services import (
    PromotionRefused,
    RollbackImpossible,
    compare_versions,
    model_version_promote,
    model_version_rollback,
)

FOLD = "pubmedqa-fold-1"


def scores(accuracy=None, nll=None, key=FOLD, n=100) -> dict:
    evaluation = {"n": n, "name": "PubMedQA fold 1"}
    if accuracy is not None:
        evaluation["accuracy"] = accuracy
    if nll is not None:
        evaluation["nll"] = nll
    return {"evaluations": {key: evaluation}}


def version(name: str, *, role="generator", status="candidate", metrics=None, promoted_at=None) -> ModelVersion:
    return ModelVersion.objects.create(role=role, name=name, format="torch-fp32", status=status,
                                       metrics=metrics or {}, promoted_at=promoted_at)


@pytest.fixture
def active(db):
    """The active generator, promoted through the service so it has a promotion time."""
    return model_version_promote(version=version("base", metrics=scores(accuracy=0.61, nll=1.20)))


@pytest.fixture
def staff(make_user, client_for):
    """A user allowed to promote (the permission through a group; no staff flag needed)."""
    return client_for(make_user("root", perms=("registry.promote_modelversion",)))


def statuses(*versions) -> tuple:
    return tuple(ModelVersion.objects.get(pk=v.pk).status for v in versions)


# --- compare_versions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("candidate, worse", [
    (scores(accuracy=0.606, nll=1.21), []),  # within tolerance: 0.004 lower, 0.8% higher
    (scores(accuracy=0.52, nll=1.20), ["accuracy on pubmedqa-fold-1: 0.520 < active 0.610"]),
    (scores(accuracy=0.61, nll=1.25), ["nll on pubmedqa-fold-1: 1.250 > active 1.200"]),
    (scores(accuracy=0.70, nll=0.90), []),
])
def test_compare_applies_direction_and_tolerance_per_metric(active, candidate, worse):
    comparison = compare_versions(version("c", metrics=candidate), active)
    assert comparison.comparable and comparison.worse == worse
    assert comparison.detail["sets"][FOLD]["metrics"]["accuracy"]["active"] == 0.61


def test_compare_ignores_sets_not_shared_and_unknown_metrics(active):
    other = {"evaluations": {"medqa": {"accuracy": 0.1, "n": 5}, FOLD: {"bleu": 0.0, "accuracy": True}}}
    comparison = compare_versions(version("c", metrics=other), active)
    assert (comparison.comparable, comparison.worse) == (False, [])
    assert comparison.detail["not_shared"] == ["medqa"]
    assert not compare_versions(version("empty"), active).comparable


# --- services ------------------------------------------------------------------------------------------------

def test_refusal_raises_and_keeps_its_audit_event(active, alice):
    worse = version("worse", metrics=scores(accuracy=0.52))
    with pytest.raises(PromotionRefused) as refused:
        model_version_promote(version=worse, actor=alice, reason="try")
    assert refused.value.comparison.worse == ["accuracy on pubmedqa-fold-1: 0.520 < active 0.610"]
    assert statuses(active, worse) == ("active", "candidate")
    event = AuditEvent.objects.get(action="model.promote_refused")
    assert event.actor_username == "alice" and event.detail["active"] == active.label
    assert not AuditEvent.objects.filter(action="model.promote", object_id=str(worse.pk)).exists()
    assert audit_verify_chain().ok


def test_force_needs_a_reason_and_promoting_the_active_version_is_a_no_op(active):
    with pytest.raises(ValueError, match="reason"):
        model_version_promote(version=version("worse", metrics=scores(accuracy=0.1)), force=True, reason="  ")
    before = AuditEvent.objects.count()
    assert model_version_promote(version=active).pk == active.pk
    assert AuditEvent.objects.count() == before


def test_rollback_service_toggles_between_the_last_two_active_versions(active):
    newer = model_version_promote(version=version("newer", metrics=scores(accuracy=0.7)))
    assert model_version_rollback(role="generator").pk == active.pk
    assert statuses(active, newer) == ("active", "retired")
    assert model_version_rollback(role="generator").pk == newer.pk
    with pytest.raises(RollbackImpossible, match="embedder role has no previously active version"):
        model_version_rollback(role="embedder")


# --- API -----------------------------------------------------------------------------------------------------

def promote(client, v, **body):
    return client.post(f"/api/v1/models/{v.pk}/promote/", body, format="json")


def test_list_and_detail_for_any_user_with_filters(api, active):
    candidate = version("candidate", metrics=scores(accuracy=0.7))
    version("embedder", role="embedder")
    body = api.get("/api/v1/models/", {"role": "generator"}).json()
    assert body["count"] == 2 and {r["name"] for r in body["results"]} == {"base", "candidate"}
    assert [r["id"] for r in api.get("/api/v1/models/", {"status": "active"}).json()["results"]] == [active.pk]
    assert api.get("/api/v1/models/", {"status": "bogus"}).status_code == 400
    detail = api.get(f"/api/v1/models/{candidate.pk}/").json()
    assert detail["label"] == candidate.label and detail["metrics"] == scores(accuracy=0.7)
    assert set(detail) == {"id", "label", "role", "name", "format", "status", "checksum", "size_bytes", "metrics",
                           "config", "parent", "created_at", "promoted_at"}
    assert api.get("/api/v1/models/999999/").status_code == 404


def test_promote_a_better_candidate(staff, active):
    better = version("better", metrics=scores(accuracy=0.70, nll=1.0))
    response = promote(staff, better, reason="higher accuracy")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "active" and response.json()["promoted_at"]
    assert statuses(active, better) == ("retired", "active")
    event = AuditEvent.objects.get(action="model.promote", object_id=str(better.pk))
    assert event.actor_username == "root" and event.ip == "127.0.0.1" and event.model_version == better.label
    assert event.detail["previous"] == [active.label] and event.detail["forced"] is False
    assert event.detail["reason"] == "higher accuracy" and event.detail["comparison"]["worse"] == []


def test_worse_candidate_is_refused_with_the_metric_lines_and_audited(staff, active):
    worse = version("worse", metrics=scores(accuracy=0.52, nll=1.5))
    response = promote(staff, worse, reason="try")
    assert response.status_code == 409, response.content
    assert response.json()["errors"]["metrics"] == ["accuracy on pubmedqa-fold-1: 0.520 < active 0.610",
                                                    "nll on pubmedqa-fold-1: 1.500 > active 1.200"]
    assert "force" in response.json()["detail"]
    assert statuses(active, worse) == ("active", "candidate")
    event = AuditEvent.objects.get(action="model.promote_refused")
    assert event.object_id == str(worse.pk) and event.actor_username == "root" and event.ip == "127.0.0.1"
    assert event.detail["comparison"]["worse"] == response.json()["errors"]["metrics"]


def test_forced_promotion_with_a_reason_is_audited_as_forced(staff, active):
    worse = version("worse", metrics=scores(accuracy=0.52))
    response = promote(staff, worse, force=True, reason="the fold-1 labels were found to be wrong")
    assert response.status_code == 200, response.content
    assert statuses(active, worse) == ("retired", "active")
    event = AuditEvent.objects.get(action="model.promote", object_id=str(worse.pk))
    assert event.detail["forced"] is True and event.detail["reason"] == "the fold-1 labels were found to be wrong"
    assert event.detail["comparison"]["worse"] == ["accuracy on pubmedqa-fold-1: 0.520 < active 0.610"]


@pytest.mark.parametrize("body, field", [
    ({"force": True}, "reason"),
    ({"force": True, "reason": "   "}, "reason"),
    ({"force": "maybe", "reason": "x"}, "force"),
    ({"reason": ["a list"]}, "reason"),
])
def test_bad_promote_bodies_are_400_with_field_errors(staff, active, body, field):
    worse = version("worse", metrics=scores(accuracy=0.52))
    response = promote(staff, worse, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert statuses(active, worse) == ("active", "candidate")


def test_promote_and_rollback_need_the_promote_permission_not_staff(api, active, make_user, client_for):
    better = version("better", metrics=scores(accuracy=0.7))
    for client in (api, client_for(make_user("root", staff=True))):  # staff status alone is not enough
        assert promote(client, better, reason="x").status_code == 403
        assert client.post("/api/v1/models/rollback/", {"role": "generator"}, format="json").status_code == 403
    assert statuses(active, better) == ("active", "candidate")


def test_rollback_restores_the_previously_active_version_and_is_audited(staff, active):
    newer = version("newer", metrics=scores(accuracy=0.7))
    assert promote(staff, newer).status_code == 200
    response = staff.post("/api/v1/models/rollback/", {"role": "generator", "reason": "latency regression"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == active.pk and response.json()["status"] == "active"
    assert statuses(active, newer) == ("active", "retired")
    event = AuditEvent.objects.get(action="model.rollback")
    assert event.detail == {"role": "generator", "from": newer.label, "to": active.label, "reason": "latency regression"}
    assert event.actor_username == "root" and event.ip == "127.0.0.1"


def test_rollback_without_history_is_409_and_unknown_role_is_400(staff, active):
    response = staff.post("/api/v1/models/rollback/", {"role": "generator"}, format="json")
    assert response.status_code == 409 and "no previously active version" in response.json()["detail"]
    bad = staff.post("/api/v1/models/rollback/", {"role": "painter"}, format="json")
    assert bad.status_code == 400 and "role" in bad.json()["errors"]
    assert not AuditEvent.objects.filter(action="model.rollback").exists()


def test_schema_lists_the_model_endpoints(api):
    schema = api.get("/api/v1/schema/").content
    for path in (b"/api/v1/models/", b"/api/v1/models/{version_id}/promote/", b"/api/v1/models/rollback/"):
        assert path in schema


# --- Django admin --------------------------------------------------------------------------------------------

CHANGELIST = "/admin/registry/modelversion/"


def run_action(admin_client, action, *versions, **extra):
    return admin_client.post(CHANGELIST, {"action": action, "_selected_action": [v.pk for v in versions], **extra},
                             follow=True)


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_admin_promote_checks_scores_and_explains_a_refusal(admin_client, active):
    worse = version("worse", metrics=scores(accuracy=0.52))
    refused = run_action(admin_client, "promote", worse)
    assert "accuracy on pubmedqa-fold-1: 0.520 < active 0.610" in texts(refused)
    assert any("Force promote" in m for m in texts(refused))
    assert statuses(active, worse) == ("active", "candidate")
    assert AuditEvent.objects.filter(action="model.promote_refused", actor_username="admin").exists()
    better = version("better", metrics=scores(accuracy=0.7))
    assert f"{better.label} is now active." in texts(run_action(admin_client, "promote", better))
    assert statuses(active, better) == ("retired", "active")


def test_admin_force_promote_asks_for_a_reason_then_promotes(admin_client, active):
    worse = version("worse", metrics=scores(accuracy=0.52))
    page = run_action(admin_client, "force_promote", worse)
    assert page.status_code == 200 and b"Reason (required)" in page.content
    assert b"accuracy on pubmedqa-fold-1: 0.520 &lt; active 0.610" in page.content
    again = run_action(admin_client, "force_promote", worse, post="yes", reason=" ")
    assert b"This field is required" in again.content and statuses(worse) == ("candidate",)
    done = run_action(admin_client, "force_promote", worse, post="yes", reason="fold-1 labels were wrong")
    assert f"{worse.label} is now active (forced)." in texts(done)
    assert statuses(active, worse) == ("retired", "active")
    event = AuditEvent.objects.get(action="model.promote", object_id=str(worse.pk))
    assert event.detail["forced"] is True and event.detail["reason"] == "fold-1 labels were wrong"
    assert event.actor_username == "admin"


def test_admin_rollback_action(admin_client, active):
    newer = model_version_promote(version=version("newer", metrics=scores(accuracy=0.7)))
    both = run_action(admin_client, "rollback_role", active, newer)
    assert "Select exactly one version to roll back its role." in texts(both)
    done = run_action(admin_client, "rollback_role", newer)
    assert f"{active.label} is active again." in texts(done)
    assert statuses(active, newer) == ("active", "retired")
    assert AuditEvent.objects.get(action="model.rollback").actor_username == "admin"
    embedder = version("minilm", role="embedder", status="active")
    assert any("no previously active version" in m for m in texts(run_action(admin_client, "rollback_role", embedder)))


def test_admin_change_page_shows_metrics_read_only(admin_client, active):
    page = admin_client.get(f"{CHANGELIST}{active.pk}/change/")
    assert page.status_code == 200
    assert b"&quot;accuracy&quot;: 0.61" in page.content and b'name="metrics"' not in page.content
