"""The one configuration of a LoRA fine-tuning run: every knob, with what it does and its default.

``FinetuneConfig`` travels as a plain dict (job params, Ray's ``train_loop_config``, the registered
``ModelVersion.config``), so a model version is traceable to exactly the recipe that made it.
The defaults are the default recipe compared in docs/benchmarks.md ("LoRA recipes compared"): it fits a 2-core
machine's time budget and is what ``manage.py finetune`` and a ``finetune`` job run when given nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A knob has a value the trainer cannot run with; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class FinetuneConfig:
    # --- what to train on -------------------------------------------------------------------------
    # Data sources (see training.data.read_records): "pubmedqa" (the shared PubMedQA file), "medline"
    # (the shared MEDLINE sample), "corpus" (the knowledge app's documents), or a path to a PubMedQA
    # JSON, MEDLINE/PubMed XML or JSONL file under an allowed data directory.
    sources: list[str] = field(default_factory=lambda: ["pubmedqa"])
    # Instruction tasks: "qa" (yes/no/maybe + rationale) and "summary" from the records; "diagnosis"
    # (rationales for a ranked diagnosis, written from the HSDN symptom-disease network).
    tasks: list[str] = field(default_factory=lambda: ["qa"])
    # QA prompts hold the whole abstract including its conclusion (what users submit to the
    # literature kind). False = PubMedQA's "reasoning-required" setting (conclusion withheld).
    include_conclusion_in_qa: bool = True
    # Cross-validation on PubMedQA: the records are split into ``folds`` label-stratified folds and
    # fold ``eval_fold`` is held out for evaluation (never trained on).
    folds: int = 5
    eval_fold: int = 0
    # Medical synonym augmentation of training prompts (never of evaluation data): the chance that a
    # recognised disease/drug mention is replaced by a synonym from the vocabulary packages; 0 = off.
    augment_probability: float = 0.0
    # Parallel tokenization: Ray actors when > 1 (worth it only for large corpora; see benchmarks).
    data_workers: int = 1
    # Token budget per example; longer examples lose the start of the abstract, never the answer.
    max_length: int = 384
    # Loss weight of a QA example's answer ("Yes."/"No."/"Maybe.", the first reply) relative to its
    # rationale tokens. The rationale is ~30 tokens mostly copied from the abstract; at weight 1 the
    # answer is a small share of the loss and the model learns to copy rather than to answer; the recipes
    # compared are in docs/benchmarks.md, "LoRA recipes compared".
    answer_loss_weight: float = 10.0
    # Cap on training examples (0 = all): for smoke runs and tests.
    max_train_examples: int = 0
    # Cap on held-out questions evaluated before and after (0 = the whole fold).
    max_eval_examples: int = 0

    # --- the model and its adapter -----------------------------------------------------------------
    # Base model: a registered generator version id, or None for the active generator's fp32 weights.
    base_version: int | None = None
    # LoRA rank, scaling (alpha / r) and dropout.
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # Module names that get adapters: the Llama/Qwen2 attention and MLP projections by default. Within the
    # top layers the MLP adapters cost little (backward passes through those MLPs anyway); attention only
    # against attention + MLP: docs/benchmarks.md, "LoRA recipes compared".
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    # Adapters only in the top N transformer layers (0 = all): backward then stops there, which on
    # a CPU shortens the step for classification-style tasks (docs/benchmarks.md, "LoRA training throughput").
    lora_top_layers: int = 10

    # --- optimisation -------------------------------------------------------------------------------
    epochs: float = 2.0  # may be fractional: 1.5 = one and a half passes over the training data
    batch_size: int = 4  # sequences per worker per micro-batch (length-grouped to avoid padding)
    grad_accumulation: int = 2  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06  # linear warm-up share of the steps, then cosine decay to 10%
    max_grad_norm: float = 1.0  # gradient clipping (also the per-sample clip norm under DP)
    seed: int = 0
    # "auto": bf16 autocast only when the CPU has native bf16 (AVX-512-BF16/AMX); else fp32, which is
    # far faster than emulated bf16 on AVX2 machines (shared/FINDINGS.md). "fp32" / "bf16" force it.
    precision: str = "auto"

    # --- parallelism (Ray Train) ------------------------------------------------------------------------
    # Ray Train workers (DDP over gloo). 0 = local mode: the loop runs in this process, no cluster.
    # RAY_ADDRESS points at a running cluster; otherwise a local Ray instance is started.
    num_workers: int = 0
    threads_per_worker: int = 0  # torch threads in each worker; 0 = cores / max(1, num_workers)

    # --- checkpoints ------------------------------------------------------------------------------------
    checkpoint_every: int = 25  # optimizer steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2
    # Resume from this run directory (its latest checkpoint) or checkpoint directory; "" = fresh start.
    # Only a run directory under MEDASSIST_MODEL_DIR/finetuned/<name>/run (or a checkpoint in it) is accepted.
    resume_from: str = ""

    # --- differential privacy (Opacus DP-SGD) -------------------------------------------------------
    dp: bool = False
    noise_multiplier: float = 1.0  # Gaussian noise std relative to the clip norm (max_grad_norm)
    dp_delta: float = 1e-5  # the delta at which the spent epsilon is reported

    # --- export ---------------------------------------------------------------------------------------
    # Formats registered as candidate versions (the same builds models_prepare makes).
    export_formats: list[str] = field(default_factory=lambda: ["torch-fp32", "onnx-int8"])

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FinetuneConfig:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(sorted(known))})")
        config = cls(**values)
        config.validate()
        return config

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        positive = ("lora_r", "lora_alpha", "batch_size", "grad_accumulation", "max_length", "folds", "data_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if not 0 <= self.eval_fold < self.folds:
            raise ConfigError("eval_fold", f"must be between 0 and folds - 1 ({self.folds - 1})")
        if self.answer_loss_weight <= 0:
            raise ConfigError("answer_loss_weight", "must be positive")
        if self.epochs <= 0:
            raise ConfigError("epochs", "must be positive")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_dropout", "must be in [0, 1)")
        if not 0 <= self.augment_probability <= 1:
            raise ConfigError("augment_probability", "must be in [0, 1]")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError("precision", "must be auto, fp32 or bf16")
        if not self.target_modules:
            raise ConfigError("target_modules", "name at least one module")
        if not set(self.tasks) <= {"qa", "summary", "diagnosis"} or not self.tasks:
            raise ConfigError("tasks", "choose from qa, summary, diagnosis")
        if not self.sources:
            raise ConfigError("sources", "name at least one source")
        if self.dp and self.num_workers > 1:
            raise ConfigError("dp", "DP-SGD runs on one worker (num_workers 0 or 1): per-sample clipping is not "
                                    "combined with DDP here")
        if self.dp and self.grad_accumulation != 1:
            raise ConfigError("grad_accumulation", "must be 1 with dp: the Poisson-sampled batch is the step")
        if self.dp and self.noise_multiplier <= 0:
            raise ConfigError("noise_multiplier", "must be positive with dp")
        bad = sorted(set(self.export_formats) - {"torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"})
        if bad or not self.export_formats:
            raise ConfigError("export_formats", "choose from torch-fp32, torch-int8, onnx-fp32, onnx-int8")
        if self.lora_top_layers < 0 or self.max_train_examples < 0 or self.max_eval_examples < 0:
            raise ConfigError("lora_top_layers", "must not be negative")

    def field_docs(self) -> dict[str, str]:
        """Knob -> its comment, for the finetune kind's params schema (read from this file's source)."""
        return _FIELD_DOCS


def _read_field_docs() -> dict[str, str]:
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(FinetuneConfig).splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):
            pending = []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
        elif ":" in stripped and not stripped.startswith(("def ", "@", "class ", "\"", "return")) and "=" in stripped:
            name = stripped.split(":", 1)[0].strip()
            inline = stripped.split("#", 1)[1].strip() if "#" in stripped else ""
            docs[name] = " ".join(pending + ([inline] if inline else []))
            pending = []
        elif not stripped:
            pending = []
    return docs


_FIELD_DOCS = _read_field_docs()


def confined_resume_dir(resume_from: str, model_dir) -> Path:
    """``resume_from`` resolved, if it is a fine-tuning run directory (``<model_dir>/finetuned/<name>/run``)
    or a checkpoint inside one; else ``ConfigError``. Resolved first (``..``, symlinks), so a recipe can
    never make the trainer read a file elsewhere on the server."""
    root = (Path(model_dir) / "finetuned").resolve()
    path = Path(resume_from).resolve()
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
    if len(parts) < 2 or parts[1] != "run":
        raise ConfigError("resume_from", f"must be the run directory of an earlier fine-tuning run ({root}/<name>/run) "
                                         "or a checkpoint inside it")
    return path
