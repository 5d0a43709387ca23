"""The answer-evidence model: negation scopes, training, the JSON artifact, and its held-out accuracy."""
import json

import pytest

from medassist.knowledge.summarize import conclusion_sentences
from workers.runtime import answer_evidence

# Made for these tests: conclusions a reader labels without hesitation.
POSITIVE = ["Treatment significantly reduced mortality.", "The drug improved survival.",
            "Screening increased detection of early cancer.", "Exercise significantly improved fitness."]
NEGATIVE = ["Treatment did not reduce mortality.", "The drug had no effect on survival.",
            "Screening failed to increase detection.", "Exercise did not improve fitness."]
UNCERTAIN = ["The effect on mortality remains unclear.", "Whether the drug improves survival is uncertain.",
             "Further trials are needed before screening.", "The benefit of exercise remains unclear."]


def test_a_negation_marks_the_words_after_it_until_the_clause_ends():
    assert answer_evidence.tokens("Aspirin did not reduce stroke risk, but it reduced bleeding.") == [
        "aspirin", "did", "not", "NEG_reduce", "NEG_stroke", "NEG_risk", "but", "it", "reduced", "bleeding"]
    # The scope is a few words long, and "n't" opens one too.
    assert answer_evidence.tokens("It didn't change a b c d e")[-2:] == ["d", "e"]
    assert answer_evidence.tokens("It didn't change a b c d e")[2] == "NEG_change"


def test_trained_on_clear_labels_it_reads_negated_findings_as_no_and_lists_its_terms(tmp_path):
    conclusions = POSITIVE * 3 + NEGATIVE * 3 + UNCERTAIN * 3
    labels = ["yes"] * 12 + ["no"] * 12 + ["maybe"] * 12
    artifact = answer_evidence.train(conclusions, labels, c=10.0)
    answer_evidence.save(artifact, tmp_path)
    model = answer_evidence.AnswerEvidenceModel.load(tmp_path)  # served from the JSON file alone
    assert json.loads((tmp_path / answer_evidence.ARTIFACT_FILE).read_text())["trained_on"]["examples"] == 36

    positive = model.predict("The new treatment significantly reduced mortality in adults.")
    negative = model.predict("The new treatment did not reduce mortality in adults.")
    assert positive["label"] == "yes" and negative["label"] == "no"
    assert sum(positive["probabilities"].values()) == pytest.approx(1.0)
    assert any("(not)" in term["ngram"] or term["ngram"] == "not" for term in negative["terms"])
    assert all(term["weight"] > 0 for term in positive["terms"])
    # Nothing it knows: the intercepts alone, and no terms to show.
    assert model.predict("Zebra quantum.")["terms"] == []


def test_training_refuses_unknown_or_single_labels():
    with pytest.raises(ValueError, match="perhaps"):
        answer_evidence.train(["a b", "c d"], ["yes", "perhaps"])
    with pytest.raises(ValueError, match="two different"):
        answer_evidence.train(["a b", "c d"], ["yes", "yes"])


def test_two_labels_only_still_give_three_probabilities():
    model = answer_evidence.AnswerEvidenceModel(answer_evidence.train(POSITIVE * 2 + NEGATIVE * 2,
                                                                       ["yes"] * 8 + ["no"] * 8))
    reading = model.predict("The drug did not improve survival.")
    assert reading["label"] == "no" and reading["probabilities"]["maybe"] < 1e-6


def test_on_pubmedqa_held_out_folds_it_beats_the_majority_class(answer_evidence_dir):
    """Cross-validated on the fine-tuning folds (trained on 4, scored on the 5th) by models_prepare's build."""
    metrics = json.loads((answer_evidence_dir / "metrics.json").read_text())
    (evaluation,) = metrics["evaluations"].values()
    assert evaluation["n"] == 500 and metrics["majority_class_accuracy"] == pytest.approx(0.552)
    # Recipe 2 is scored on each question with and without its conclusion (the harder reasoning setting
    # included): measured 0.627 (folds 0.535-0.705); the majority class scores 0.552.
    assert evaluation["accuracy"] >= 0.60, metrics
    assert min(metrics["fold_accuracy"]) > 0.5


def test_significance_cues_and_question_interaction_are_read():
    cues = answer_evidence.cues("Stay did not differ (p = 0.62; 95% CI 0.8 to 1.3); mortality fell (p < 0.001), "
                                "hazard ratio 0.6 (95% CI 0.4-0.9). It was not significantly shorter.")
    assert cues.count("CUE_pns") == 1 and cues.count("CUE_psig") == 1 and "CUE_null" in cues
    assert cues.count("CUE_cicross") == 1 and cues.count("CUE_ciexcl") == 1 and "CUE_negsig" in cues
    question = "Does early mobilisation reduce length of stay?"
    assert "X_dir_opp" in answer_evidence.interaction(question, "Early mobilisation increased length of stay.")
    assert "X_dir_same" in answer_evidence.interaction(question, "Early mobilisation reduced length of stay.")
    assert "X_qneg" in answer_evidence.interaction(question, "Mobilisation did not reduce length of stay.")


def test_polarity_words_pool_into_one_cue_each_and_a_negation_flips_them():
    """Recipe 3: words too rare to be n-grams of their own still say what the conclusion found."""
    assert answer_evidence.cues("Mass drug administration was insufficient to control the disease.").count(
        "CUE_negword") == 1
    assert answer_evidence.cues("Laparoscopic myomectomy is feasible and safe.").count("CUE_posword") == 2
    negated = answer_evidence.cues("Screening was not effective.")
    assert "CUE_negword" in negated and "CUE_posword" not in negated
    assert answer_evidence.RECIPE["version"] == 3  # the artifact records it: models_prepare rebuilds older ones


QUESTION = "Does early mobilisation reduce length of hospital stay after hip surgery?"
METHODS = "We randomised 200 adults to early or usual mobilisation."


@pytest.mark.parametrize(("conclusion", "results", "expected"), [
    ("There was no significant difference in length of stay between the groups.",
     "Length of stay did not differ between groups (8.1 vs 8.3 days, p = 0.62; 95% CI -1.2 to 0.9).", "no"),
    ("Early mobilisation significantly reduced length of hospital stay.",
     "Length of stay was shorter with early mobilisation (6.1 vs 8.3 days, p < 0.001; 95% CI 1.5 to 2.9).", "yes"),
    # The conclusion withheld (reasoning-required): the results' significance cues decide.
    ("", "Length of stay did not differ between groups (8.1 vs 8.3 days, p = 0.62; 95% CI -1.2 to 0.9).", "no"),
    ("", "Length of stay was shorter with early mobilisation (6.1 vs 8.3 days, p < 0.001; 95% CI 1.5 to 2.9).", "yes"),
])
def test_the_pubmedqa_model_reads_significance_in_clear_cut_abstracts(answer_evidence_dir, conclusion, results,
                                                                       expected):
    model = answer_evidence.AnswerEvidenceModel.load(answer_evidence_dir)
    reading = model.predict(conclusion, question=QUESTION, context=[METHODS, results])
    assert reading["label"] == expected, reading
    if expected == "no" and not conclusion:  # the cue that decided it is named, in words
        assert any(term["ngram"].startswith("results: ") for term in reading["terms"]), reading["terms"]


def test_balanced_class_weights_let_maybe_be_predicted_for_hedged_conclusions():
    model = answer_evidence.AnswerEvidenceModel(answer_evidence.train(
        POSITIVE * 6 + NEGATIVE * 6 + UNCERTAIN, ["yes"] * 24 + ["no"] * 24 + ["maybe"] * 4))
    assert model.predict("Whether the benefit of treatment is real remains unclear.")["label"] == "maybe"


@pytest.mark.parametrize(("text", "found_by", "expected"), [
    ("BACKGROUND: Stroke is common.\nRESULTS: Fewer strokes.\nCONCLUSIONS: Aspirin helps. It is cheap.",
     "section", "Aspirin helps. It is cheap."),
    ("Stroke is common. We treated 100 adults. Fewer had strokes. In conclusion, aspirin helps. Use it.",
     "cue phrase", "In conclusion, aspirin helps. Use it."),
    ("Stroke is common. We treated 100 adults. Fewer had strokes. Aspirin helps.", "last sentences",
     "Fewer had strokes. Aspirin helps."),
])
def test_the_conclusion_is_found_by_label_then_cue_then_position(text, found_by, expected):
    spans, how = conclusion_sentences(text)
    assert how == found_by and " ".join(text[s:e] for s, e in spans) == expected


def test_bench_answers_compares_generator_evidence_and_pooled_on_held_out_questions(db, tmp_path, capsys, settings):
    """Held-out generator predictions in, the comparison table out (docs/benchmarks.md left alone)."""
    from django.core.management import CommandError, call_command

    from training.data import read_records
    from training.prepare import pubmedqa_path

    records = read_records(pubmedqa_path())[:40]
    predictions = tmp_path / "eval_after.jsonl"
    # A generator that always says "no", as the base model nearly does.
    predictions.write_text("".join(json.dumps({"id": r.id, "probabilities": {"yes": 0.2, "no": 0.7, "maybe": 0.1}})
                                   + "\n" for r in records))
    settings.MEDASSIST_QA_GENERATOR_WEIGHT = 1.0  # the served weight is marked in the table
    call_command("bench_answers", "--predictions", str(predictions), "--weights", "0,1", "--no-write")
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    always_no = sum(r.label == "no" for r in records) / 40
    assert f"{always_no:.1%}" in rows["generator alone (label likelihood)"]
    assert "40 questions" in out and "pooled, generator weight 0" in rows and "pooled, generator weight 1 (served)" in rows
    with pytest.raises(CommandError, match="--generator"):
        call_command("bench_answers")
