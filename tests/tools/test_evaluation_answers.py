"""`evaluate answers`: the served yes/no/maybe path, scored without a model seeing its test questions."""
import json

import pytest
from django.core.management import call_command

from medassist.tools.evaluation.answers import item_for, rationale_quality, score
from tests.conftest import require_shared_data
from training.data import Record


def test_score_on_a_hand_made_set_with_known_answers():
    gold = ["yes", "yes", "no", "maybe"]
    answers = [{"label": "yes", "probabilities": {"yes": 0.9, "no": 0.05, "maybe": 0.05}},
               {"label": "no", "probabilities": {"yes": 0.3, "no": 0.6, "maybe": 0.1}},
               {"label": "no", "probabilities": {"yes": 0.2, "no": 0.7, "maybe": 0.1}},
               {"label": "yes", "probabilities": {"yes": 0.5, "no": 0.2, "maybe": 0.3}}]
    result = score(gold, answers, seconds=2.0)
    assert result["accuracy"] == 0.5 and result["majority_class"] == 0.5 and result["answers_per_second"] == 2.0
    assert result["predicted"] == {"yes": 2, "no": 2, "maybe": 0}
    assert result["confusion"]["yes"] == {"yes": 1, "no": 1, "maybe": 0}
    # F1: yes 2*(1/2*1/2)/(1) = 0.5; no: P 1/2, R 1 -> 2/3; maybe: 0
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    # ECE: bins (0.4,0.5]: conf .5 acc 0; (0.5,0.6]: .6 acc 0; (0.6,0.7]: .7 acc 1; (0.8,0.9]: .9 acc 1
    assert result["ece"] == pytest.approx((0.5 + 0.6 + 0.3 + 0.1) / 4)


def test_the_two_settings_differ_only_by_the_conclusion():
    record = Record(id="1", title="", text="Aspirin was given.", conclusion="Aspirin helps.", question="Does it?",
                    label="yes")
    assert item_for(record, "full") == {"id": "1", "text": "Aspirin was given.\nAspirin helps.", "question": "Does it?"}
    assert item_for(record, "reasoning")["text"] == "Aspirin was given."
    with pytest.raises(ValueError, match="setting"):
        item_for(record, "oracle")


def test_evaluate_answers_runs_the_served_path_on_a_pubmedqa_file(tiny_models, tmp_path, capsys):
    records = {str(i): {"QUESTION": f"Does drug {i} reduce mortality?", "CONTEXTS": [f"Drug {i} was given to adults."],
                        "LABELS": ["METHODS"], "final_decision": label,
                        "LONG_ANSWER": "It reduced mortality." if label == "yes" else "It did not reduce mortality."}
               for i, label in enumerate(["yes", "no", "yes", "maybe"])}
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(records))
    call_command("evaluate", "answers", "--data", str(data), "--no-progress")
    out = capsys.readouterr().out
    assert "4 questions from" in out and "| full |" in out and "| reasoning |" in out
    assert "macro-F1" in out and "answers/s" in out and "answer_evidence:pubmedqa-pqal" in out
    assert "written to" not in out  # --data prints only
    # the rationales of (up to) 40 questions, generated as served by the active generator, and measured
    assert "### Generated rationales (`--rationales 40`)" in out and "4 questions (full setting)" in out
    assert "agrees with the answer" in out and "\"sentences\": 1" in out and "\"min_new_tokens\": 4" in out


def test_evaluate_answers_cross_validates_on_the_shared_questions(tiny_models, capsys):
    require_shared_data("pubmedqa", "pqal_train.json")
    call_command("evaluate", "answers", "--limit", "30", "--folds", "3", "--setting", "reasoning", "--no-write",
                 "--no-progress")
    out = capsys.readouterr().out
    assert "30 PubMedQA questions, 3-fold cross-validation" in out and "| reasoning |" in out
    assert "| full |" not in out


class _Reader:
    """An answer-evidence reading by one word: "reduced" -> yes, "did not" -> no, else maybe."""

    def predict(self, conclusion, *, question=""):
        text = conclusion.lower()
        return {"label": "no" if "did not" in text else "yes" if "reduced" in text else "maybe"}


def test_rationale_quality_on_hand_made_rationales():
    def answer(label, rationale, evidence="Aspirin reduced mortality by 20% (p = 0.01)."):
        return {"label": label, "question": "Does aspirin reduce mortality?", "rationale": rationale,
                "evidence": {"conclusion": {"text": evidence}}}

    quality = rationale_quality([
        answer("yes", "Aspirin reduced mortality by 20%."),  # restates the evidence, agrees
        answer("yes", "Yes."),  # the label alone
        answer("no", "It did not help, as 45% of dragons agree. More."),  # two sentences, a new number and new words
        answer("yes", "The trial reduced mortality."),
    ], _Reader())
    assert quality["n"] == 4 and quality["label_only"] == 0.25 and quality["one_sentence"] == 0.75
    assert quality["unsupported_number"] == 0.25  # 45 is in neither the question nor the evidence
    assert quality["agrees"] == 0.75  # "Yes." reads as maybe
    # content words found: 3/3 (aspir, reduc, morta), 2/3 (trial is new), 0/4 (help, dragons, agree, more)
    assert quality["support"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # a bare label before the sentence is not a sentence of its own when the settings say so
    labelled = answer("yes", "Yes. Aspirin reduced mortality by 20%.")
    assert rationale_quality([labelled], _Reader())["one_sentence"] == 0
    labelled["rationale_settings"] = {"sentences": 1, "sentence_min_words": 5}
    assert rationale_quality([labelled], _Reader())["one_sentence"] == 1
