"""Access control (issue 13): permissions through groups, checked alike by the API and the admin;
promotion of an unscored candidate; registered artifact fields fixed; verified, code-free model loading;
fine-tuning resumes only from a run directory."""
import pickle
import re
from io import StringIO
from pathlib import Path

import pytest
import torch
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command

from medassist.audit.models import AuditEvent
from medassist.jobs.models import Job
from medassist.kinds import available_kinds
from medassist.registry.models import ModelVersion
from medassist.registry.services import UNSCORED, PromotionRefused, model_version_promote, model_version_register
from training.config import ConfigError, confined_resume_dir
from workers.runtime.store import ArtifactError, EngineSpec, directory_checksum, verify

ROOT = Path(__file__).resolve().parents[2]
FOLD = "pubmedqa-fold-1"
PROMOTE = "registry.promote_modelversion"
CHANGELIST = "/admin/registry/modelversion/"


def scored(accuracy: float) -> dict:
    return {"evaluations": {FOLD: {"n": 100, "accuracy": accuracy}}}


def version(name: str, *, metrics=None, **fields) -> ModelVersion:
    return ModelVersion.objects.create(role="generator", name=name, format="torch-fp32", metrics=metrics or {}, **fields)


@pytest.fixture
def active(db):
    return model_version_promote(version=version("base", metrics=scored(0.61)))


def status_of(v: ModelVersion) -> str:
    return ModelVersion.objects.get(pk=v.pk).status


# --- promotion of an unscored candidate ----------------------------------------------------------------------

def test_a_candidate_without_scores_is_refused_unless_forced_with_a_reason(active, alice):
    bare = version("no-metrics")
    with pytest.raises(PromotionRefused) as refused:
        model_version_promote(version=bare, actor=alice, reason="trust me")
    assert refused.value.unscored and UNSCORED in refused.value.comparison.worse
    assert (status_of(active), status_of(bare)) == ("active", "candidate")
    assert AuditEvent.objects.filter(action="model.promote_refused", object_id=str(bare.pk)).exists()
    with pytest.raises(ValueError, match="reason"):
        model_version_promote(version=bare, force=True, reason=" ")
    model_version_promote(version=bare, actor=alice, force=True, reason="re-exported base, same weights")
    assert (status_of(active), status_of(bare)) == ("retired", "active")
    assert AuditEvent.objects.get(action="model.promote", object_id=str(bare.pk)).detail["forced"] is True


def test_the_api_answers_409_for_an_unscored_candidate_and_promotes_it_when_forced(active, make_user, client_for):
    promoter = client_for(make_user("promoter", perms=(PROMOTE,)))
    bare = version("no-metrics")
    response = promoter.post(f"/api/v1/models/{bare.pk}/promote/", {"reason": "x"}, format="json")
    assert response.status_code == 409 and response.json()["errors"]["metrics"] == [UNSCORED]
    assert "no evaluation scores" in response.json()["detail"]
    response = promoter.post(f"/api/v1/models/{bare.pk}/promote/", {"reason": "checked by hand", "force": True},
                             format="json")
    assert response.status_code == 200 and status_of(bare) == "active"


def test_the_first_version_of_a_role_needs_no_scores(db):
    first = model_version_register(role="embedder", name="minilm", format="torch-fp32")
    assert first.status == "active"


# --- the admin checks the same permission as the API ---------------------------------------------------------

@pytest.fixture
def staff_admin(make_user, client):
    """Staff with every plain model permission of the registry, but not promote_modelversion."""
    user = make_user("staffer", staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="registry")
                              .exclude(codename="promote_modelversion"))
    client.force_login(user)
    return user


def run_action(client, action, v, **extra):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [v.pk], **extra}, follow=True)


def test_staff_without_the_permission_cannot_promote_or_roll_back_in_the_admin(active, staff_admin, client):
    better = version("better", metrics=scored(0.7))
    page = client.get(CHANGELIST)
    assert page.status_code == 200 and b'value="promote"' not in page.content
    for action in ("promote", "force_promote", "rollback_role"):
        run_action(client, action, better, post="yes", reason="because")
    assert (status_of(active), status_of(better)) == ("active", "candidate")
    assert not AuditEvent.objects.filter(action__in=("model.promote", "model.rollback"), actor_username="staffer").exists()
    # The same user, given the permission through a group, can.
    group = Group.objects.create(name="model-managers-test")
    group.permissions.add(Permission.objects.get(codename="promote_modelversion"))
    staff_admin.groups.add(group)
    run_action(client, "promote", better)
    assert (status_of(active), status_of(better)) == ("retired", "active")


def test_registered_artifact_fields_are_read_only_in_the_admin(admin_client, active):
    v = version("registered", artifact_path="/models/registered", checksum="a" * 64, config={"base_dir": "/models/b"})
    page = admin_client.get(f"{CHANGELIST}{v.pk}/change/")
    assert page.status_code == 200
    for name in ("artifact_path", "config", "checksum", "role", "format"):
        assert f'name="{name}"'.encode() not in page.content, name
    admin_client.post(f"{CHANGELIST}{v.pk}/change/", {"artifact_path": "/tmp/evil", "config": '{"base_dir": "/tmp"}',
                                                      "checksum": "", "name": "registered", "role": "generator",
                                                      "format": "torch-fp32", "_save": "Save"})
    v.refresh_from_db()
    assert (v.artifact_path, v.checksum, v.config) == ("/models/registered", "a" * 64, {"base_dir": "/models/b"})
    assert b'name="artifact_path"' in admin_client.get(f"{CHANGELIST}add/").content  # a new one is entered once


def test_the_job_admin_shows_other_users_jobs_only_with_view_all_jobs(make_user, client, api):
    job_id = api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Aspirin and stroke."]}, format="json").json()["id"]
    staffer = make_user("staffer", staff=True)
    staffer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(staffer)
    assert job_id.encode() not in client.get("/admin/jobs/job/").content
    assert client.get(f"/admin/jobs/job/{job_id}/change/").status_code in (302, 404)
    auditor = make_user("auditor", staff=True, perms=("jobs.view_all_jobs", "jobs.view_job"))
    client.force_login(auditor)
    assert job_id.encode() in client.get("/admin/jobs/job/").content
    assert client.get(f"/admin/jobs/job/{job_id}/change/").status_code == 200


# --- kinds gated by permissions --------------------------------------------------------------------------------

def test_finetune_and_noop_need_their_permissions_not_staff(make_user, client_for):
    assert {"finetune", "noop"}.isdisjoint(available_kinds(user=make_user("plain")))
    staff = make_user("staffer", staff=True)
    assert {"finetune", "noop"}.isdisjoint(available_kinds(user=staff))
    response = client_for(staff).post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}]},
                                      format="json")
    assert response.status_code == 400 and "kind" in response.json()["errors"]
    assert "finetune" in available_kinds(user=make_user("trainer", perms=("jobs.run_finetune",)))
    assert "noop" in available_kinds(user=make_user("bencher", perms=("jobs.run_diagnostics",)))
    assert not Job.objects.exists()


# --- create_api_user --group --------------------------------------------------------------------------------------

def test_create_api_user_gives_rights_through_groups_only(db, django_user_model):
    call_command("create_api_user", "ops", "--group", "operators", stdout=StringIO())
    ops = django_user_model.objects.get(username="ops")
    assert not ops.is_staff and ops.groups.filter(name="operators").exists()
    for perm in ("jobs.view_all_jobs", "jobs.run_finetune", "jobs.run_diagnostics", PROMOTE):
        assert ops.has_perm(perm), perm
    with pytest.raises(CommandError, match="no group 'nobody'"):
        call_command("create_api_user", "ghost", "--group", "nobody", stdout=StringIO())
    assert not django_user_model.objects.filter(username="ghost").exists()  # nothing half-made
    with pytest.raises(CommandError):
        call_command("create_api_user", "old", "--staff", stdout=StringIO())


# --- loading: verified checksum, no pickled code ------------------------------------------------------------------

def test_verification_refuses_a_blank_checksum(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    for blank in ("", "   "):
        with pytest.raises(ArtifactError, match="no registered checksum"):
            verify(EngineSpec(role="generator", format="torch-fp32", artifact_path=str(tmp_path), checksum=blank,
                              label="generator:x"))
    verify(EngineSpec(role="generator", format="torch-fp32", artifact_path=str(tmp_path),
                      checksum=directory_checksum(tmp_path)[0]))  # a matching checksum passes


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.target),))


def test_an_int8_state_file_that_carries_code_is_refused(tiny_model_dirs, tmp_path):
    from workers.runtime.engines import TorchCausalLM

    _Payload.target = str(tmp_path / "pwned")
    evil = tmp_path / "model_int8.pt"
    torch.save({"x": _Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        TorchCausalLM(tiny_model_dirs["llama"], int8=True, exclude=("down_proj",), int8_state=evil)
    assert not (tmp_path / "pwned").exists()


def test_every_torch_load_in_the_project_is_weights_only():
    calls = []
    for folder in ("medassist", "workers", "training", "config"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            calls += [(path, m.group(0)) for m in re.finditer(r"torch\.load\([^\n]*", text)]
    assert calls, "expected the known torch.load calls"
    for path, call in calls:
        assert "weights_only=True" in call, f"{path.relative_to(ROOT)}: {call}"


# --- finetune resume_from ------------------------------------------------------------------------------------------

def test_resume_from_is_confined_to_a_run_directory(tmp_path):
    models = tmp_path / "models"
    run = models / "finetuned" / "tiny" / "run"
    (run / "checkpoints" / "step-4").mkdir(parents=True)
    assert confined_resume_dir(str(run), models) == run.resolve()
    assert confined_resume_dir(str(run / "checkpoints" / "step-4"), models) == (run / "checkpoints" / "step-4").resolve()
    (tmp_path / "elsewhere").mkdir()
    (models / "finetuned" / "link").mkdir()
    (models / "finetuned" / "link" / "run").symlink_to(tmp_path / "elsewhere")
    for bad in ("/etc", str(models), str(models / "finetuned" / "tiny"), str(run / ".." / ".." / ".." / ".."),
                str(models / "finetuned" / "link" / "run")):
        with pytest.raises(ConfigError) as error:
            confined_resume_dir(bad, models)
        assert error.value.field == "resume_from", bad


def test_a_finetune_job_naming_a_resume_path_outside_the_runs_is_a_400(make_user, client_for, settings, tmp_path):
    settings.MEDASSIST_MODEL_DIR = tmp_path / "models"
    trainer = client_for(make_user("trainer", perms=("jobs.run_finetune",)))
    response = trainer.post("/api/v1/jobs/", {"kind": "finetune", "items": [{"sources": ["pubmedqa"]}],
                                              "params": {"resume_from": "/etc"}}, format="json")
    assert response.status_code == 400 and "params.resume_from" in response.json()["errors"]
    assert not Job.objects.exists()
