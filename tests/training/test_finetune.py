"""LoRA fine-tuning end to end with a tiny random Llama: training, checkpoints and resume, DP accounting,
cancellation, export and candidate registration (in-process, Ray Train local mode).

The real recipe on SmolLM2 is measured by ``manage.py finetune --write-benchmark`` (docs/benchmarks.md);
these tests check behaviour, not quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medassist.registry.models import ModelVersion
from tests.conftest import require_shared_data
from training.config import ConfigError, FinetuneConfig
from training.run import RunCancelled, TrainingTimeLimit, finetune
from training.trainer import latest_checkpoint

pytestmark = pytest.mark.django_db

SMALL = {"max_train_examples": 12, "max_eval_examples": 6, "batch_size": 2, "grad_accumulation": 1, "epochs": 1.0,
         "max_length": 192, "checkpoint_every": 2, "export_formats": ["torch-fp32", "torch-int8"], "threads_per_worker": 1}


@pytest.fixture
def model_dir(tmp_path, settings):
    settings.MEDASSIST_MODEL_DIR = tmp_path / "models"
    return settings.MEDASSIST_MODEL_DIR


def recipe(**overrides) -> FinetuneConfig:
    require_shared_data("pubmedqa", "pqal_train.json")
    return FinetuneConfig.from_dict({**SMALL, **overrides})


def test_a_run_registers_candidates_with_metrics_config_dataset_hash_parent_and_logs(tiny_models, model_dir):
    seen: list[dict] = []
    result = finetune(recipe(), name="tiny-run", progress=seen.append, poll_interval=0.05)

    candidates = list(ModelVersion.objects.filter(name="tiny-run").order_by("format"))
    assert [v.format for v in candidates] == ["torch-fp32", "torch-int8"]
    base = tiny_models["generator"]
    for version in candidates:
        assert version.status == ModelVersion.Status.CANDIDATE
        assert version.parent_id == base.pk
        assert version.config["dataset_hash"] == result["dataset_hash"] and len(result["dataset_hash"]) == 64
        assert version.config["finetune"]["lora_r"] == 8
        assert Path(version.config["logs"]).is_file()
        assert set(version.metrics["after"]) >= {"accuracy", "nll", "n"}
        assert version.metrics["training"]["steps"] == 6
        assert version.metrics["training"]["precision"] in ("fp32", "bf16")
        assert result["evaluation"] in version.metrics["evaluations"]
        assert Path(version.artifact_path).is_dir() and version.checksum
    base.refresh_from_db()  # the base model's own scores on the same held-out questions, for promotion
    assert base.metrics["evaluations"][result["evaluation"]]["accuracy"] == result["before"]["accuracy"]
    assert result["before"]["n"] == 6 and sum(result["before"]["predicted"].values()) == 6
    stages = [record["stage"] for record in seen]
    assert stages[0] == "preparing data" and stages[-1] == "done" and "training" in stages

    # The candidate is servable through the runtime's own loader.
    from workers.runtime.store import load_engine

    generator = load_engine(candidates[0])
    assert generator.score_options([generator.chat_prompt("Is it?")], ["yes", "no"])[0]


def test_training_lowers_the_loss_on_its_own_data(tiny_models, model_dir):
    result = finetune(recipe(epochs=4.0, learning_rate=3e-3, export_formats=["torch-fp32"], checkpoint_every=0),
                      name="tiny-learns")
    curve = ModelVersion.objects.get(name="tiny-learns").metrics["loss_curve"]
    assert curve[-1][1] < curve[0][1]
    assert result["training"]["steps"] == 24


def test_resume_continues_from_the_last_checkpoint(tiny_models, model_dir, monkeypatch):
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):  # the run dies after its 5th optimizer step
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(recipe(), name="tiny-crash")
    run_dir = model_dir / "finetuned" / "tiny-crash" / "run"
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "step-4"
    assert not ModelVersion.objects.filter(name="tiny-crash").exists()  # nothing half-registered
    assert not (model_dir / "finetuned" / "tiny-crash" / "torch-fp32").exists()

    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    result = finetune(recipe(resume_from=str(run_dir)), name="tiny-resumed")
    assert result["training"]["resumed_at_step"] == 4
    assert result["training"]["steps"] == 6
    assert ModelVersion.objects.filter(name="tiny-resumed", status="candidate").count() == 2


def test_dp_sgd_reports_the_spent_epsilon(tiny_models, model_dir):
    result = finetune(recipe(dp=True, noise_multiplier=1.0, export_formats=["torch-fp32"], checkpoint_every=0),
                      name="tiny-dp")
    training = result["training"]
    assert training["epsilon"] > 0 and training["delta"] == 1e-5 and training["accountant"] == "prv"
    assert ModelVersion.objects.get(name="tiny-dp").metrics["training"]["epsilon"] == training["epsilon"]


def test_a_cancelled_run_leaves_nothing_behind(tiny_models, model_dir):
    seen_training = {"yes": False}

    def progress(record):
        if record.get("stage") == "training" and "step" in record:
            seen_training["yes"] = True

    with pytest.raises(RunCancelled):
        finetune(recipe(epochs=20.0, checkpoint_every=0), name="tiny-cancel", progress=progress,
                 should_stop=lambda: seen_training["yes"], poll_interval=0.05)
    assert not (model_dir / "finetuned" / "tiny-cancel").exists()
    assert not ModelVersion.objects.filter(name="tiny-cancel").exists()


@pytest.mark.parametrize("values, field", [
    ({"eval_fold": 5}, "eval_fold"),
    ({"dp": True, "num_workers": 2}, "dp"),
    ({"dp": True}, "grad_accumulation"),
    ({"precision": "fp16"}, "precision"),
    ({"lora_rank": 8}, "lora_rank"),
    ({"export_formats": ["gguf"]}, "export_formats"),
])
def test_bad_recipes_name_the_knob(values, field):
    with pytest.raises(ConfigError) as error:
        FinetuneConfig.from_dict({**values})
    assert error.value.field == field


def test_progress_file_records_tokens_per_second(tiny_models, model_dir):
    finetune(recipe(export_formats=["torch-fp32"], checkpoint_every=0), name="tiny-progress")
    lines = (model_dir / "finetuned" / "tiny-progress" / "run" / "progress.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(r["tokens_per_s"] > 0 and r["total_steps"] == 6 for r in records)


def test_two_ray_train_workers_train_with_ddp_and_report_back(tiny_models, model_dir):
    """A real Ray Train worker group (2 CPU workers, gloo): the data is sharded and the summary returns."""
    import ray

    try:
        result = finetune(recipe(num_workers=2, export_formats=["torch-fp32"], checkpoint_every=0), name="tiny-ray")
    finally:
        ray.shutdown()
    assert result["training"]["world_size"] == 2
    assert result["training"]["steps"] == 3  # 12 examples over 2 workers, micro-batch 2
    assert ModelVersion.objects.filter(name="tiny-ray", status="candidate").exists()


def test_a_run_past_its_time_limit_stops_keeps_its_checkpoints_and_registers_nothing(tiny_models, model_dir):
    with pytest.raises(TrainingTimeLimit, match="resume with resume_from="):
        finetune(recipe(epochs=500.0, checkpoint_every=1), name="tiny-slow", time_limit_s=20)
    assert latest_checkpoint(model_dir / "finetuned" / "tiny-slow" / "run") is not None
    assert not ModelVersion.objects.filter(name="tiny-slow").exists()


def test_answer_weights_mark_only_the_first_reply():
    from training.run import answer_weights

    labels = [-100, -100, 7, 8, -100, -100, 9, 10, 11]
    assert answer_weights(labels, 10.0) == [1.0, 1.0, 10.0, 10.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert answer_weights(labels, 1.0) == [1.0] * 9
