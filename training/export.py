"""From a trained LoRA adapter to candidate model versions the workers can serve.

1. ``merge_adapter``: base fp32 weights + adapter -> merged fp32 checkpoint (with the tokenizer).
2. The int8 / ONNX variants are built by the runtime's own recipe
   (``training.prepare.generator_variant_builds``), so a fine-tuned model is quantized
   exactly like the shipped one; every build goes to a temporary directory first.
3. ``register_candidates``: one transaction registers every format as a *candidate* version with
   its metrics, training config, dataset hash, parent and log location. Nothing is registered
   before every artifact is complete, so a failed run leaves no half-registered version.
"""
from __future__ import annotations

from pathlib import Path

from django.db import transaction

from medassist.registry.models import ModelVersion
from training.prepare import build_once, generator_variant_builds, register_variant


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True  # training switched it off; serving wants the KV cache
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir, local_files_only=True).save_pretrained(out)


def build_artifacts(*, base_dir: str | Path, adapter_dir: str | Path, root: Path, formats, progress=print) -> dict[str, Path]:
    """Build the merged fp32 model and the requested variants under ``root``; return format -> dir."""
    fp32 = root / "torch-fp32"
    build_once(fp32, lambda out: merge_adapter(base_dir, adapter_dir, out),
           {"format": "torch-fp32", "base_dir": str(base_dir), "adapter": str(adapter_dir)})
    progress("merged the adapter into fp32 weights")
    artifacts = {"torch-fp32": fp32}
    for fmt, target, build, spec in generator_variant_builds(fp32, formats):
        build_once(target, build, {"format": fmt, **spec})
        artifacts[fmt] = target
        progress(f"built {fmt}")
    return {fmt: path for fmt, path in artifacts.items() if fmt in formats}


def base_weights(version: ModelVersion) -> tuple[Path, ModelVersion]:
    """(fp32 checkpoint directory, the version that holds it) for any generator version."""
    if version.role != ModelVersion.Role.GENERATOR:
        raise ValueError(f"{version.label} is not a generator")
    base_dir = version.artifact_path if version.format == "torch-fp32" else version.config.get("base_dir")
    if not base_dir or not Path(base_dir).is_dir():
        raise FileNotFoundError(f"{version.label}: its fp32 weights ({base_dir or 'unknown'}) are not on disk; "
                                "run models_prepare")
    parent = ModelVersion.objects.filter(role=version.role, format="torch-fp32", artifact_path=str(base_dir)).first()
    return Path(base_dir), parent or version


@transaction.atomic
def register_candidates(*, name: str, artifacts: dict[str, Path], parent: ModelVersion, config: dict, metrics: dict,
                        evaluation_key: str, before: dict, after: dict) -> list[ModelVersion]:
    """Every format as a candidate; the base family gets its 'before' scores on the same held-out set."""
    versions = []
    for fmt, path in artifacts.items():
        version, _ = register_variant(role=ModelVersion.Role.GENERATOR, name=name, format=fmt, artifact=path,
                                      config={**config, "base_dir": str(artifacts.get("torch-fp32") or path)},
                                      parent=parent)
        version.metrics = {**metrics, "evaluations": {evaluation_key: {**after, "measured_on": "torch-fp32 merged"}}}
        version.save(update_fields=["metrics"])
        versions.append(version)
    # The scores of the model it was trained from, on the same questions, so that promotion can
    # compare like with like (measured on its fp32 weights; every format of that model shares them).
    for sibling in ModelVersion.objects.select_for_update().filter(role=parent.role, name=parent.name):
        evaluations = dict(sibling.metrics.get("evaluations", {}))
        evaluations[evaluation_key] = {**before, "measured_on": "torch-fp32"}
        sibling.metrics = {**sibling.metrics, "evaluations": evaluations}
        sibling.save(update_fields=["metrics"])
    return versions
