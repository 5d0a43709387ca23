"""The words the language model is asked: one module shared by the job kinds and fine-tuning.

Fine-tuning writes its examples in exactly the prompts the kinds serve (``training.data``), so a
change here changes both, and a tuned adapter keeps matching what it is asked.
"""
from __future__ import annotations

ANSWER_LABELS = ("yes", "no", "maybe")
# Scored as the assistant's first word; chat models start an answer capitalised.
ANSWER_SURFACE = {"yes": "Yes", "no": "No", "maybe": "Maybe"}
SUMMARY_INSTRUCTION = "Summarize the abstract above in one or two sentences."
QA_INSTRUCTION = "Answer the question about the abstract above with yes, no or maybe."
RATIONALE_INSTRUCTION = "Explain the answer in one sentence, citing the evidence."
# The rationale reads the evidence the answer rests on (the conclusion sentences the answer-evidence model
# read), not the whole abstract: whole sentences, the question's first, up to this many words (issue 16).
# 50 rather than 80: 19% more rationales/s and the same measured quality (`evaluate answers --rationales`;
# on 100 held-out questions, 80 -> 50 words: agreement 70 -> 72%, support 45 -> 44%, label only 16 -> 15%).
RATIONALE_EVIDENCE_MAX_WORDS = 50


def abstract_block(item: dict) -> str:
    """An abstract as the model reads it: ``Title: ...`` (when there is one), then ``Abstract: ...``."""
    title = f"Title: {item['title']}\n" if item.get("title") else ""
    return f"{title}Abstract: {item['text']}"


def summary_prompt(item: dict) -> str:
    return f"{abstract_block(item)}\n\n{SUMMARY_INSTRUCTION}"


def question_prompt(item: dict, question: str) -> str:
    """The yes/no/maybe request about one abstract (``question`` already stripped)."""
    return f"{abstract_block(item)}\n\nQuestion: {question}\n{QA_INSTRUCTION}"


def rationale_evidence(question: str, evidence: str, max_words: int | None = None) -> str:
    """The evidence sentences the rationale reads: all of them when they fit in ``max_words``
    (``RATIONALE_EVIDENCE_MAX_WORDS``), else whole sentences, those sharing most of the question's words first,
    in their own order, until the next would not fit (a first sentence longer than that is cut, marked "…")."""
    from .summarize import question_overlap, split_sentences

    limit = RATIONALE_EVIDENCE_MAX_WORDS if max_words is None else max_words
    evidence = " ".join(evidence.split())
    if len(evidence.split()) <= limit:
        return evidence
    sentences = [evidence[s:e] for s, e in split_sentences(evidence)] or [evidence]
    ranked = sorted(range(len(sentences)), key=lambda i: (-question_overlap(question, sentences[i]), i))
    chosen, used = [], 0
    for i in ranked:
        words = len(sentences[i].split())
        if used + words > limit:
            if chosen:
                continue
            return " ".join(sentences[i].split()[:limit]) + " …"
        chosen.append(i)
        used += words
    return " ".join(sentences[i] for i in sorted(chosen))


def rationale_prompt(question: str, evidence: str, label: str) -> str:
    """Why ``label`` answers ``question``, asked over the evidence sentences alone (:func:`rationale_evidence`,
    at most ``RATIONALE_EVIDENCE_MAX_WORDS`` words): a one-turn request, served and fine-tuned alike."""
    evidence = rationale_evidence(question, evidence)
    # The question comes first: a job asks one question of many abstracts, and the generator reads the tokens
    # its prompts share (chat template, question) once per batch call (engines.Generator.generate).
    return (f"Question: {question}\nEvidence: {evidence.strip()}\n\nAnswer: {ANSWER_SURFACE[label]}.\n"
            f"{RATIONALE_INSTRUCTION}")


def diagnosis_explain_prompt(findings: list[dict], top_name: str) -> str:
    """The rationale request for a differential (``findings``: dicts with ``name`` and ``negated``)."""
    listed = ", ".join(f["name"] + (" (absent)" if f.get("negated") else "") for f in findings)
    return (f"Findings: {listed}. The knowledge base ranks {top_name} first. In two sentences, explain which "
            "findings support it and what should be checked next.")
