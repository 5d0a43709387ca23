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
    # Pneumonia within the top 3 (the classic-presentation rule); since 510.x visits joined MeSH "Empyema,
    # Pleural", DO's and HSDN's pleuritic-chest-pain links can put empyema first at all-1 weights
    ranked = ranker.rank(["fever, productive cough and pleuritic chest pain"], top_k=3)
    first = next(d for d in ranked if d.name == "Pneumonia")
    assert any(c["code"].startswith("J18") for c in first.icd10cm)
    assert {m["name"] for m in first.matched} >= {"Fever", "Cough"}
    parts = first.score_components
    assert {"prior", "nhamcs", "hsdn"} <= set(parts)
    assert abs(sum(p["contribution"] for p in parts.values()) - first.score) < 0.01
    assert f"Pneumonia is ranked #{first.rank}" in first.explanation


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


@pytest.fixture(scope="module")
def ddxplus_findings(ddx_folder, ranker) -> tuple[dict, dict[str, set[str]]]:
    """DDXPlus evidence code -> the finding ids its question reads as, and their names in the ranker."""
    import json

    from medassist.knowledge.diagnosis_sources import FindingIndex, ddxplus_evidence_findings

    evidences = json.loads((ddx_folder / "ddxplus" / "release_evidences.json").read_text(encoding="utf-8"))
    index = FindingIndex({})
    index.vocabulary = ranker.vocabulary
    mapped = ddxplus_evidence_findings(evidences, index)
    names = {code: {ranker.finding_names[ranker._finding_index[f]] for f in fs if f in ranker._finding_index}
             for code, fs in mapped.items()}
    return mapped, names


def test_ddxplus_questions_read_as_findings(ddxplus_findings):
    _, names = ddxplus_findings
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


def test_v_code_pseudo_diagnoses_are_not_in_the_universe(association_set):
    from medassist.knowledge.diagnosis_sources import is_pseudo_diagnosis

    assert is_pseudo_diagnosis("V67.59") and is_pseudo_diagnosis("V50.8") and is_pseudo_diagnosis("E885.9")
    assert not is_pseudo_diagnosis("486") and not is_pseudo_diagnosis("V22.2")  # pregnant state stays
    xrefs = {x for d in association_set.diseases.values() for x in (d.id, *d.xrefs)}
    # follow-up examination, elective surgery, postsurgical status, personal history: not diseases
    assert not {"ICD9CM:V67.59", "ICD9CM:V50.8", "ICD9CM:V45.89", "ICD9CM:V12.69"} & xrefs
    names = {d.name.lower() for d in association_set.diseases.values()}
    assert "other specified examination" not in names and "other postsurgical status" not in names


def test_nhamcs_vignettes_name_a_disease_not_a_v_code():
    from medassist.knowledge.diagnosis_sources import Visit
    from medassist.tools.evaluation.diagnosis import open_world_cases_nhamcs

    visits = [Visit(40, "male", ("1050.0",), ("V67.59", "486"), 1.0, False),
              Visit(40, "male", ("1050.0",), ("V58.32",), 1.0, False)]
    cases = open_world_cases_nhamcs(visits)
    assert [c["codes"] for c in cases] == [["ICD9CM:486"]]


def test_icd9_codes_join_their_mesh_disease_through_icd10_parents_siblings_and_do_labels(ddx_folder):
    index = DiseaseIndex(ddx_folder, ddx_folder.parent / "mesh-2015")
    # 512.8 -> GEMs J93.11 ... -> DO's J93.1 (DOID:1673 "pneumothorax", no MeSH xref) -> MeSH by its label
    assert index.from_icd9("512.8") == "MESH:D011030"
    assert index.from_icd9("518.4") == "MESH:D011654"  # J81.0 -> DO J81 pulmonary edema
    # 157.9 "pancreas, part unspecified": DO codes 157.0-157.2 and 157.8 as pancreatic cancer
    assert index.from_icd9("157.9") == index.from_icd9("157.0")
    assert index.from_icd9("300.01") == "MESH:D016584"  # panic disorder is not every anxiety disorder
    assert index.from_icd9("995.0") == "MESH:D000707"


def test_history_question_phrasings_read_as_the_specific_finding(ddxplus_findings, ranker):
    mapped, names = ddxplus_findings
    assert names["E_173"] == {"Heartburn"}  # "burning sensation that starts in your stomach ..."
    assert names["E_179"] == {"hematochezia"}  # "light red blood or blood clots in your stool"
    assert names["E_74"] == {"bloodshot eye"}  # "redness in one or both eyes", not skin erythema
    assert names["E_9"] == {"Swollen or enlarged glands"}  # "swollen or painful lymph nodes": no Edema
    assert names["E_156"] == {"Facial Paralysis"}  # "weakness or paralysis on one side of the face"
    assert names["E_220"] == {"pleuritic chest pain"}
    # DBpedia's "Ptosis (eyelid)" and DO's "ptosis" are one finding
    assert len(mapped["E_172"]) == 1 and ranker.resolve(["ptosis"])[0].concept_id == mapped["E_172"][0]
