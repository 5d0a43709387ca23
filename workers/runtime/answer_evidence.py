"""What an abstract's conclusion says about a yes/no/maybe question, read by a small linear model.

Why it exists: the shipped 135M generator scores the answer labels almost without reading the abstract
(the same trial reported as clearly positive and as clearly null gets nearly the same P(yes); see
docs/evaluation.md). An answer the product returns must
rest on what the abstract says, so the literature kind pools the generator's label likelihood with this
model's reading of the conclusion (see ``medassist.kinds.literature``).

The model, trained on the expert labels of PubMedQA (PQA-L, the 500 questions in shared data):

- text: the conclusion only (PubMedQA's long answer when training; ``summarize.conclusion_sentences``
  of a submitted abstract when serving);
- tokens: lower-cased words; a NegEx-style scope marks up to ``NEGATION_SCOPE`` words after a negation
  cue ("no", "not", "without", "failed", ...) as negated, so "did not reduce" and "reduced" differ;
- features: word 1-2 grams seen in at least 2 training conclusions, sublinear tf-idf, l2-normalised;
- classifier: multinomial logistic regression (scikit-learn for fitting only; the artifact is JSON and
  serving is a dot product in numpy, so every answer can list the n-grams that pushed it).

Measured with the fine-tuning folds (``training.data.pubmedqa_folds``, 5 x 100 questions):
see docs/benchmarks.md, "Answer evidence". The model does not read the question: it says whether the
conclusion reports a positive, a negative or an uncertain finding. The literature kind checks that the
abstract is about the question (``question_coverage``) before letting it count.

Public interface::

    tokens(text) -> list[str]
    train(conclusions, labels, *, c=3.0) -> dict              # JSON-serialisable artifact
    cross_validate(conclusions, labels, folds, *, c=3.0) -> list[float]
    AnswerEvidenceModel(artifact).predict(conclusion) -> {"probabilities", "terms"}
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

__all__ = ["LABELS", "FORMAT", "tokens", "train", "cross_validate", "AnswerEvidenceModel", "save"]

LABELS = ("yes", "no", "maybe")
FORMAT = "ngram-logreg"
ARTIFACT_FILE = "answer_evidence.json"
NEGATION_SCOPE = 4  # words after a negation cue that count as negated (a clause boundary ends it sooner)
MIN_DF = 2  # an n-gram must occur in this many training conclusions
DEFAULT_C = 3.0  # inverse L2 strength; chosen by cross-validation over 0.3-30 (docs/benchmarks.md)
# What the artifact was built with: a change here rebuilds it in models_prepare.
RECIPE = {"text": "conclusion", "ngrams": [1, 2], "min_df": MIN_DF, "negation_scope": NEGATION_SCOPE,
          "tfidf": "sublinear, l2", "classifier": "multinomial logistic regression", "c": DEFAULT_C, "version": 1}
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


def train(conclusions: Sequence[str], labels: Sequence[str], *, c: float = DEFAULT_C) -> dict:
    """Fit the model; returns the artifact (vocabulary, idf, weights) as plain JSON-able data."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"labels: {', '.join(unknown)} not one of {', '.join(LABELS)}")
    if len(set(labels)) < 2:
        raise ValueError("labels: training needs at least two different answers")
    vectorizer = TfidfVectorizer(analyzer=lambda text: _ngrams(tokens(text)), min_df=MIN_DF, sublinear_tf=True)
    features = vectorizer.fit_transform(conclusions)
    classifier = LogisticRegression(C=c, max_iter=5000).fit(features, list(labels))
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
    vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    return {
        "format": FORMAT, "labels": list(LABELS), "c": c, "min_df": MIN_DF, "negation_scope": NEGATION_SCOPE,
        "vocabulary": vocabulary, "idf": [round(float(x), 6) for x in vectorizer.idf_],
        "coef": [[round(float(x), 6) for x in row] for row in coef],
        "intercept": [round(float(x), 6) for x in intercept],
        "trained_on": {"examples": len(labels), "labels": dict(Counter(labels))},
    }


def cross_validate(conclusions: Sequence[str], labels: Sequence[str], folds: Sequence[Sequence[int]], *,
                   c: float = DEFAULT_C) -> list[float]:
    """Accuracy on each fold (indices into ``conclusions``) of a model trained on the other folds."""
    accuracies = []
    for held_out in folds:
        held = set(held_out)
        train_idx = [i for i in range(len(labels)) if i not in held]
        model = AnswerEvidenceModel(train([conclusions[i] for i in train_idx], [labels[i] for i in train_idx], c=c))
        correct = sum(model.predict(conclusions[i])["label"] == labels[i] for i in held_out)
        accuracies.append(correct / max(len(held_out), 1))
    return accuracies


class AnswerEvidenceModel:
    """Serving side: tf-idf and a softmax over three dot products, in numpy (no scikit-learn)."""

    def __init__(self, artifact: dict):
        if artifact.get("format") != FORMAT or artifact.get("labels") != list(LABELS):
            raise ValueError(f"not a {FORMAT} answer-evidence artifact")
        self.vocabulary = {term: i for i, term in enumerate(artifact["vocabulary"])}
        self.terms = artifact["vocabulary"]
        self.idf = np.asarray(artifact["idf"], dtype=np.float64)
        self.coef = np.asarray(artifact["coef"], dtype=np.float64)
        self.intercept = np.asarray(artifact["intercept"], dtype=np.float64)
        if self.coef.shape != (len(LABELS), len(self.terms)) or self.idf.shape != (len(self.terms),):
            raise ValueError("answer-evidence artifact: weight shapes do not match the vocabulary")

    @classmethod
    def load(cls, path: str | Path) -> AnswerEvidenceModel:
        path = Path(path)
        return cls(json.loads((path / ARTIFACT_FILE if path.is_dir() else path).read_text()))

    def predict(self, conclusion: str, *, top_terms: int = 5) -> dict:
        """``{"label", "probabilities", "terms"}``; ``terms``: the n-grams that pushed most towards the label.

        A conclusion with no known n-gram gets the intercepts alone (the training label frequencies).
        """
        counts = Counter(t for t in _ngrams(tokens(conclusion)) if t in self.vocabulary)
        index = np.fromiter((self.vocabulary[t] for t in counts), dtype=np.int64, count=len(counts))
        values = np.fromiter((1.0 + math.log(n) for n in counts.values()), dtype=np.float64, count=len(counts))
        values *= self.idf[index]
        norm = float(np.linalg.norm(values))
        if norm:
            values /= norm
        logits = self.coef[:, index] @ values + self.intercept
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        # How much each n-gram moved the chosen label's logit above the mean of the others.
        push = (self.coef[best, index] - np.delete(self.coef[:, index], best, axis=0).mean(axis=0)) * values
        order = [i for i in np.argsort(-push)[:top_terms] if push[i] > 0]
        return {
            "label": LABELS[best],
            "probabilities": {label: float(p) for label, p in zip(LABELS, probabilities, strict=True)},
            "terms": [{"ngram": _readable(self.terms[index[i]]), "weight": round(float(push[i]), 3)} for i in order],
        }


def save(artifact: dict, directory: str | Path) -> Path:
    path = Path(directory) / ARTIFACT_FILE
    path.write_text(json.dumps(artifact))
    return path


def _readable(ngram: str) -> str:
    # "NEG_reduce risk" -> "(not) reduce risk": the marker is an implementation detail.
    return " ".join(f"(not) {w[4:]}" if w.startswith("NEG_") else w for w in ngram.split(" "))
