"""The diagnosis kind through the jobs API and a chunk run: ranked, evidence-backed, validated."""
import pytest

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_process_chunk
from tests.conftest import require_shared_data
from workers.runtime import get_runtime


@pytest.fixture(autouse=True)
def _knowledge():
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")


def diagnose(api, items, params=None):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": items, "params": params or {}}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    job_process_chunk(job_id=job_id, start=0, end=len(items), runtime=get_runtime())
    return response.json(), [i.result for i in JobItem.objects.filter(job_id=job_id).order_by("index")]


def test_chest_pain_presentation_ranks_a_coronary_diagnosis_with_evidence(api):
    job, (result,) = diagnose(api, [{"symptoms": "58M c/o chest pain and SOB, nausea. Denies fever or cough.",
                                     "age": 58, "sex": "male"}], {"top_k": 5})
    names = [d["name"] for d in result["diagnoses"]]
    assert any("Coronary" in n or "Myocardial" in n or "Angina" in n for n in names), names
    found = {f["name"]: f["negated"] for f in result["findings"]}
    assert found.get("Chest Pain") is False and found.get("Dyspnea") is False and found.get("Fever") is True
    top = result["diagnoses"][0]
    assert top["rank"] == 1 and top["score"] > 0 and top["matched"] and top["explanation"]
    assert "icd10cm" in top and isinstance(top["unmatched"], list)


def test_malaria_presentation_and_negation_of_its_key_finding(api):
    _, (present,) = diagnose(api, ["fever, chills, headache, splenomegaly"])
    names = [d["name"] for d in present["diagnoses"]]
    assert "Malaria" in names[:3], names
    malaria = next(d for d in present["diagnoses"] if d["name"] == "Malaria")
    assert any(code["code"].startswith("B5") for code in malaria["icd10cm"])
    _, (negated,) = diagnose(api, ["chills, headache, splenomegaly, no fever"])
    score = {d["name"]: d["score"] for d in negated["diagnoses"]}
    assert score.get("Malaria", 0) < malaria["score"]


@pytest.mark.parametrize("item, field", [
    ({"symptoms": "  "}, "items[0].symptoms"),
    ({"symptoms": "fever", "age": 200}, "items[0].age"),
    ({"symptoms": "fever", "sex": "x"}, "items[0].sex"),
    ({"age": 40}, "items[0]"),
])
def test_invalid_cases_are_field_errors(api, item, field):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": [item]}, format="json")
    assert response.status_code == 400
    assert any(key.startswith(field) for key in response.json()["errors"]), response.json()
