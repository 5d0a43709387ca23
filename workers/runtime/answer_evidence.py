"""What an abstract's conclusion says about a yes/no/maybe question, read by a small linear model.

Why it exists: the shipped 135M generator scores the answer labels almost without reading the abstract
(the same trial reported as clearly positive and as clearly null gets nearly the same P(yes); see
docs/evaluation.md). An answer the product returns must
rest on what the abstract says, so the literature kind pools the generator's label likelihood with this
model's reading of the conclusion (see ``medassist.kinds.literature``).

The model, trained on the expert labels of PubMedQA (PQA-L, the 500 questions in shared data):

- text, read as the literature kind serves it (``knowledge.summarize.evidence_input``): the conclusion
  (``summarize.conclusion_sentences``), the other sentences (``context``: mostly the results), the question;
  each training question is read twice, submitted with its conclusion and without it, so one model
  serves abstracts of both kinds;
- tokens: lower-cased words; a NegEx-style scope marks up to ``NEGATION_SCOPE`` words after a negation
  cue ("no", "not", "without", "failed", ...) as negated, so "did not reduce" and "reduced" differ;
- feature blocks (``BLOCK_WEIGHTS``), each sublinear tf-idf and l2-normalised on its own: the
  conclusion's word 1-2 grams and significance cues (``cues``: p-values below/above 0.05, "no significant
  difference", confidence intervals crossing 1 or 0, negated "significant", hedges); the results'
  significance cues; question-sentence interaction (``interaction``: the question's words stated or
  negated, a direction word with or against the question's); the question's own words. Terms seen in at
  least 2 training examples;
- classifier: multinomial logistic regression with balanced class weights (so "maybe" is predicted when
  the reading is mixed), scikit-learn for fitting only; the artifact is JSON and serving is a dot
  product in numpy, so every answer can list the terms that pushed it.

Measured through the served path with ``manage.py evaluate answers`` (docs/evaluation.md, "answers").
The literature kind checks that the abstract is about the question (``question_coverage``) before
letting the reading count.

Public interface::

    tokens(text) -> list[str]
    cues(text), interaction(question, text), blocks(conclusion, question=, context=) -> terms
    train(conclusions, labels, *, questions=None, contexts=None, c=3.0) -> dict   # JSON-serialisable artifact
    cross_validate(conclusions, labels, folds, *, questions=None, contexts=None) -> list[float]
    AnswerEvidenceModel(artifact).predict(conclusion, question=, context=) -> {"label", "probabilities", "terms"}
    AnswerEvidenceModel.load(path); save(artifact, directory)
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["LABELS", "FORMAT", "tokens", "cues", "interaction", "blocks", "train", "cross_validate", "AnswerEvidenceModel",
           "save"]

LABELS = ("yes", "no", "maybe")
FORMAT = "ngram-logreg"
ARTIFACT_FILE = "answer_evidence.json"
NEGATION_SCOPE = 4  # words after a negation cue that count as negated (a clause boundary ends it sooner)
MIN_DF = 2  # an n-gram must occur in this many training conclusions
DEFAULT_C = 3.0  # inverse L2 strength; recipe 1's value (cross-validated over 0.3-30), kept for recipe 2
# What the artifact was built with: a change here rebuilds it in models_prepare.
CLASS_WEIGHT = "balanced"  # labels weighted by inverse frequency, so the rare "maybe" (11%) is ever predicted
# Feature blocks, each tf-idf'd and l2-normalised on its own, then scaled: "c" the conclusion's n-grams and
# cues, "r" the significance cues of the other sentences (the results), "x" question-conclusion interaction,
# "q" the question's own words (a prior on how such questions are answered; half weight).
BLOCK_WEIGHTS = {"c": 1.0, "r": 1.0, "x": 1.0, "q": 0.5}
RECIPE = {"text": "conclusion + results cues + question", "ngrams": [1, 2], "min_df": MIN_DF,
          "negation_scope": NEGATION_SCOPE, "tfidf": "sublinear, l2 per block", "blocks": BLOCK_WEIGHTS,
          "classifier": "multinomial logistic regression", "c": DEFAULT_C, "class_weight": CLASS_WEIGHT,
          "training views": "with and without the conclusion", "polarity words": "one cue each, negated flips",
          "version": 3}
_NEGATION = frozenset("no not non without neither nor none never cannot failed fail fails unable lack lacks "
                      "lacked absence absent".split())
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,;:!?]")


def tokens(text: str) -> list[str]:
    """Lower-cased words; a word in a negation scope is written ``NEG_word``; punctuation ends a scope."""
    out: list[str] = []
    scope = 0
    for token in _TOKEN_RE.findall(text.lower()):
        if token in ".,;:!?":
            scope = 0
            continue
        if token in _NEGATION or token.endswith("n't"):
            out.append(token)
            scope = NEGATION_SCOPE
            continue
        out.append(f"NEG_{token}" if scope else token)
        scope = max(scope - 1, 0)
    return out


def _ngrams(words: list[str]) -> list[str]:
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


# --- cues and question interaction ------------------------------------------------------------------------
# Significance cues: p-values below / above 0.05, "no significant difference" and its kin, confidence
# intervals that cross 1 (ratios) or 0 (differences), "significant(ly)" plain or negated, hedges.
_P_VALUE = re.compile(r"\bp\s*(<|≤|<=|=|>|≥|>=)\s*(0?\.\d+|[01])")
_NULL = re.compile(r"\b(no|not|non-?|without)\s*(statistically\s+)?significant|\bdid not differ|\bdo not differ"
                   r"|\bno (significant )?differences?\b|\bnot differ|\bsimilar\b|\bcomparable\b"
                   r"|\bno (significant )?(association|correlation|effect|benefit|improvement)"
                   r"|\bnot (significantly )?(associated|correlated)|\bunchanged\b|\bnot affect")
_CI = re.compile(r"(?:ci|confidence interval)[^0-9\-]{0,12}(-?\d+(?:\.\d+)?)\s*(?:-|–|to|,)\s*(-?\d+(?:\.\d+)?)")
_HEDGE = re.compile(r"\b(may|might|could|possibly|potential(?:ly)?|unclear|uncertain|controversial|further"
                    r"|warrant\w*|larger|needed|remains?|suggests?|seems?|appears?)\b")
# Direction words: a question that asks "does X reduce Y" answered by "X increased Y" is a no.
_UP = frozenset("increase increased increases increasing improve improved improves improvement higher more greater "
                "raise raised enhance enhanced better benefit beneficial elevated rise".split())
_DOWN = frozenset("decrease decreased decreases decreasing reduce reduced reduces reduction lower less fewer decline "
                  "worse impair impaired diminish lowered".split())
# Polarity words (recipe 3): what a conclusion says of its finding, pooled into one cue each so that the many
# words too rare for an n-gram of their own (insufficient, deficit, feasible, ...) count as what they say.
_NEGATIVE = frozenset("insufficient inadequate ineffective inefficient poor poorly deficit deficits lack lacking "
                      "limited unnecessary unlikely unable fail failed fails failure neither nor unsuitable unreliable "
                      "inaccurate inferior unsafe unwarranted regardless rather instead low weak weakly none "
                      "contraindicated harmful unjustified nonsignificant".split())
_POSITIVE = frozenset("effective efficacious safe feasible beneficial useful reliable accurate valid superior "
                      "successful successfully improve improved improves improvement associated predicts predictive "
                      "predictor predicted independent strong strongly recommended justified appropriate good "
                      "excellent important valuable helpful sensitive specific".split())
_STOP = frozenset("a an the of in on for to and or is are was were be been does do did can could should would will "
                  "with by at as from that this it its their there than into whether which what who how".split())
_WORD = re.compile(r"[a-z0-9]+")
STEM = 6  # a word's first letters that match it to the question's ("reduced" ~ "reduce", "mortality" ~ "mortal")


def cues(text: str) -> list[str]:
    """One ``CUE_*`` term per significance cue or hedge in ``text``."""
    low = text.lower()
    out = []
    for op, value in _P_VALUE.findall(low):
        p = float(value)
        if op in ("<", "≤", "<="):
            out.append("CUE_psig" if p <= 0.05 else "CUE_pweak")
        elif op == "=":
            out.append("CUE_psig" if p < 0.05 else "CUE_pns")
        else:
            out.append("CUE_pns" if p >= 0.05 else "CUE_psig")
    out += ["CUE_null"] * len(_NULL.findall(low))
    for a, b in _CI.findall(low):
        low_end, high_end = sorted((float(a), float(b)))
        crosses = low_end < 0 < high_end or 0 < low_end <= 1 <= high_end
        out.append("CUE_cicross" if crosses else "CUE_ciexcl")
    words = tokens(text)
    out += ["CUE_sig" for t in words if t in ("significant", "significantly")]
    out += ["CUE_negsig" for t in words if t in ("NEG_significant", "NEG_significantly")]
    out += ["CUE_negword" if t in _NEGATIVE else "CUE_negword" if t[4:] in _POSITIVE else "CUE_posword"
            for t in words if t in _NEGATIVE or t in _POSITIVE or (t.startswith("NEG_") and t[4:] in _POSITIVE)]
    return out + ["CUE_hedge"] * len(_HEDGE.findall(low))


def _stems(question: str) -> set[str]:
    return {w[:STEM] for w in _WORD.findall((question or "").lower()) if w not in _STOP and len(w) > 2}


def interaction(question: str, text: str) -> list[str]:
    """``X_q`` / ``X_qneg``: a question word the text states / negates; ``X_dir_same|opp[_neg]``: a direction
    word of the text against the question's (increase vs decrease)."""
    asked = _stems(question)
    words = set(_WORD.findall((question or "").lower()))
    direction = ("up" if words & _UP else "") + ("down" if words & _DOWN else "")
    out = []
    for t in tokens(text):
        negated = t.startswith("NEG_")
        word = t[4:] if negated else t
        if word[:STEM] in asked and word not in _STOP:
            out.append("X_qneg" if negated else "X_q")
        moved = "up" if word in _UP else "down" if word in _DOWN else None
        if moved and direction in ("up", "down"):
            out.append(f"X_dir_{'same' if moved == direction else 'opp'}{'_neg' if negated else ''}")
    return out


def question_terms(question: str) -> list[str]:
    words = _WORD.findall((question or "").lower())
    return ([f"Q_first_{words[0]}"] if words else []) + [f"Q_{w}" for w in words]


_PLACEHOLDERS = frozenset({"r_none", "X_none"})  # what a block holds when it found nothing


def blocks(conclusion: str, *, question: str = "", context: Sequence[str] = ()) -> dict[str, list[str]]:
    """The terms of each feature block (see ``BLOCK_WEIGHTS``); ``context``: the abstract's other sentences."""
    results = " ".join(context)
    return {
        "c": _ngrams(tokens(conclusion)) + cues(conclusion),
        "r": ["r" + cue for cue in cues(results)] or ["r_none"],
        "x": (interaction(question, conclusion) + ["R" + t for t in interaction(question, " ".join(context[-4:]))]
              or ["X_none"]) if question else [],
        "q": question_terms(question),
    }


def train(conclusions: Sequence[str], labels: Sequence[str], *, questions: Sequence[str] | None = None,
          contexts: Sequence[Sequence[str]] | None = None, c: float = DEFAULT_C,
          class_weight: str | None = CLASS_WEIGHT) -> dict:
    """Fit the model; returns the artifact (per-block vocabulary and idf, weights) as plain JSON-able data.

    ``questions`` and ``contexts`` (each example's other sentences) are optional: without them the
    question and results blocks stay empty."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"labels: {', '.join(unknown)} not one of {', '.join(LABELS)}")
    if len(set(labels)) < 2:
        raise ValueError("labels: training needs at least two different answers")
    examples = [blocks(text, question=(questions[i] or "") if questions else "",
                       context=contexts[i] if contexts else ()) for i, text in enumerate(conclusions)]
    fitted, matrices = [], []
    for name, weight in BLOCK_WEIGHTS.items():
        vectorizer = TfidfVectorizer(analyzer=lambda terms: terms, min_df=MIN_DF, sublinear_tf=True)
        try:
            matrices.append(vectorizer.fit_transform([e[name] for e in examples]) * weight)
        except ValueError:  # no term of this block in MIN_DF examples (e.g. no questions given)
            continue
        vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
        fitted.append({"name": name, "weight": weight, "vocabulary": vocabulary,
                       "idf": [round(float(x), 6) for x in vectorizer.idf_]})
    features = sparse.hstack(matrices).tocsr()
    classifier = LogisticRegression(C=c, max_iter=5000, class_weight=class_weight).fit(features, list(labels))
    # Rows in LABELS order whatever order the classes were seen in; a label absent from training gets
    # weights of zero and a very low intercept, so it is never predicted.
    classes = list(classifier.classes_)
    coef = np.zeros((len(LABELS), features.shape[1]))
    intercept = np.full(len(LABELS), -30.0)
    for row, label in enumerate(LABELS):
        if label in classes:
            source = classes.index(label) if len(classes) > 2 else None
            if source is None:  # binary: sklearn keeps one row for classes_[1]
                sign = 1.0 if label == classes[1] else -1.0
                coef[row], intercept[row] = sign * classifier.coef_[0] / 2, sign * classifier.intercept_[0] / 2
            else:
                coef[row], intercept[row] = classifier.coef_[source], classifier.intercept_[source]
    return {
        "format": FORMAT, "labels": list(LABELS), "c": c, "class_weight": class_weight, "min_df": MIN_DF,
        "negation_scope": NEGATION_SCOPE, "blocks": fitted,
        "coef": [[round(float(x), 6) for x in row] for row in coef],
        "intercept": [round(float(x), 6) for x in intercept],
        "trained_on": {"examples": len(labels), "labels": dict(Counter(labels))},
    }


def cross_validate(conclusions: Sequence[str], labels: Sequence[str], folds: Sequence[Sequence[int]], *,
                   questions: Sequence[str] | None = None, contexts: Sequence[Sequence[str]] | None = None,
                   c: float = DEFAULT_C) -> list[float]:
    """Accuracy on each fold (indices into ``conclusions``) of a model trained on the other folds."""
    accuracies = []
    for held_out in folds:
        held = set(held_out)
        idx = [i for i in range(len(labels)) if i not in held]
        model = AnswerEvidenceModel(train(
            [conclusions[i] for i in idx], [labels[i] for i in idx], c=c,
            questions=[questions[i] for i in idx] if questions else None,
            contexts=[contexts[i] for i in idx] if contexts else None))
        correct = sum(model.predict(conclusions[i], question=questions[i] if questions else "",
                                    context=contexts[i] if contexts else ())["label"] == labels[i] for i in held_out)
        accuracies.append(correct / max(len(held_out), 1))
    return accuracies


class AnswerEvidenceModel:
    """Serving side: per-block tf-idf and a softmax over three dot products, in numpy (no scikit-learn)."""

    def __init__(self, artifact: dict):
        if artifact.get("format") != FORMAT or artifact.get("labels") != list(LABELS) or "blocks" not in artifact:
            raise ValueError(f"not a {FORMAT} answer-evidence artifact (version 2, with feature blocks)")
        self.blocks = []  # (name, weight, {term: column}, idf, first column)
        self.terms: list[str] = []
        for block in artifact["blocks"]:
            offset = len(self.terms)
            self.blocks.append((block["name"], float(block["weight"]),
                                {term: offset + i for i, term in enumerate(block["vocabulary"])},
                                np.asarray(block["idf"], dtype=np.float64), offset))
            self.terms += block["vocabulary"]
        self.coef = np.asarray(artifact["coef"], dtype=np.float64)
        self.intercept = np.asarray(artifact["intercept"], dtype=np.float64)
        if self.coef.shape != (len(LABELS), len(self.terms)):
            raise ValueError("answer-evidence artifact: weight shapes do not match the vocabulary")

    @classmethod
    def load(cls, path: str | Path) -> AnswerEvidenceModel:
        path = Path(path)
        return cls(json.loads((path / ARTIFACT_FILE if path.is_dir() else path).read_text()))

    def predict(self, conclusion: str, *, question: str = "", context: Sequence[str] = (),
                top_terms: int = 5) -> dict:
        """``{"label", "probabilities", "terms"}``; ``terms``: the terms that pushed most towards the label.

        ``question``: what is asked; ``context``: the abstract's sentences outside the conclusion.
        A text with no known term gets the intercepts alone."""
        terms = blocks(conclusion, question=question, context=context)
        indices, all_values = [], []
        for name, weight, vocabulary, idf, offset in self.blocks:
            counts = Counter(t for t in terms.get(name, ()) if t in vocabulary)
            index = np.fromiter((vocabulary[t] for t in counts), dtype=np.int64, count=len(counts))
            values = np.fromiter((1.0 + math.log(n) for n in counts.values()), dtype=np.float64, count=len(counts))
            values *= idf[index - offset]
            norm = float(np.linalg.norm(values))
            if norm:
                values *= weight / norm
            indices.append(index)
            all_values.append(values)
        index, values = np.concatenate(indices), np.concatenate(all_values)
        logits = self.coef[:, index] @ values + self.intercept
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        # How much each term moved the chosen label's logit above the mean of the others.
        push = (self.coef[best, index] - np.delete(self.coef[:, index], best, axis=0).mean(axis=0)) * values
        # (the placeholders of an example with no cue are no evidence to show)
        order = [i for i in np.argsort(-push) if push[i] > 0 and self.terms[index[i]] not in _PLACEHOLDERS]
        order = order[:top_terms]
        return {
            "label": LABELS[best],
            "probabilities": {label: float(p) for label, p in zip(LABELS, probabilities, strict=True)},
            "terms": [{"ngram": _readable(self.terms[index[i]]), "weight": round(float(push[i]), 3)} for i in order],
        }


def save(artifact: dict, directory: str | Path) -> Path:
    path = Path(directory) / ARTIFACT_FILE
    path.write_text(json.dumps(artifact))
    return path


_CUE_NAMES = {
    "CUE_psig": "p < 0.05", "CUE_pweak": "p below a threshold above 0.05", "CUE_pns": "p >= 0.05",
    "CUE_null": "no significant difference / did not differ", "CUE_cicross": "confidence interval crosses 1 or 0",
    "CUE_ciexcl": "confidence interval excludes 1 or 0", "CUE_sig": "significant", "CUE_negsig": "(not) significant",
    "CUE_hedge": "hedge (may, unclear, further studies)", "X_q": "question's words stated",
    "X_qneg": "question's words negated", "X_dir_same": "same direction as asked", "X_dir_opp": "opposite direction",
    "X_dir_same_neg": "(not) the direction asked", "X_dir_opp_neg": "(not) the opposite direction",
}


def _readable(ngram: str) -> str:
    # "NEG_reduce risk" -> "(not) reduce risk", "rCUE_pns" -> "results: p >= 0.05": markers are implementation
    # details.
    for prefix, where in (("r", "results: "), ("R", "results: "), ("", "")):
        if ngram.startswith(prefix) and ngram[len(prefix):] in _CUE_NAMES:
            return where + _CUE_NAMES[ngram[len(prefix):]]
    if ngram.startswith("Q_"):
        return "question: " + ngram[2:].replace("first_", "starts with ")
    if ngram.startswith("r:"):
        ngram = ngram[2:]
    return " ".join(f"(not) {w[4:]}" if w.startswith("NEG_") else w for w in ngram.split(" "))
