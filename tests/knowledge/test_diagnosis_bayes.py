"""The naive Bayes ranker over many association sources (knowledge.diagnosis_sources / diagnosis_bayes),
on the real ddx-knowledge files."""
from __future__ import annotations

import pytest

from medassist.knowledge.diagnosis_bayes import BayesRanker
from medassist.knowledge.diagnosis_sources import (
    DiseaseIndex,
    build_association_set,
    nhamcs_icd9,
    read_nhamcs_visits,
)
from medassist.knowledge.findings import SymptomVocabulary
from tests.conftest import require_shared_data


@pytest.fixture(scope="module")
def ddx_folder():
    return require_shared_data("ddx-knowledge")


@pytest.fixture(scope="module")
def association_set(ddx_folder):
    return build_association_set(ddx_folder)


@pytest.fixture(scope="module")
def ranker(association_set):
    return BayesRanker(association_set)


def test_nhamcs_fixed_width_layout(ddx_folder):
    visits = read_nhamcs_visits(ddx_folder / "nhamcs_ed2010" / "ED2010.zip")
    assert len(visits) == 34_936
    assert nhamcs_icd9("486--") == "486" and nhamcs_icd9("4280-") == "428.0" and nhamcs_icd9("78900") == "789.00"
    assert nhamcs_icd9("-9   ") is None and nhamcs_icd9("V991-") is None
    pneumonia = sum(1 for v in visits if "486" in v.diagnoses)
    assert pneumonia == 574  # the count the shared derived table was made from
    assert all(0 <= v.age <= 130 and v.sex in ("female", "male") for v in visits)


def test_crosswalk_icd9_486_mesh_pneumonia_doid(ddx_folder):
    index = DiseaseIndex(ddx_folder, ddx_folder.parent / "mesh-2015")
    canonical = index.from_icd9("486")
    assert canonical == "MESH:D011014"
    disease = index.diseases[canonical]
    assert disease.name == "Pneumonia"
    assert {"ICD9CM:486", "DOID:552", "UMLS:C0032285"} <= disease.xrefs
    assert index.from_doid("DOID:552", "pneumonia") == canonical
    assert index.from_icd9("428.0") == index.from_mesh("MESH:D006333", "Heart Failure")


def test_inverted_finding_names():
    vocab = SymptomVocabulary.from_names({"MESH:D002637": "Chest Pain", "MESH:D004417": "Dyspnea"})
    assert vocab.lookup("pain chest") == ("MESH:D002637", "Chest Pain")
    assert vocab.lookup("Pain, Chest") == ("MESH:D002637", "Chest Pain")
    assert vocab.lookup("breath shortness of") == ("MESH:D004417", "Dyspnea")


def test_universe_and_sources(association_set, ranker):
    counts = association_set.counts()
    assert counts["diseases"] >= 2000
    assert {"links_nhamcs", "links_hsdn", "links_dbpedia", "links_do", "links_ddxplus"} <= set(counts)
    # an NHAMCS reason-for-visit code is merged into the MeSH symptom of the same name
    assert ranker.resolve(["RFV:1010.0"])[0].concept_id == "MESH:D005334"


@pytest.mark.parametrize("text, disease", [
    ("fever, productive cough and pleuritic chest pain", "Pneumonia"),
    ("dyspnea, orthopnea and leg edema", "Heart Failure"),
    ("dysuria, frequency and suprapubic pain", "Urinary Tract Infections"),
    ("unilateral weakness and aphasia", "Stroke"),
])
def test_classic_presentations_rank_their_disease_in_the_top_3(ranker, text, disease):
    top = [d.name for d in ranker.rank([text], top_k=3, age=65, sex="female")]
    assert disease in top, top


def test_result_carries_evidence_and_codes(ranker):
    [first] = ranker.rank(["fever, productive cough and pleuritic chest pain"], top_k=1)
    assert first.name == "Pneumonia"
    assert any(c["code"].startswith("J18") for c in first.icd10cm)
    assert {m["name"] for m in first.matched} >= {"Fever", "Cough"}
    parts = first.score_components
    assert {"prior", "nhamcs", "hsdn"} <= set(parts)
    assert abs(sum(p["contribution"] for p in parts.values()) - first.score) < 0.01
    assert "Pneumonia is ranked #1" in first.explanation


def test_denied_findings_count_against(ranker):
    with_fever = {d.name: d.score for d in ranker.rank(["cough, fever"], top_k=50)}
    denied = {d.name: d.score for d in ranker.rank(["cough, denies fever"], top_k=50)}
    assert denied["Pneumonia"] < with_fever["Pneumonia"]
    [top] = ranker.rank(["cough, denies fever"], top_k=1)
    assert top.contradicted == [] or top.contradicted[0]["name"] == "Fever"


def test_served_weights_were_chosen_on_development_cases_and_keep_the_classics(association_set):
    import json

    from medassist.knowledge.diagnosis_bayes import BAYES_WEIGHTS_FILE, BayesWeights, default_bayes_weights

    written = json.loads(BAYES_WEIGHTS_FILE.read_text(encoding="utf-8"))
    assert "--open-world" in written["chosen_by"] and "development" in written["method"]
    served = default_bayes_weights()
    assert served == BayesWeights(**written["weights"]) and served != BayesWeights()
    ranker = BayesRanker(association_set, weights=served)
    for text, disease in [("fever, productive cough and pleuritic chest pain", "Pneumonia"),
                          ("dyspnea, orthopnea and leg edema", "Heart Failure"),
                          ("dysuria, frequency and suprapubic pain", "Urinary Tract Infections")]:
        top = [d.name for d in ranker.rank([text], top_k=5, age=65, sex="female")]
        assert disease in top, (text, top)


def test_write_bayes_weights_round_trips(tmp_path):
    from medassist.knowledge.diagnosis_bayes import BayesWeights, default_bayes_weights, write_bayes_weights

    path = write_bayes_weights(BayesWeights(prior=2.0, dbpedia=0.0), chosen_by="test", method="by hand",
                               path=tmp_path / "w.json")
    assert default_bayes_weights(path) == BayesWeights(prior=2.0, dbpedia=0.0)
    assert default_bayes_weights(tmp_path / "missing.json") == BayesWeights()


def test_parts_and_order_give_the_ranking_under_any_weights(ranker):
    from medassist.knowledge.diagnosis_bayes import BayesWeights

    weights = BayesWeights(prior=0.5, hsdn=2.0, do=0.0)
    findings = ranker.resolve(["fever, productive cough and pleuritic chest pain"])
    candidates, values = ranker.parts(findings, age=40, sex="male")
    order, _ = ranker.order(candidates, values, weights, top_k=10)
    assert order == ranker.ranked_indices(findings, top_k=10, age=40, sex="male", weights=weights)
