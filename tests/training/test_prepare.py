"""models_prepare on the real packages (SmolLM2 GGUF, MiniLM): fresh directory, then idempotent."""
import numpy as np
import pytest

from medassist.registry.models import ModelVersion
from training.prepare import prepare_all
from workers.runtime.engines import GenerationSettings
from workers.runtime.store import load_engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def test_models_prepare_builds_registers_and_is_idempotent(db, model_dir):
    lines: list[str] = []
    versions = prepare_all(model_dir=model_dir, progress=lines.append)
    formats = {(v.role, v.format) for v in versions}
    assert formats == {("generator", f) for f in ("torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8")} | {
        ("embedder", f) for f in ("torch-fp32", "onnx-fp32", "onnx-int8")} | {("answer_evidence", "ngram-logreg")}
    assert all(line.startswith("built") for line in lines if "@" in line and not line.startswith("active"))
    by_format = {(v.role, v.format): v for v in versions}
    fp32, int8 = by_format[("generator", "torch-fp32")], by_format[("generator", "torch-int8")]
    assert int8.parent == fp32 and int8.size_bytes < 0.6 * fp32.size_bytes and len(int8.checksum) == 64
    assert ModelVersion.objects.get(role="generator", status="active").format == "onnx-int8"
    assert ModelVersion.objects.get(role="embedder", status="active").format == "onnx-int8"
    evidence = ModelVersion.objects.get(role="answer_evidence", status="active")
    assert evidence.metrics["evaluations"]["pubmedqa-pqal 5-fold cv (with and without conclusion)"]["accuracy"] > 0.6

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


# Made for this test: the same trial reported once with a clear effect and once with none, in the words
# PubMed abstracts use. (The answer-evidence model learnt its words from 500 PubMedQA conclusions: a verb
# it never saw there, e.g. "prevented", reads as weak evidence; docs/benchmarks.md.)
CLEAR_CUT = [
    ("Does aspirin reduce the risk of stroke in atrial fibrillation?",
     "BACKGROUND: Stroke is a leading cause of disability in atrial fibrillation.\nMETHODS: We randomly assigned "
     "4,000 adults with atrial fibrillation to aspirin 100 mg daily or placebo for three years.\nRESULTS: Stroke "
     "occurred in {a} of the aspirin group and 4.3% of the placebo group ({stats}).\nCONCLUSIONS: {conclusion}",
     dict(a="2.1%", stats="hazard ratio 0.48; 95% CI 0.35-0.66; P<0.001",
          conclusion="Aspirin significantly reduced the risk of stroke in adults with atrial fibrillation."),
     dict(a="4.2%", stats="hazard ratio 0.98; 95% CI 0.76-1.27; P=0.89",
          conclusion="Aspirin did not reduce the risk of stroke in adults with atrial fibrillation.")),
    ("Does vitamin D supplementation prevent hip fractures in older women?",
     "Hip fractures are common in older women. In a randomised trial, 2,600 women aged over 70 received vitamin D "
     "or placebo for five years. Hip fractures occurred in {a} of women given vitamin D and in 3.9% given placebo "
     "({stats}). {conclusion}",
     dict(a="1.8%", stats="relative risk 0.46, P<0.001",
          conclusion="Vitamin D supplementation significantly reduced the risk of hip fractures in older women."),
     dict(a="3.8%", stats="relative risk 0.97, P=0.84",
          conclusion="Vitamin D supplementation had no effect on hip fractures in older women.")),
    ("Does metformin lower HbA1c in type 2 diabetes?",
     "OBJECTIVE: To test metformin in type 2 diabetes.\nRESULTS: After 24 weeks HbA1c fell by {a} with metformin "
     "and by 0.1% with placebo ({stats}).\nCONCLUSION: {conclusion}",
     dict(a="1.2%", stats="P<0.001", conclusion="Metformin significantly lowered HbA1c in type 2 diabetes."),
     dict(a="0.1%", stats="P=0.92", conclusion="Metformin did not lower HbA1c and showed no benefit over placebo.")),
]


def test_a_clear_cut_abstract_gets_a_sane_answer_from_the_served_models(alice, model_dir):
    """The shipped generator (onnx-int8) with the answer-evidence model, as a literature job runs them: a
    clearly positive trial is answered "yes", the same trial with a null result "no"."""
    from medassist.jobs.models import JobItem
    from medassist.jobs.services import job_process_chunk, job_submit, job_validate
    from workers.versions import Runtime

    prepare_all(model_dir=model_dir, progress=lambda line: None)
    runtime = Runtime()
    for question, template, positive, null in CLEAR_CUT:
        submission = job_validate(user=alice, kind_name="literature",
                                  items=[template.format(**positive), template.format(**null)],
                                  params={"question": question, "embed": False, "max_new_tokens": 16})
        job, _ = job_submit(owner=alice, submission=submission)
        job_process_chunk(job_id=job.pk, start=0, end=2, runtime=runtime)
        yes, no = (JobItem.objects.get(job=job, index=i).result["answer"] for i in range(2))
        assert "@onnx-int8#" in yes["rationale_model_version"]  # the default served generator explains it
        assert "@ngram-logreg#" in yes["model_version"]  # the label rests on the evidence reading
        assert (yes["label"], no["label"]) == ("yes", "no"), (question, yes, no)
        assert yes["probabilities"]["yes"] > no["probabilities"]["yes"] + 0.2
        assert yes["evidence"]["addresses_question"] and no["evidence"]["addresses_question"]
        assert no["rationale"].strip()  # a generated sentence, for the chosen label
