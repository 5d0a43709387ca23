"""Tests for medassist.knowledge.diagnosis_state that need no database (the kind's tests run the rest:
tests/kinds/test_diagnosis_kind.py)."""
from __future__ import annotations

import numpy as np

from medassist.knowledge import diagnosis_state as state


def test_one_encoder_per_embedder_version(monkeypatch):
    monkeypatch.setattr(state, "_encoder", None)
    made = []

    def make(version):
        def encode_factory():
            made.append(version)
            return lambda texts: np.ones((len(texts), 3))
        return encode_factory

    first = state.text_encoder("embedder:a#1", make("a"))
    assert state.text_encoder("embedder:a#1", make("a")) is first and made == ["a"]  # the model is not fetched again
    second = state.text_encoder("embedder:b#2", make("b"))
    assert second is not first and second.version == "embedder:b#2" and made == ["a", "b"]


def test_knowledge_files_name_the_three_inputs():
    assert set(state.knowledge_files()) == {"hsdn", "symptoms", "abbreviations"}
