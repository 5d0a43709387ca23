"""The literature kind's concept ids and its ``add_to_corpus`` param, through the job services.

MeSH ids are checked against the real MeSH 2015 import (shared data; skipped with a reason where it
is absent): the vocabulary packages give metformin its drug class's id and myocardial infarction
another descriptor's.
"""
from __future__ import annotations

import pytest

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_process_chunk, job_submit, job_validate
from medassist.kinds import ItemFailure, get_kind
from medassist.knowledge import importers, selectors
from medassist.knowledge.models import Cooccurrence, Document
from medassist.knowledge.visibility import reading_as
from tests.conftest import require_shared_data
from workers.versions import get_runtime

ABSTRACT = ("Metformin is first-line therapy for type 2 diabetes mellitus. In 5,000 adults, metformin use was "
            "associated with fewer hospital admissions for myocardial infarction.")
LITERATURE = get_kind("literature")


@pytest.fixture
def mesh(db):
    importers.import_mesh(path=require_shared_data("mesh-2015", "tree-numbers.tsv"))


class ConceptsOnly:
    """The runtime as the handler sees it without embedding or generation."""

    def version_label(self, role: str) -> str:
        return f"{role}:test"


def run(items: list[dict], **params):
    params = LITERATURE.params_with_defaults({"embed": False, **params})
    return LITERATURE.run(items, params, ConceptsOnly())


def run_job(user, items, params):
    job, _ = job_submit(owner=user, submission=job_validate(user=user, kind_name="literature", items=items,
                                                            params={"embed": False, **params}))
    job_process_chunk(job_id=job.pk, start=0, end=len(items), runtime=get_runtime())
    job.refresh_from_db()
    return job, list(JobItem.objects.filter(job=job).order_by("index"))


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["concepts"]}


# --- MeSH ids --------------------------------------------------------------------------------------------------


def test_concepts_carry_nlm_mesh_ids_resolved_by_name_and_keep_the_package_id(mesh):
    (result,) = run([{"text": ABSTRACT}])
    concepts = by_name(result)
    metformin = concepts["Metformin"]
    # The package ships D007004 (Hypoglycemic Agents, shared with insulin); NLM's Metformin is D008687.
    assert (metformin["id"], metformin["mesh_id"], metformin["package_id"]) == ("MESH:D008687", "D008687", "D007004")
    assert metformin["id_source"] == "mesh-2015 by name" and metformin["drugbank_id"] == "DB00331"
    assert (concepts["Myocardial Infarction"]["mesh_id"], concepts["Myocardial Infarction"]["package_id"]) == (
        "D009203", "D006342")
    assert concepts["Diabetes Mellitus, Type 2"]["mesh_id"] == "D003924"
    # Offsets and counts are untouched.
    assert metformin["count"] == 2 and ABSTRACT[metformin["mentions"][0]["start"]:].startswith("Metformin")


def test_an_id_that_is_right_already_has_no_package_id_and_a_rejected_one_no_mesh_id(mesh):
    (result,) = run([{"text": "Clioquinol and acamprosate were given."}])
    concepts = by_name(result)
    assert concepts["Clioquinol"]["mesh_id"] == "D007464" and "package_id" not in concepts["Clioquinol"]
    assert concepts["Clioquinol"]["id_source"] == "mesh-2015 by name"
    # Acamprosate is no MeSH 2015 descriptor and its package id is Alcohol Deterrents: not reported as its id
    # (the extractor's recipe 2 already rejects it, so the resolver keeps the extractor's DrugBank id).
    acamprosate = concepts["Acamprosate"]
    assert (acamprosate["id"], acamprosate["mesh_id"], acamprosate["package_id"], acamprosate["id_source"]) == (
        "DRUGBANK:DB00659", None, "D000427", "package")


def test_without_a_mesh_import_the_extractors_ids_are_reported_and_say_so(db):
    from medassist.knowledge.concepts import extract_concepts

    (result,) = run([{"text": ABSTRACT}])
    metformin = by_name(result)["Metformin"]
    # nothing imported to check against: the extractor's own ids (MeSH 2015 where the shared data has it)
    own = {c["name"]: c for c in extract_concepts(ABSTRACT)}["Metformin"]
    assert (metformin["id"], metformin["mesh_id"], metformin["id_source"]) == (own["id"], own["mesh_id"], "package")
    assert metformin.get("package_id") == own.get("package_id")


def test_ids_are_resolved_with_one_query_per_chunk(mesh, django_assert_num_queries):
    items = [{"text": ABSTRACT}, {"text": "Aspirin after myocardial infarction."}, {"text": "Fever and headache."}] * 20
    with django_assert_num_queries(1):
        results = run(items)
    assert all(by_name(r).get("Myocardial Infarction", {}).get("mesh_id") in (None, "D009203") for r in results)


def test_concept_types_filter_the_report_only(mesh):
    (result,) = run([{"text": ABSTRACT}], concept_types=["drug"])
    assert {c["type"] for c in result["concepts"]} == {"drug"}


# --- add_to_corpus ---------------------------------------------------------------------------------------------


def test_add_to_corpus_is_off_by_default_and_stores_nothing(mesh):
    (result,) = run([{"text": ABSTRACT, "pmid": "1"}])
    assert "corpus" not in result and not Document.objects.exists()


def test_a_job_adds_its_abstracts_to_the_corpus_graph_that_hypothesis_jobs_read(alice, mesh):
    items = [{"text": "Metformin lowered HbA1c in type 2 diabetes mellitus.", "pmid": "11", "year": 2014},
             {"text": "Type 2 diabetes mellitus doubled the risk of myocardial infarction.", "pmid": "12",
              "year": 2015}]
    job, rows = run_job(alice, items, {"add_to_corpus": True, "concept_types": ["drug"]})
    assert job.status == "succeeded", job.error
    corpus = [row.result["corpus"] for row in rows]
    assert [(c["added"], c["concepts_linked"]) for c in corpus] == [(True, 2), (True, 2)]
    assert Document.objects.get(pk=corpus[0]["document_id"]).pmid == "11"
    # Private documents (issue 13: the default) stay out of the stored graph other users rank with; their
    # owner's graph counts them on top.
    assert not Cooccurrence.objects.filter(source="corpus").exists()
    with reading_as(alice.pk):
        assert selectors.cooccurrence_graph(source="corpus").neighbors("MESH:D003924")["MESH:D008687"] == 1

    # Metformin -- (type 2 diabetes) -- myocardial infarction: an A-B-C hypothesis from the job's documents.
    graph = selectors.cooccurrence_graph(source="corpus")
    assert not graph.has_edge("MESH:D008687", "MESH:D009203")
    hypothesis, _ = job_submit(owner=alice, submission=job_validate(
        user=alice, kind_name="hypothesis", items=[{"start": "Metformin"}], params={"top_k": 3}))
    job_process_chunk(job_id=hypothesis.pk, start=0, end=1, runtime=get_runtime())
    (found,) = [i.result for i in JobItem.objects.filter(job=hypothesis)]
    best = found["hypotheses"][0]
    assert best["target"]["id"] == "MESH:D009203" and best["bridges"][0]["id"] == "MESH:D003924"
    assert best["evidence"][0]["a_b"][0]["pmid"] == "11" and best["evidence"][0]["b_c"][0]["pmid"] == "12"

    # The same abstracts in another job: linked to the same documents, counted nothing more.
    again, rows = run_job(alice, items, {"add_to_corpus": True})
    assert again.status == "succeeded"
    assert [row.result["corpus"] for row in rows] == [{**c, "added": False} for c in corpus]
    with reading_as(alice.pk):
        assert selectors.cooccurrence_graph(source="corpus").neighbors("MESH:D003924")["MESH:D008687"] == 1


def test_a_redelivered_chunk_counts_once(mesh):
    items = [{"text": ABSTRACT, "pmid": "21", "year": 2010}, {"text": ABSTRACT + " Without a PMID."}]
    first = run(items, add_to_corpus=True)
    counts = dict(Cooccurrence.objects.filter(source="corpus").values_list("pk", "count"))
    # The worker died after the corpus write but before the results were stored: the chunk runs again.
    second = run(items, add_to_corpus=True)
    assert dict(Cooccurrence.objects.filter(source="corpus").values_list("pk", "count")) == counts
    assert [r["corpus"]["added"] for r in first] == [True, True]
    assert [r["corpus"] for r in second] == [{**r["corpus"], "added": False} for r in first]
    assert Document.objects.count() == 2


def test_an_item_the_corpus_cannot_hold_fails_alone(mesh):
    first, second = run([{"text": ABSTRACT, "pmid": "9" * 25}, {"text": ABSTRACT, "pmid": "31"}], add_to_corpus=True)
    assert isinstance(first, ItemFailure) and first.message.startswith("add_to_corpus: pmid: ")
    assert second["corpus"]["added"] is True and Document.objects.get().pmid == "31"


def test_the_param_is_in_the_schema_with_its_default():
    assert LITERATURE.params_with_defaults({})["add_to_corpus"] is False
    assert not list(LITERATURE.params_validator.iter_errors({"add_to_corpus": True}))
    assert list(LITERATURE.params_validator.iter_errors({"add_to_corpus": "yes"}))


# --- answers: a question per item, labels without rationales --------------------------------------------

class _AskedGenerator:
    """Stands in for the generator: answers "Yes" and records the user messages it was given."""

    def __init__(self):
        self.asked: list[str] = []
        self.generated = 0

    def chat_prompt(self, user_message, *, system=None, history=()):
        # The rationale turn carries the question turn as its history: record what was asked about.
        self.asked.append(history[0][0] if history else user_message)
        return user_message

    def score_options(self, asked, options):
        return [{o: 0.8 if o == "Yes" else 0.1 for o in options} for _ in asked]

    def generate(self, asked, settings_):
        self.generated += len(asked)
        return ["because"] * len(asked)


class _NoOpinion:
    def predict(self, conclusion, **reading):  # question=, context=
        return {"label": "yes", "probabilities": {"yes": 1 / 3, "no": 1 / 3, "maybe": 1 / 3}, "terms": []}


class _AnswerRuntime:
    def __init__(self):
        self.generator = _AskedGenerator()

    def engine(self, role):
        return _NoOpinion() if role == "answer_evidence" else self.generator

    def version_label(self, role):
        return f"{role}:test"


@pytest.mark.django_db
def test_an_items_own_question_is_asked_over_the_jobs_default():
    runtime = _AnswerRuntime()
    params = LITERATURE.params_with_defaults({"embed": False, "question": "Does aspirin reduce mortality?"})
    items = [{"text": "Aspirin reduced mortality after myocardial infarction.", "question": "Is aspirin safe?"},
             {"text": "Statins lowered cholesterol in adults."},
             {"text": "Heparin was compared with placebo.", "question": "  "}]  # blank: the job's question
    results = LITERATURE.run(items, params, runtime)
    assert [r["answer"]["question"] for r in results] == [
        "Is aspirin safe?", "Does aspirin reduce mortality?", "Does aspirin reduce mortality?"]
    assert "Question: Is aspirin safe?" in runtime.generator.asked[0]
    assert all(r["answer"]["rationale"] == "because" for r in results)


@pytest.mark.django_db
def test_items_with_questions_need_the_answer_models_even_without_a_job_question():
    params = LITERATURE.params_with_defaults({"embed": False})
    items = [{"text": "Aspirin reduced mortality.", "question": "Does aspirin reduce mortality?"},
             {"text": "Statins lowered cholesterol."}]
    assert set(LITERATURE.required_roles(params, items)) == {"concepts", "generator", "answer_evidence"}
    assert LITERATURE.required_roles(params, [items[1]]) == ("concepts",)
    results = LITERATURE.run(items, params, _AnswerRuntime())
    assert results[0]["answer"]["label"] in ("yes", "no", "maybe") and "answer" not in results[1]


@pytest.mark.django_db
def test_rationale_false_gives_labels_and_evidence_without_generating():
    runtime = _AnswerRuntime()
    params = LITERATURE.params_with_defaults({"embed": False, "question": "Does aspirin reduce mortality?",
                                        "rationale": False})
    result, = LITERATURE.run([{"text": "Aspirin reduced mortality after myocardial infarction."}], params, runtime)
    assert runtime.generator.generated == 0
    assert result["answer"]["label"] == "yes" and "evidence" in result["answer"]
    assert "rationale" not in result["answer"] and "rationale_settings" not in result["answer"]


def test_a_pubmedqa_file_becomes_one_job_with_a_question_per_item(alice, client_for):
    import json as json_module

    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile

    from medassist.jobs.models import Job

    records = {"111": {"QUESTION": "Does aspirin reduce mortality?", "CONTEXTS": ["Aspirin was given.", "Deaths fell."],
                       "LABELS": ["METHODS", "RESULTS"], "MESHES": ["Aspirin"], "YEAR": "2001",
                       "final_decision": "yes", "LONG_ANSWER": "Aspirin reduces mortality."},
               "222": {"QUESTION": "Is heparin safe?", "CONTEXTS": ["Heparin was compared with placebo."],
                       "LABELS": ["RESULTS"], "final_decision": "maybe"}}
    body = json_module.dumps(records, indent=2).encode()
    response = client_for(alice).post("/api/v1/jobs/", {"kind": "literature", "file": SimpleUploadedFile(
        "my_questions.json", body, content_type="application/json")}, format="multipart")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.source["format"] == "pubmedqa" and job.total_items == 2
    first = job.items.get(index=0).input
    assert first["question"] == "Does aspirin reduce mortality?" and first["text"] == "Aspirin was given. Deaths fell."
    assert first["reference_answer"] == "yes" and first["pmid"] == "111" and first["year"] == 2001
    assert "Aspirin reduces mortality." not in first["text"]  # PubMedQA's own setting: no conclusion
    assert job.chunk_size == settings.MEDASSIST_MODEL_CHUNK_SIZE  # items that need the language model
