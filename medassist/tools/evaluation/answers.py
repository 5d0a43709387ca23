"""Evaluate the served yes/no/maybe answer: every question through the literature kind's own code path.

``evaluate_answers`` builds each question as the item a user would submit (the abstract, with its own
``question``), runs ``medassist.kinds.literature.run`` on batches, exactly as a worker does (the active
generator, the answer-evidence model, the pooling, the "does the abstract address the question" rule),
and scores the labels. Two settings, as PubMedQA defines them:

- ``full``: the abstract with its conclusion (PubMedQA's ``LONG_ANSWER``) at the end, as users submit
  abstracts;
- ``reasoning``: the conclusion withheld (PubMedQA's reasoning-required setting, the published anchors').

No model may be scored on a question it trained on. The answer-evidence model is trained on PubMedQA's
labelled questions, so with ``folds`` each fold's questions are answered by an evidence model trained
on the other folds only (``train_evidence``); scoring a file the served models never saw (``--data``)
uses the served evidence model as it is. The generator is the active one: the shipped base model has
never seen PubMedQA (a fine-tuned candidate has; do not activate one before evaluating).
"""
from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from medassist.knowledge.prompts import ANSWER_LABELS

SETTINGS = ("full", "reasoning")

# Published PubMedQA figures (reasoning-required setting, accuracy), as read in the BLURB leaderboard and
# the papers: recalled here, not re-measured.
ANCHORS = [
    ("majority class (always yes)", "55.2%"),
    ("PubMedBERT, PQA-L only (BLURB)", "about 56%"),
    ("BioLinkBERT-base / -large (BLURB)", "70.2% / 72.2%"),
    ("BioGPT (also trained on PQA-A's 211k questions)", "78.2%"),
    ("single human annotator", "78.0%"),
]


def item_for(record, setting: str) -> dict:
    """A PubMedQA record (``training.data.Record``) as a literature item with its own question."""
    if setting not in SETTINGS:
        raise ValueError(f"setting: {setting!r} unknown; use one of {', '.join(SETTINGS)}")
    text = record.text
    if setting == "full" and record.conclusion:
        text = f"{text}\n{record.conclusion}" if text else record.conclusion
    return {"id": record.id, "text": text, "question": record.question}


class _FoldRuntime:
    """The worker's runtime, with the answer-evidence engine of one fold in place of the served one."""

    def __init__(self, runtime, evidence, label: str):
        self.runtime, self.evidence, self.label = runtime, evidence, label

    def engine(self, role: str):
        return self.evidence if role == "answer_evidence" else self.runtime.engine(role)

    def version_label(self, role: str) -> str:
        return self.label if role == "answer_evidence" else self.runtime.version_label(role)


def predict(records: Sequence, *, setting: str, runtime, params: dict, batch_size: int = 8,
            folds: Sequence[Sequence[str]] | None = None,
            train_evidence: Callable[[Sequence], object] | None = None,
            progress: Callable[[Iterable], Iterable] = lambda it: it) -> list[dict]:
    """One ``answer`` dict per record (in order), from ``literature.run``.

    With ``folds`` (lists of record ids), each fold is answered with ``train_evidence(other records)``
    as the answer-evidence engine."""
    from medassist.kinds.literature import KIND

    groups: list[tuple[list, object]] = []
    if folds:
        position = {r.id: i for i, r in enumerate(records)}
        for k, fold in enumerate(folds):
            held_out = set(fold)
            engine = train_evidence([r for r in records if r.id not in held_out])
            groups.append(([records[position[i]] for i in fold], _FoldRuntime(runtime, engine, f"fold-{k + 1}-evidence")))
    else:
        groups.append((list(records), runtime))
    answers: dict[str, dict] = {}
    batches = [(group[i:i + batch_size], fold_runtime) for group, fold_runtime in groups
               for i in range(0, len(group), batch_size)]
    for batch, fold_runtime in progress(batches):
        results = KIND.run([item_for(r, setting) for r in batch], params, fold_runtime)
        for record, result in zip(batch, results, strict=True):
            answers[record.id] = result["answer"]
    return [answers[r.id] for r in records]


def score(gold: Sequence[str], answers: Sequence[dict], *, seconds: float | None = None, bins: int = 10) -> dict:
    """Accuracy, macro-F1, the confusion matrix (gold x predicted), calibration (ECE over ``bins`` bins of
    the predicted label's probability), the predicted distribution and the majority-class accuracy."""
    predicted = [a["label"] for a in answers]
    n = len(gold)
    confusion = {g: {p: 0 for p in ANSWER_LABELS} for g in ANSWER_LABELS}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    f1s = []
    for label in ANSWER_LABELS:
        tp = confusion[label][label]
        fp = sum(confusion[g][label] for g in ANSWER_LABELS) - tp
        fn = sum(confusion[label].values()) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    ece = 0.0
    confidences = [a["probabilities"][a["label"]] for a in answers]
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low < c <= high or (b == 0 and c == 0)]
        if members:
            accuracy = sum(predicted[i] == gold[i] for i in members) / len(members)
            mean_confidence = sum(confidences[i] for i in members) / len(members)
            ece += len(members) / n * abs(accuracy - mean_confidence)
    counts = Counter(gold)
    return {
        "n": n,
        "accuracy": sum(g == p for g, p in zip(gold, predicted, strict=True)) / n if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s),
        "f1": dict(zip(ANSWER_LABELS, f1s, strict=True)),
        "ece": ece,
        "confusion": confusion,
        "predicted": {label: predicted.count(label) for label in ANSWER_LABELS},
        "majority_class": counts.most_common(1)[0][1] / n if n else 0.0,
        "answers_per_second": n / seconds if seconds else None,
    }


def evaluate_answers(records: Sequence, *, settings: Sequence[str], runtime, params: dict, batch_size: int = 8,
                     folds=None, train_evidence=None, progress=lambda it: it) -> dict[str, dict]:
    """``score`` per setting, timing the answers (the models are loaded before the clock starts)."""
    if folds and train_evidence is not None:
        # Each fold's evidence model is trained before the clock starts, once for every setting: answers/s
        # measures answering, as a worker with its models loaded does it.
        built = {}
        for fold in folds:
            held_out = set(fold)
            training = [r for r in records if r.id not in held_out]
            built[tuple(r.id for r in training)] = train_evidence(training)
        train_evidence = lambda training: built[tuple(r.id for r in training)]  # noqa: E731
    out = {}
    for setting in settings:
        started = time.perf_counter()
        answers = predict(records, setting=setting, runtime=runtime, params=params, batch_size=batch_size,
                          folds=folds, train_evidence=train_evidence, progress=progress)
        out[setting] = score([r.label for r in records], answers, seconds=time.perf_counter() - started)
        out[setting]["answers"] = [{"id": r.id, "gold": r.label, **a} for r, a in zip(records, answers, strict=True)]
    return out


# --- rationale quality ---------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")
# Words any rationale may use without taking them from the evidence.
_RATIONALE_WORDS = frozenset("yes maybe study studies evidence answer question suggests suggest shows show found find "
                             "indicate indicates result results".split())


def rationale_quality(answers: Sequence[dict], reader) -> dict:
    """What a reader of the generated rationales would check, measured without a human:

    - ``one_sentence``: the rationale is one sentence (the prompt asks for one; a bare label before it, shorter
      than the rationale settings' ``sentence_min_words``, is not counted);
    - ``label_only``: it says no more than the label ("Yes.");
    - ``support``: the share of its content words (``summarize.content_stems``) found in the question or the
      evidence it was given (``rationale_input``): near 1 = it restates the evidence, low = it brings words
      of its own (a hallucination risk);
    - ``unsupported_number``: it states a number that neither the question nor the evidence has;
    - ``agrees``: the answer-evidence model, reading the rationale as if it were the conclusion, gives the
      answer's label (the rationale argues for the answer, not against it).

    ``answers``: the literature kind's ``answer`` dicts with a ``rationale``; ``reader`` an answer-evidence
    engine that never trained on these questions."""
    from medassist.knowledge.summarize import content_stems
    from workers.runtime.engines import sentence_ends

    rows = []
    for answer in answers:
        text = (answer.get("rationale") or "").strip()
        source = f"{answer['question']} {answer['evidence']['conclusion']['text']}"
        words = content_stems(text, ignore=_RATIONALE_WORDS)
        known = set(content_stems(source))
        numbers = set(_NUMBER_RE.findall(text)) - set(_NUMBER_RE.findall(source))
        rows.append({
            "words": len(text.split()),
            "one_sentence": bool(text) and not sentence_ends(
                text, min_words=(answer.get("rationale_settings") or {}).get("sentence_min_words", 1)),
            "label_only": text.lower().strip(" .!") in ("", *ANSWER_LABELS),
            "support": sum(w in known for w in words) / len(words) if words else None,
            "unsupported_number": bool(numbers),
            "agrees": reader.predict(text, question=answer["question"])["label"] == answer["label"] if text else False,
        })
    n = len(rows)
    supported = [r["support"] for r in rows if r["support"] is not None]
    return {
        "n": n,
        "mean_words": sum(r["words"] for r in rows) / n if n else 0.0,
        "one_sentence": sum(r["one_sentence"] for r in rows) / n if n else 0.0,
        "label_only": sum(r["label_only"] for r in rows) / n if n else 0.0,
        "support": sum(supported) / len(supported) if supported else 0.0,
        "unsupported_number": sum(r["unsupported_number"] for r in rows) / n if n else 0.0,
        "agrees": sum(r["agrees"] for r in rows) / n if n else 0.0,
    }
