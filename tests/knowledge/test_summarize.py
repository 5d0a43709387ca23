"""Tests for medassist.knowledge.summarize (sentence splitting, extractive summary)."""

from __future__ import annotations

import json
import time

import pytest

from medassist.knowledge.summarize import extractive_summary, split_sentences
from tests.conftest import require_shared_data


@pytest.fixture(scope="module")
def pubmedqa() -> dict:
    path = require_shared_data("pubmedqa", "pqal_train.json")
    return json.loads(path.read_text(encoding="utf-8"))


def structured(record: dict) -> str:
    """A MEDLINE-style structured abstract: one "LABEL: text" line per section,
    with PubMedQA's long answer as the CONCLUSIONS section."""
    lines = [f"{label}: {ctx}" for label, ctx in zip(record["LABELS"], record["CONTEXTS"], strict=True)]
    lines.append(f"CONCLUSIONS: {record['LONG_ANSWER']}")
    return "\n".join(lines)


def sentences_of(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


# --------------------------------------------------------------------------
# splitting
# --------------------------------------------------------------------------


def test_abbreviations_do_not_end_sentences():
    text = (
        "Smith et al. reported a benefit. Outcomes, e.g. death, i.e. mortality, were rare vs. placebo. "
        "Dr. Jones reviewed Fig. 2 and Figs. 3-4. Cultures grew E. coli and S. aureus in 3 cases."
    )
    assert sentences_of(text) == [
        "Smith et al. reported a benefit.",
        "Outcomes, e.g. death, i.e. mortality, were rare vs. placebo.",
        "Dr. Jones reviewed Fig. 2 and Figs. 3-4.",
        "Cultures grew E. coli and S. aureus in 3 cases.",
    ]


def test_numbers_do_not_end_sentences():
    text = (
        "Doses of 1.5 mg and 0.25 mg/kg were compared (n = 10, p < 0.05). "
        "Mortality fell from 12.5% to 3.1% (95% CI 0.2-0.9). It was significant (p-value<0. 05). "
        "See No. 5 for details."
    )
    assert sentences_of(text) == [
        "Doses of 1.5 mg and 0.25 mg/kg were compared (n = 10, p < 0.05).",
        "Mortality fell from 12.5% to 3.1% (95% CI 0.2-0.9).",
        "It was significant (p-value<0. 05).",
        "See No. 5 for details.",
    ]


def test_initials_versus_a_capital_that_ends_a_sentence():
    text = "Treated at the M. D. Anderson Cancer Center. Levels of vitamin D. The rest were normal."
    assert sentences_of(text) == [
        "Treated at the M. D. Anderson Cancer Center.",
        "Levels of vitamin D.",
        "The rest were normal.",
    ]


def test_question_and_exclamation_marks_and_closing_brackets():
    text = 'Was it safe? Yes! The drug ("X.") was stopped (see above.) Then it resumed.'
    assert sentences_of(text) == [
        "Was it safe?",
        "Yes!",
        'The drug ("X.") was stopped (see above.)',
        "Then it resumed.",
    ]


def test_structured_abstract_lines_and_labels():
    text = (
        "BACKGROUND: Asthma is common.\n"
        "MATERIALS AND METHODS: We enrolled 40 children. They were followed for 2 years.\n"
        "RESULTS: Attacks fell by half\n"
        "CONCLUSIONS: Treatment works."
    )
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == [
        "Asthma is common.",
        "We enrolled 40 children.",
        "They were followed for 2 years.",
        "Attacks fell by half",  # a newline always ends a sentence
        "Treatment works.",
    ]
    summary = extractive_summary(text, max_sentences=5)
    assert [s["section"] for s in summary["sentences"]] == [
        "BACKGROUND",
        "MATERIALS AND METHODS",
        "MATERIALS AND METHODS",
        "RESULTS",
        "CONCLUSIONS",
    ]


def test_spans_are_stripped_and_exact():
    text = "  First sentence here.   Second one follows.\n\n  Third.  "
    for s, e in split_sentences(text):
        assert text[s:e] == text[s:e].strip() and text[s:e]
    assert sentences_of(text) == ["First sentence here.", "Second one follows.", "Third."]


def test_empty_text_has_no_sentences():
    assert split_sentences("") == []
    assert split_sentences(" \n\t ") == []


# --------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------

ABSTRACT = (
    "BACKGROUND: Statin therapy lowers cardiovascular risk, but its effect on stroke recurrence in "
    "elderly patients is uncertain.\n"
    "METHODS: We randomised 412 patients aged over 75 years with a prior ischaemic stroke to "
    "atorvastatin or placebo. Follow-up lasted 3 years. Visits were every 6 months.\n"
    "RESULTS: Recurrent stroke occurred in 9.1% of the atorvastatin group and 14.6% of the placebo "
    "group (p = 0.02). Myalgia was reported by 4 patients.\n"
    "CONCLUSIONS: Atorvastatin reduced stroke recurrence in elderly patients with prior ischaemic "
    "stroke without excess adverse events."
)
TITLE = "Atorvastatin and stroke recurrence in elderly patients"


def test_summary_picks_the_conclusion_and_keeps_order():
    summary = extractive_summary(ABSTRACT, max_sentences=3, title=TITLE)
    chosen = summary["sentences"]
    assert len(chosen) == 3
    indices = [s["index"] for s in chosen]
    assert indices == sorted(indices)
    assert chosen[-1]["section"] == "CONCLUSIONS"
    assert chosen[-1]["text"].startswith("Atorvastatin reduced stroke recurrence")
    assert summary["text"] == " ".join(s["text"] for s in chosen)
    for s in chosen:
        assert ABSTRACT[s["start"] : s["end"]] == s["text"]
        assert isinstance(s["score"], float)
    # short procedural sentences are not chosen
    assert "Follow-up lasted 3 years." not in summary["text"]
    assert summary["method"].startswith("tf-idf cosine")


def test_summary_is_deterministic():
    runs = [extractive_summary(ABSTRACT, max_sentences=2, title=TITLE) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_max_sentences_is_respected(k):
    summary = extractive_summary(ABSTRACT, max_sentences=k)
    assert len(summary["sentences"]) == k


def test_short_abstract_returns_every_sentence():
    text = "Aspirin reduced pain. Nobody had bleeding."
    summary = extractive_summary(text, max_sentences=3)
    assert [s["index"] for s in summary["sentences"]] == [0, 1]
    assert summary["text"] == text


def test_title_overlap_raises_a_sentence_score():
    plain = {s["index"]: s["score"] for s in extractive_summary(ABSTRACT, max_sentences=9)["sentences"]}
    titled = {s["index"]: s["score"] for s in extractive_summary(ABSTRACT, max_sentences=9, title=TITLE)["sentences"]}
    assert titled[0] > plain[0]  # background mentions stroke recurrence / elderly patients
    assert titled[3] == plain[3]  # "Follow-up lasted 3 years." shares no title word


def test_cue_phrase_bonus_without_sections():
    text = (
        "Obesity and diabetes were measured in a cohort of adults. "
        "Diabetes was more frequent in adults with obesity than without. "
        "Blood pressure was measured twice at every visit by trained nurses. "
        "In conclusion, obesity predicts diabetes in adults."
    )
    summary = extractive_summary(text, max_sentences=1)
    assert summary["sentences"][0]["text"].startswith("In conclusion")
    assert summary["sentences"][0]["section"] is None


def test_empty_summary():
    for text in ("", "   \n  "):
        summary = extractive_summary(text)
        assert summary["text"] == "" and summary["sentences"] == []
        assert summary["method"]


def test_max_sentences_must_be_positive():
    with pytest.raises(ValueError):
        extractive_summary(ABSTRACT, max_sentences=0)


# --------------------------------------------------------------------------
# real abstracts
# --------------------------------------------------------------------------


def test_pubmedqa_summaries(pubmedqa):
    records = list(pubmedqa.values())
    texts = [structured(r) for r in records]

    started = time.perf_counter()
    summaries = [extractive_summary(t, title=r["QUESTION"]) for t, r in zip(texts, records, strict=True)]
    ms = (time.perf_counter() - started) / len(texts) * 1000

    with_conclusion = 0
    sentence_counts = []
    for text, summary in zip(texts, summaries, strict=True):
        spans = split_sentences(text)
        sentence_counts.append(len(spans))
        for s, e in spans:
            assert text[s:e] == text[s:e].strip() and text[s:e]
            assert not text[s:e].startswith(("RESULTS:", "METHODS:", "CONCLUSIONS:", "BACKGROUND:"))
        chosen = summary["sentences"]
        assert len(chosen) == min(3, len(spans))
        assert [c["index"] for c in chosen] == sorted(c["index"] for c in chosen)
        for c in chosen:
            assert text[c["start"] : c["end"]] == c["text"]
            assert (c["start"], c["end"]) == spans[c["index"]]
        with_conclusion += any(c["section"] == "CONCLUSIONS" for c in chosen)

    share = with_conclusion / len(texts)
    avg = sum(sentence_counts) / len(sentence_counts)
    print(
        f"\nPubMedQA summaries: {avg:.1f} sentences/abstract, conclusion chosen in "
        f"{with_conclusion}/{len(texts)}, {ms:.3f} ms/abstract"
    )
    assert share >= 0.9
    assert ms < 20


def test_question_overlap_is_the_share_of_the_questions_own_words_in_the_text():
    from medassist.knowledge.summarize import question_overlap

    question = "Does early mobilisation reduce hospital stay in patients after hip surgery?"
    # "reduction" meets "reduce" (first 5 letters); "patients" and stopwords do not count
    assert question_overlap(question, "Early mobilisation: a reduction of hospital stay after hip surgery.") == 1.0
    assert question_overlap(question, "Metformin lowered HbA1c in type 2 diabetes patients.") == 0.0
    # 4 of its 7 words: early, mobilisation and reduce are missing
    assert question_overlap(question, "Hip surgery was followed by a long hospital stay.") == 4 / 7
    assert question_overlap("Is it so?", "anything") == 1.0  # nothing to judge by
