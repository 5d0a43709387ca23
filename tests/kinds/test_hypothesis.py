"""The hypothesis kind on the real MEDLINE disease graph and the PubMedQA + MEDLINE corpus."""
import pytest

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_process_chunk, job_submit, job_validate
from medassist.knowledge import importers
from medassist.knowledge.models import Concept
from tests.conftest import require_shared_data
from workers.versions import get_runtime


@pytest.fixture
def medline_graph(db):
    data = require_shared_data("medline-cooccurrence")
    importers.import_mesh(path=require_shared_data("mesh-2015", "tree-numbers.tsv"))
    importers.import_disease_cooccurrence(path=data / "disease-disease-cooccurrence.tsv")


def run_job(user, items, params):
    job, _ = job_submit(owner=user, submission=job_validate(user=user, kind_name="hypothesis", items=items,
                                                            params=params))
    job_process_chunk(job_id=job.pk, start=0, end=len(items), runtime=get_runtime())
    job.refresh_from_db()
    return job, [i.result for i in JobItem.objects.filter(job=job).order_by("index")]


def test_abc_targets_are_not_directly_linked_to_the_start(alice, medline_graph):
    from medassist.knowledge.selectors import cooccurrence_graph

    job, (result,) = run_job(alice, ["Alzheimer Disease"], {"graph": "medline-cooccurrence", "top_k": 5})
    assert job.status == "succeeded" and job.queue == "interactive"
    start = result["start"]["id"]
    assert result["start"]["name"] == "Alzheimer Disease"
    graph = cooccurrence_graph(source="medline-cooccurrence")
    assert len(result["hypotheses"]) == 5
    for h in result["hypotheses"]:
        assert not graph.has_edge(start, h["target"]["id"])
        assert h["bridges"] and all(graph.has_edge(start, b["id"]) and graph.has_edge(b["id"], h["target"]["id"])
                                    for b in h["bridges"])
        assert h["statement"].startswith("Alzheimer Disease may be related to")
    scores = [h["score"] for h in result["hypotheses"]]
    assert scores == sorted(scores, reverse=True)


def test_corpus_graph_returns_supporting_documents(alice, db):
    importers.import_mesh(path=require_shared_data("mesh-2015", "tree-numbers.tsv"))
    importers.import_pubmedqa(path=require_shared_data("pubmedqa", "pqal_train.json"))
    start = Concept.objects.get(pk="MESH:D003920")  # Diabetes Mellitus
    job, (result,) = run_job(alice, [{"start": start.pk}], {"top_k": 3})
    assert job.status == "succeeded", job.error
    best = result["hypotheses"][0]
    assert best["evidence"] and best["evidence"][0]["a_b"] and best["evidence"][0]["b_c"]
    assert all(doc["pmid"] for doc in best["evidence"][0]["a_b"])


def test_unknown_start_concept_is_a_field_error(api, medline_graph):
    response = api.post("/api/v1/jobs/", {"kind": "hypothesis", "items": [{"start": "Alzheimer"}]}, format="json")
    assert response.status_code == 400
    message = response.json()["errors"]["items[0].start"][0]
    assert message.startswith("unknown concept 'Alzheimer'") and "Alzheimer Disease" in message
    response = api.post("/api/v1/jobs/", {"kind": "hypothesis", "items": ["Alzheimer Disease"],
                                          "params": {"measure": "magic"}}, format="json")
    assert response.status_code == 400 and "params.measure" in response.json()["errors"]
