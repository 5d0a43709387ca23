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


def test_reason_for_visit_labels_name_findings_not_body_sites(association_set, ranker):
    """Body-site headings and injury-module sites are not text findings; a qualifier is not a synonym."""
    names = association_set.finding_names
    assert names["RFV:1046.0"] == "Symptoms (face)" and names["RFV:5110.0"] == "Injury (back)"
    assert names["RFV:1645.1"] == "Excessive urination (night)"
    for text in ("back", "nose", "face", "night", "neck"):
        assert ranker.resolve([f"pain in the {text}"])[-1].concept_id is None or \
            not ranker.resolve([f"pain in the {text}"])[-1].concept_id.startswith("RFV:"), text
    # a source's "palpitation" joins the reason for visit, so NHAMCS and DO evidence add up
    assert ranker.resolve(["palpitations"])[0].concept_id == ranker.resolve(["RFV:1260.0"])[0].concept_id


def test_ddxplus_questions_read_as_findings(ddx_folder, ranker):
    import json

    from medassist.knowledge.diagnosis_sources import FindingIndex, ddxplus_evidence_findings

    evidences = json.loads((ddx_folder / "ddxplus" / "release_evidences.json").read_text(encoding="utf-8"))
    index = FindingIndex({})
    index.vocabulary = ranker.vocabulary
    mapped = ddxplus_evidence_findings(evidences, index)
    names = {code: {ranker.finding_names[ranker._finding_index[f]] for f in fs if f in ranker._finding_index}
             for code, fs in mapped.items()}
    assert names["E_65"] == {"Difficulty in swallowing"}  # "difficulty swallowing"
    assert names["E_67"] == {"Dyspnea"}  # "... that wake you up at night" is not nocturia
    assert names["E_169"] == {"Pruritus"}  # "nose or the back of your throat itchy": no body sites
    assert names["E_212"] == {"Hoarseness"} and names["E_103"] == {"Olfaction Disorders"}


def test_icd_crosswalk_keeps_identity_codes_only(ddx_folder):
    index = DiseaseIndex(ddx_folder, ddx_folder.parent / "mesh-2015")
    aftercare = index.diseases[index.from_icd9("V58.89")]
    # Z51.89 "Encounter for other specified aftercare", not ~1,800 "subsequent encounter" injury codes
    assert {x for x in aftercare.xrefs if x.startswith("ICD10CM:")} == {"ICD10CM:Z51.89"}
    assert index.from_icd9("420.90") == "MESH:D010493"  # "Acute pericarditis, unspecified" -> Pericarditis
    assert index.from_icd9("427.0") == "MESH:D013617"
    assert "ICD10CM:I47.1" in index.diseases["MESH:D013617"].xrefs


def test_ddxplus_sle_code_fixed():
    from medassist.knowledge.diagnosis_sources import ddxplus_icd10

    assert ddxplus_icd10({"condition_name": "SLE", "icd10-id": "M34"}) == ["M32"]
    assert ddxplus_icd10({"condition_name": "Pneumonia", "icd10-id": "j17, j18"}) == ["J17", "J18"]


def test_family_past_and_hypothetical_findings_are_no_evidence(ranker):
    plain = {d.concept_id: d.score for d in ranker.rank(["cough"], top_k=50)}
    with_context = {d.concept_id: d.score for d in ranker.rank(
        ["cough. Family history of chest pain. Return if fever."], top_k=50)}
    assert plain == with_context
    [first] = ranker.rank(["cough, history of hemoptysis"], top_k=1)
    assert all(m["name"] != "Hemoptysis" for m in first.matched)


def test_hsdn_holdout_samples_diseases_the_ranker_holds(ddx_folder):
    from medassist.tools.evaluation.diagnosis import DiseaseMatcher, open_world_cases_hsdn

    no_hsdn = BayesRanker(build_association_set(ddx_folder, sources=("dbpedia", "do", "ddxplus")))
    matcher = DiseaseMatcher(no_hsdn)
    cases = open_world_cases_hsdn(ddx_folder, diseases=50, known=lambda case: bool(matcher.targets(case)))
    assert len(cases) == 50 and all(matcher.targets(c) for c in cases)
