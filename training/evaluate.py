"""Held-out evaluation of a generator, exactly as the runtime serves it.

- QA accuracy: the literature kind's prompt and label-likelihood answer (``Generator.score_options``
  over Yes/No/Maybe), on held-out PubMedQA questions (one cross-validation fold).
- NLL: mean per-token negative log-likelihood of the held-out abstracts (``Generator.nll``).

The same function scores the base model before training and the merged model after, so the two
numbers are like for like; ``evaluation_key`` names the held-out set so that the registry only
ever compares scores measured on the same questions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medassist.knowledge.prompts import ANSWER_LABELS, ANSWER_SURFACE

from .data import Example, Record


def evaluation_key(examples: list[Example], *, name: str) -> str:
    digest = hashlib.sha256(json.dumps([[e.id, e.turns[0][0], e.label] for e in examples]).encode()).hexdigest()
    return f"{name}#{digest[:12]}"


def load_generator(model_dir: str | Path, *, threads: int | None = None):
    """fp32 torch generator; all cores by default (a training run owns the cores it trains on)."""
    import os

    from workers.runtime.engines import Generator, TorchCausalLM

    backend = TorchCausalLM(Path(model_dir), threads=threads or os.cpu_count() or 1)
    return Generator(backend, Path(model_dir))


def evaluate_generator(generator, qa_examples: list[Example], nll_records: list[Record], *,
                       nll_texts_max: int = 50, predictions_path: Path | None = None) -> dict:
    """{"accuracy", "n", "predicted": {label: count}, "nll", "nll_texts"} for one model.

    ``predictions_path``: also write one JSON line per question (record id, label, predicted, label
    probabilities), so a run's answers can be inspected or compared question by question.
    """
    scores: dict = {}
    if qa_examples:
        prompts = [generator.chat_prompt(e.turns[0][0]) for e in qa_examples]
        probabilities = generator.score_options(prompts, [ANSWER_SURFACE[label] for label in ANSWER_LABELS])
        predicted = [ANSWER_LABELS[max(range(len(ANSWER_LABELS)), key=lambda i: p[ANSWER_SURFACE[ANSWER_LABELS[i]]])]
                     for p in probabilities]
        correct = sum(p == e.label for p, e in zip(predicted, qa_examples, strict=True))
        if predictions_path is not None:
            with open(predictions_path, "w") as out:
                for e, p, probs in zip(qa_examples, predicted, probabilities, strict=True):
                    out.write(json.dumps({"id": e.group, "label": e.label, "predicted": p, "probabilities": {
                        label: round(float(probs[ANSWER_SURFACE[label]]), 6) for label in ANSWER_LABELS}}) + "\n")
        scores.update(accuracy=round(correct / len(qa_examples), 4), n=len(qa_examples),
                      predicted={label: predicted.count(label) for label in ANSWER_LABELS})
    texts = [f"{r.title}\n{r.text}".strip() for r in nll_records if r.text][:nll_texts_max]
    if texts:
        scores.update(nll=round(generator.nll(texts), 4), nll_texts=len(texts))
    return scores
