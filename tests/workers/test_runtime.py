"""The model runtime on tiny real-architecture models: generation, int8, scoring, loading, failures."""
import numpy as np
import pytest
import torch
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_submit, job_validate
from medassist.registry.models import ModelVersion
from medassist.registry.services import model_version_promote
from training.prepare import register_variant
from workers.runtime.engines import GenerationSettings, Generator, TorchCausalLM, TorchEmbedder
from workers.runtime.store import load_engine
from workers.versions import Runtime


def left_padded(tokenizer, texts):
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, padding=True, return_tensors="np", add_special_tokens=False)
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def test_kv_cache_generation_matches_transformers_generate_on_a_left_padded_batch(tiny_model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tiny_model_dirs["llama"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids, mask = left_padded(tokenizer, ["aspirin reduces the risk of", "fever"])
    ours = TorchCausalLM(directory).generate(ids, mask, max_new_tokens=6, eos_token_ids=set(),
                                             pad_token_id=tokenizer.pad_token_id)
    reference = AutoModelForCausalLM.from_pretrained(directory).eval().generate(
        input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), max_new_tokens=6, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    assert ours == [row[ids.shape[1]:].tolist() for row in reference]


def test_repetition_penalty_and_stop_strings_change_generation(tiny_model_dirs):
    directory = tiny_model_dirs["llama"]
    generator = Generator(TorchCausalLM(directory), directory)
    prompt = ["headache headache headache"]
    plain = generator.generate(prompt, GenerationSettings(max_new_tokens=12, repetition_penalty=1.0))
    penalised = generator.generate(prompt, GenerationSettings(max_new_tokens=12, repetition_penalty=5.0))
    assert plain != penalised
    first_word = plain[0].split()[0]
    stopped = generator.generate(prompt, GenerationSettings(max_new_tokens=12, repetition_penalty=1.0,
                                                            stop=[first_word]))
    assert first_word not in stopped[0]


def test_torch_int8_stays_close_to_fp32(tiny_model_dirs):
    directory = tiny_model_dirs["llama"]
    fp32 = TorchCausalLM(directory)
    int8 = TorchCausalLM(directory, int8=True, exclude=("down_proj",))
    quantized = [name for name, m in int8.model.named_modules() if "quantized" in type(m).__module__]
    assert quantized and not any("down_proj" in name for name in quantized)
    ids = np.array([[101, 2000, 3000, 4000, 5000, 6000]], dtype=np.int64)
    a, b = fp32.forward(ids, np.ones_like(ids)), int8.forward(ids, np.ones_like(ids))
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cosine.min() > 0.99


def test_option_scores_are_probabilities_and_deterministic(tiny_model_dirs):
    directory = tiny_model_dirs["llama"]
    generator = Generator(TorchCausalLM(directory), directory)
    prompts = ["is aspirin an antiplatelet drug ?", "does fever cause headache in malaria patients ?"]
    first = generator.score_options(prompts, ["Yes", "No", "Maybe"])
    assert first == generator.score_options(prompts, ["Yes", "No", "Maybe"])
    for scores in first:
        assert set(scores) == {"Yes", "No", "Maybe"} and abs(sum(scores.values()) - 1) < 1e-6
    # Batched scoring equals one prompt at a time (left padding handled).
    assert generator.score_options(prompts[1:], ["Yes", "No", "Maybe"])[0] == pytest.approx(first[1], abs=1e-5)


def test_embedder_batches_by_length_and_keeps_order(tiny_model_dirs):
    embedder = TorchEmbedder(tiny_model_dirs["embedder"])
    texts = ["a much longer abstract about aspirin and myocardial infarction outcomes", "fever", "cough and fever"]
    together = embedder.encode(texts, batch_size=2)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    assert together.shape == (3, 32)
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_literature_question_and_generated_summary_record_their_model_versions(alice, tiny_models, settings):
    from medassist.jobs.services import job_process_chunk
    from workers.versions import get_runtime

    submission = job_validate(user=alice, kind_name="literature", items=["Aspirin reduced stroke in atrial fibrillation."],
                              params={"question": "Does aspirin reduce stroke?", "generate_summary": True,
                                      "max_new_tokens": 8})
    job, _ = job_submit(owner=alice, submission=submission)
    job_process_chunk(job_id=job.pk, start=0, end=1, runtime=get_runtime())
    result = JobItem.objects.get(job=job).result
    label = tiny_models["generator"].label
    assert result["answer"]["label"] in ("yes", "no", "maybe")
    assert sum(result["answer"]["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    # The label rests on the evidence reading (MEDASSIST_QA_GENERATOR_WEIGHT 0); the generator explains it.
    assert result["answer"]["model_version"] == tiny_models["answer_evidence"].label
    assert "likelihood" not in result["answer"]["method"] and "generator_probabilities" not in result["answer"]
    assert isinstance(result["answer"]["rationale"], str) and result["answer"]["rationale_model_version"] == label
    evidence = result["answer"]["evidence"]
    assert evidence["model_version"] == tiny_models["answer_evidence"].label
    assert evidence["conclusion"]["text"] == "Aspirin reduced stroke in atrial fibrillation."
    assert evidence["addresses_question"] and set(evidence["question_concepts"]["found"]) >= {"Aspirin", "Stroke"}
    job.refresh_from_db()
    assert job.model_versions["answer_evidence"] == tiny_models["answer_evidence"].label  # recorded on the job
    assert job.model_version == tiny_models["answer_evidence"]  # the answer's model names the job
    assert result["generated_summary"]["model_version"] == label
    assert result["generated_summary"]["settings"]["max_new_tokens"] == 8
    assert result["generated_summary"]["settings"]["decoding"] == "greedy"

    settings.MEDASSIST_QA_GENERATOR_WEIGHT = 0.25  # pooled: the generator's label likelihood counts too
    pooled, _ = job_submit(owner=alice, submission=submission)
    job_process_chunk(job_id=pooled.pk, start=0, end=1, runtime=get_runtime())
    answer = JobItem.objects.get(job=pooled).result["answer"]
    assert "likelihood of the generator (weight 0.25)" in answer["method"]
    assert sum(answer["generator_probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_labels_only_answers_need_no_generator(alice, tiny_models):
    from medassist.jobs.services import job_process_chunk
    from workers.versions import get_runtime

    submission = job_validate(user=alice, kind_name="literature", items=["Aspirin reduced stroke in atrial fibrillation."],
                              params={"question": "Does aspirin reduce stroke?", "rationale": False, "embed": False})
    job, _ = job_submit(owner=alice, submission=submission)
    job_process_chunk(job_id=job.pk, start=0, end=1, runtime=get_runtime())
    job.refresh_from_db()
    assert set(job.model_versions) == {"concepts", "answer_evidence"} and job.status == "succeeded"
    assert job.chunk_size == django_settings.MEDASSIST_CHUNK_SIZE  # fast: no model-sized chunks
    answer = JobItem.objects.get(job=job).result["answer"]
    assert answer["label"] in ("yes", "no", "maybe") and "rationale" not in answer


def test_an_answer_rests_on_the_conclusion_and_an_abstract_about_something_else_cannot_settle_it(alice, tiny_models):
    """The tiny generator's label likelihood is noise; the conclusion decides, unless the abstract is off topic."""
    from medassist.jobs.services import job_process_chunk
    from workers.versions import get_runtime

    items = [
        "BACKGROUND: Stroke is common.\nRESULTS: Stroke occurred in 2% with aspirin and 4% with placebo (P<0.001)."
        "\nCONCLUSIONS: Aspirin significantly reduced the risk of stroke.",
        "BACKGROUND: Stroke is common.\nRESULTS: Stroke occurred in 4% with aspirin and 4% with placebo (P=0.9)."
        "\nCONCLUSIONS: Aspirin did not reduce the risk of stroke.",
        "Metformin lowered HbA1c in type 2 diabetes. Metformin is a safe first-line therapy for diabetes.",
    ]
    submission = job_validate(user=alice, kind_name="literature", items=items,
                              params={"question": "Does aspirin reduce the risk of stroke?", "embed": False,
                                      "max_new_tokens": 8})
    job, _ = job_submit(owner=alice, submission=submission)
    job_process_chunk(job_id=job.pk, start=0, end=3, runtime=get_runtime())
    positive, null, off_topic = (JobItem.objects.get(job=job, index=i).result["answer"] for i in range(3))
    assert positive["label"] == "yes" and positive["evidence"]["conclusion"]["found_by"] == "section"
    assert null["label"] == "no" and null["probabilities"]["no"] > null["probabilities"]["yes"]
    assert null["evidence"]["conclusion"]["text"] == "Aspirin did not reduce the risk of stroke."
    assert off_topic["label"] == "maybe" and off_topic["evidence"]["addresses_question"] is False
    assert set(off_topic["evidence"]["question_concepts"]["missing"]) >= {"Aspirin", "Stroke"}


def test_a_question_without_concepts_is_judged_by_its_words_so_an_off_topic_abstract_cannot_settle_it(alice,
                                                                                                      tiny_models):
    """Before: a question the extractor found no concept in was taken as addressed by any abstract."""
    from medassist.jobs.services import job_process_chunk
    from workers.versions import get_runtime

    items = [
        "BACKGROUND: Early mobilisation after surgery is debated.\nRESULTS: Median hospital stay was 5 days with "
        "early mobilisation and 7 days without (P<0.01).\nCONCLUSIONS: Early mobilisation shortened hospital stay.",
        "Metformin lowered HbA1c in type 2 diabetes. Metformin is a safe first-line therapy for diabetes.",
    ]
    question = "Does early mobilisation shorten hospital stay after surgery?"
    submission = job_validate(user=alice, kind_name="literature", items=items,
                              params={"question": question, "embed": False, "max_new_tokens": 8})
    job, _ = job_submit(owner=alice, submission=submission)
    job_process_chunk(job_id=job.pk, start=0, end=2, runtime=get_runtime())
    on_topic, off_topic = (JobItem.objects.get(job=job, index=i).result["answer"] for i in range(2))
    assert on_topic["evidence"]["addresses_question"] is True and on_topic["label"] == "yes"
    assert on_topic["evidence"]["question_concepts"]["word_overlap"] == 1.0
    assert off_topic["evidence"]["addresses_question"] is False and off_topic["label"] == "maybe"
    assert off_topic["evidence"]["question_concepts"]["word_overlap"] < 0.35


def test_runtime_notices_a_promotion_with_one_query(db, tiny_models, tiny_model_dirs, django_assert_num_queries):
    runtime = Runtime()
    runtime.refresh(["generator"])
    first = runtime.engine("generator")
    with django_assert_num_queries(1):
        runtime.refresh(["generator"])
    other, _ = register_variant(role="generator", name="tiny-llama-b", format="torch-fp32",
                                artifact=tiny_model_dirs["llama_b"], config={})
    model_version_promote(version=other, force=True, reason="test: unscored tiny model")
    runtime.refresh(["generator"])
    assert runtime.version_label("generator") == other.label and runtime.engine("generator") is not first


def test_a_corrupt_artifact_fails_the_items_with_a_clear_error(alice, tiny_models, tmp_path):
    """The worker's task fails the chunk's items with the reason, and stays up for the next task."""
    import shutil

    from workers.tasks import process_chunk

    broken = tmp_path / "broken-llama"
    shutil.copytree(tiny_models["generator"].artifact_path, broken)
    version, _ = register_variant(role="generator", name="broken", format="torch-fp32", artifact=broken, config={})
    model_version_promote(version=version, force=True, reason="test: unscored tiny model")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")  # changed after registration
    submission = job_validate(user=alice, kind_name="literature", items=["Aspirin and stroke."],
                              params={"question": "Does aspirin help?"})
    job, _ = job_submit(owner=alice, submission=submission)
    process_chunk.apply(args=[str(job.pk), 0, 1])
    item = JobItem.objects.get(job=job)
    assert item.status == "failed"
    assert "does not match its registered checksum" in item.error and version.label in item.error
    job.refresh_from_db()
    assert job.status == "failed" and "checksum" in job.error
    # The same task still serves jobs that do not need the broken model.
    ok, _ = job_submit(owner=alice, submission=job_validate(user=alice, kind_name="literature",
                                                            items=["Aspirin and stroke."], params={}))
    process_chunk.apply(args=[str(ok.pk), 0, 1])
    assert JobItem.objects.get(job=ok).status == "succeeded"


def test_a_missing_artifact_names_the_version(db, tiny_models, tmp_path):
    version = ModelVersion.objects.create(role="generator", name="gone", format="torch-fp32",
                                          artifact_path=str(tmp_path / "nowhere"), checksum="0" * 64)
    with pytest.raises(RuntimeError, match="does not exist"):
        load_engine(version)


def test_models_register_accepts_llama_and_qwen2_and_refuses_an_encoder(db, tiny_model_dirs, capsys):
    for key in ("llama", "qwen2"):
        call_command("models_register", "--path", str(tiny_model_dirs[key]))
    out = capsys.readouterr().out
    assert "registered generator:tiny-llama@torch-fp32" in out and "registered generator:tiny-qwen2@torch-fp32" in out
    qwen = ModelVersion.objects.get(name="tiny-qwen2")
    assert qwen.status == "candidate" and qwen.config["model_type"] == "qwen2" and len(qwen.checksum) == 64
    assert qwen.size_bytes > 0
    call_command("models_register", "--path", str(tiny_model_dirs["qwen2"]))
    assert "already registered" in capsys.readouterr().out
    with pytest.raises(CommandError, match="not a causal LM"):
        call_command("models_register", "--path", str(tiny_model_dirs["embedder"]))
    # A registered Qwen2 loads and generates through the same runtime.
    generator = load_engine(qwen)
    assert isinstance(generator.generate(["fever and cough"], GenerationSettings(max_new_tokens=3))[0], str)


def test_generator_reads_the_shared_prompt_prefix_once_and_writes_the_same_text(tiny_model_dirs, tmp_path):
    """One job question asked of many abstracts: the tokens every prompt starts with are prefilled once per
    call, and the completions are those of the whole prompts read afresh."""
    from workers.runtime.onnx_models import OnnxCausalLM, export_causal_lm

    directory = tiny_model_dirs["llama"]
    backend = OnnxCausalLM(export_causal_lm(directory, tmp_path / "onnx"))
    generator = Generator(backend, directory)
    question = "Question: does aspirin reduce the risk of stroke in older adults with fever?\nEvidence: "
    prompts = [question + text for text in ("aspirin reduced strokes", "no effect was seen on fever",
                                            "headache", "the trial stopped early for benefit in adults")]
    prefilled: list[int] = []
    real_prefill = backend.prefill
    backend.prefill = lambda ids: prefilled.append(len(ids)) or real_prefill(ids)
    settings_ = GenerationSettings(max_new_tokens=8, repetition_penalty=1.2)
    shared = generator.generate(prompts, settings_, batch_size=3)
    assert len(prefilled) == 1 and prefilled[0] >= 8  # once, for the question's tokens
    assert shared == generator.generate(prompts, settings_, batch_size=3, share_prefix=False)
    assert len(prefilled) == 1


def test_sentence_ends_skip_decimals_abbreviations_and_initials():
    from workers.runtime.engines import sentence_ends

    text = "Mortality fell (p < 0.05). It rose, e.g. in May vs. June, per J. Smith. Then"
    ends = sentence_ends(text)
    assert [text[:end] for end in ends] == ["Mortality fell (p < 0.05).",
                                           "Mortality fell (p < 0.05). It rose, e.g. in May vs. June, per J. Smith."]
    assert sentence_ends("Yes.") == []  # a sentence is complete once something follows it
    assert sentence_ends("The answer is no. The trial was small.") == [len("The answer is no.")]


def test_a_sentence_shorter_than_the_minimum_joins_the_next():
    from workers.runtime.engines import sentence_ends

    text = "No. The trial found fewer deaths. It was small. And"
    assert sentence_ends(text)[0] == len("No.")
    # "It was small." (3 words) is not complete either: it waits for more words
    assert [text[:end] for end in sentence_ends(text, min_words=4)] == ["No. The trial found fewer deaths."]
    settings_ = GenerationSettings(sentences=1, sentence_min_words=4)
    assert Generator._finish(text, settings_) == "No. The trial found fewer deaths."


def test_one_sentence_setting_stops_generation_and_cuts_the_text(tiny_model_dirs):
    directory = tiny_model_dirs["llama"]
    generator = Generator(TorchCausalLM(directory), directory)
    settings_ = GenerationSettings(max_new_tokens=30, repetition_penalty=1.0, sentences=1)
    assert generator._finish("The trial found fewer deaths. It was small. And", settings_) == "The trial found fewer deaths."
    assert generator._finish("No sentence end", settings_) == "No sentence end"
    assert settings_.as_dict()["sentences"] == 1  # recorded with every generated text
