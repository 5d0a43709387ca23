"""models_prepare on the real packages (SmolLM2 GGUF, MiniLM): fresh directory, then idempotent."""
import numpy as np
import pytest

from medassist.registry.models import ModelVersion
from workers.runtime.engines import GenerationSettings
from workers.runtime.prepare import prepare_all
from workers.runtime.store import load_engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def test_models_prepare_builds_registers_and_is_idempotent(db, model_dir):
    lines: list[str] = []
    versions = prepare_all(model_dir=model_dir, progress=lines.append)
    formats = {(v.role, v.format) for v in versions}
    assert formats == {("generator", f) for f in ("torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8")} | {
        ("embedder", f) for f in ("torch-fp32", "onnx-fp32", "onnx-int8")}
    assert all(line.startswith("built") for line in lines if "@" in line and not line.startswith("active"))
    by_format = {(v.role, v.format): v for v in versions}
    fp32, int8 = by_format[("generator", "torch-fp32")], by_format[("generator", "torch-int8")]
    assert int8.parent == fp32 and int8.size_bytes < 0.6 * fp32.size_bytes and len(int8.checksum) == 64
    assert ModelVersion.objects.get(role="generator", status="active").format == "onnx-int8"
    assert ModelVersion.objects.get(role="embedder", status="active").format == "onnx-int8"

    again: list[str] = []
    assert [v.pk for v in prepare_all(model_dir=model_dir, progress=again.append)] == [v.pk for v in versions]
    assert all(line.startswith("present") for line in again)


def test_every_backend_of_the_real_model_agrees_with_fp32(db, model_dir):
    versions = prepare_all(model_dir=model_dir, progress=lambda line: None)
    generators = {v.format: load_engine(v) for v in versions if v.role == "generator"}
    reference = generators["torch-fp32"]
    prompt = [reference.chat_prompt("What is aspirin used for? Answer in one sentence.")]
    settings = GenerationSettings(max_new_tokens=12, repetition_penalty=1.0)
    expected = reference.generate(prompt, settings)
    assert generators["onnx-fp32"].generate(prompt, settings) == expected  # same math, other runtime
    ids = np.array([reference.tokenizer("Aspirin reduces the risk of myocardial infarction in adults with "
                                        "coronary disease.", add_special_tokens=False)["input_ids"]], dtype=np.int64)
    base = reference.backend.forward(ids, np.ones_like(ids))[0].argmax(-1)
    for fmt in ("torch-int8", "onnx-int8"):
        top1 = generators[fmt].backend.forward(ids, np.ones_like(ids))[0].argmax(-1)
        assert (top1 == base).mean() >= 0.6, fmt  # int8 keeps most next-token choices of fp32
    embedders = {v.format: load_engine(v) for v in versions if v.role == "embedder"}
    texts = ["Aspirin after myocardial infarction.", "Metformin in type 2 diabetes mellitus."]
    fp32 = embedders["torch-fp32"].encode(texts)
    for fmt in ("onnx-fp32", "onnx-int8"):
        cosine = (embedders[fmt].encode(texts) * fp32).sum(1)
        assert cosine.min() > (0.9999 if fmt == "onnx-fp32" else 0.98), (fmt, cosine)
