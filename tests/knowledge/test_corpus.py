"""The knowledge corpus' writers (``knowledge.corpus``: concept resolution, ``cooccurrences_replace``)
and adding job abstracts to it (``knowledge.services.corpus_add_documents``).

The documents are linked to the imported MeSH 2015 concepts (tests import the real file from the
shared data, skipped with a reason where it is absent) and counted in the corpus graph exactly once,
however often the same PMID or text arrives, and exactly as a full recount would count them.
"""
from __future__ import annotations

import math

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from medassist.knowledge import corpus, importers, selectors
from medassist.knowledge.concepts import extract_concepts
from medassist.knowledge.corpus import ConceptResolver, cooccurrences_replace, semantic_group_for
from medassist.knowledge.models import Concept, Cooccurrence, Document, DocumentConcept
from medassist.knowledge.services import corpus_add_documents, corpus_document_error
from tests.conftest import require_shared_data

pytestmark = pytest.mark.django_db

METFORMIN, T2DM, MI = "MESH:D008687", "MESH:D003924", "MESH:D009203"  # NLM's ids (MeSH 2015)
METFORMIN_T2DM = "Metformin lowered HbA1c in adults with type 2 diabetes mellitus."
T2DM_MI = "Patients with type 2 diabetes mellitus had more myocardial infarction than controls."


@pytest.fixture
def mesh(db):
    importers.import_mesh(path=require_shared_data("mesh-2015", "tree-numbers.tsv"))


def add(*items: dict):
    return corpus_add_documents(items=list(items), concepts_per_item=[extract_concepts(i["text"]) for i in items])


def corpus_counts() -> dict[tuple[str, str, int], int]:
    return {(a, b, year): n for a, b, year, n in Cooccurrence.objects.filter(source="corpus").values_list(
        "concept_a_id", "concept_b_id", "year", "count")}


def pair(a: str, b: str, year: int = 0) -> int | None:
    a, b = sorted((a, b))
    return corpus_counts().get((a, b, year))


def test_an_abstract_becomes_a_linked_document_counted_once_per_year_and_overall(mesh):
    result = add({"text": METFORMIN_T2DM, "pmid": 101, "title": "Metformin", "year": 2014})
    (outcome,) = result.documents
    assert outcome["added"] is True and outcome["concepts_linked"] == 2
    doc = Document.objects.get(pk=outcome["document_id"])
    assert (doc.pmid, doc.source, doc.title, doc.abstract, doc.year) == ("101", "job", "Metformin", METFORMIN_T2DM,
                                                                          2014)
    # Linked to NLM's descriptors, not to the package ids (Metformin arrives as D007004, its drug class).
    assert set(doc.concepts.values_list("pk", flat=True)) == {METFORMIN, T2DM}
    assert (pair(METFORMIN, T2DM), pair(METFORMIN, T2DM, 2014)) == (1, 1)
    assert Cooccurrence.objects.get(concept_a=T2DM, concept_b=METFORMIN, year=0).score == 1.0
    assert result.counts["documents_added"] == 1 and result.counts["cooccurrences_upserted"] == 2


def test_the_same_pmid_or_the_same_text_again_adds_and_counts_nothing(mesh):
    first = add({"text": METFORMIN_T2DM, "pmid": "101", "year": 2014}, {"text": T2DM_MI})
    before = corpus_counts()
    tables = (Document.objects.count(), DocumentConcept.objects.count())

    # A redelivered chunk, a re-submission (the PMID as an int this time, even with other text), the
    # same text without a PMID, and a duplicate inside one chunk.
    again = add({"text": METFORMIN_T2DM, "pmid": 101, "year": 2014}, {"text": T2DM_MI},
                {"text": T2DM_MI + " Revised.", "pmid": " 101 "}, {"text": T2DM_MI})
    assert corpus_counts() == before
    assert (Document.objects.count(), DocumentConcept.objects.count()) == tables
    assert [d["added"] for d in again.documents] == [False] * 4
    ids = [d["document_id"] for d in first.documents]
    assert [d["document_id"] for d in again.documents] == [ids[0], ids[1], ids[0], ids[1]]
    assert [d["concepts_linked"] for d in again.documents] == [2, 2, 2, 2]
    assert again.counts["documents_added"] == 0 and again.counts["items_not_added"] == 4

    # The same new document twice in one chunk is added (and counted) once.
    twice = add({"text": "Metformin and myocardial infarction.", "pmid": 7},
                {"text": "Metformin and myocardial infarction.", "pmid": 7})
    assert [d["added"] for d in twice.documents] == [True, False]
    assert twice.documents[0]["document_id"] == twice.documents[1]["document_id"]
    assert pair(METFORMIN, MI) == 1


def test_another_document_with_the_pair_increases_it_by_one_and_the_cached_graph_sees_it(mesh):
    add({"text": METFORMIN_T2DM, "pmid": 1, "year": 2014})
    graph = selectors.cooccurrence_graph(source="corpus")
    assert graph.neighbors(METFORMIN) == {T2DM: 1.0}

    add({"text": "In type 2 diabetes mellitus, metformin was well tolerated.", "pmid": 2, "year": 2015})
    assert pair(METFORMIN, T2DM) == 2 and pair(METFORMIN, T2DM, 2014) == pair(METFORMIN, T2DM, 2015) == 1
    # Same rows, a higher count: the graph cache must notice (its key includes the total count).
    assert selectors.cooccurrence_graph(source="corpus").neighbors(METFORMIN) == {T2DM: 2.0}
    assert selectors.cooccurrence_graph(source="corpus", until_year=2014).neighbors(METFORMIN) == {T2DM: 1.0}
    assert {d["pmid"] for d in selectors.supporting_documents(a=METFORMIN, b=T2DM)} == {"1", "2"}


def test_added_counts_equal_a_full_recount_next_to_imported_documents(mesh):
    importers.import_pubmedqa(path=require_shared_data("pubmedqa", "pqal_train.json"))
    abstracts = [{"text": METFORMIN_T2DM, "pmid": 900_000_001, "year": 2016}, {"text": T2DM_MI},
                 {"text": "Aspirin after myocardial infarction reduced recurrent events.", "year": 2001}]
    add(*abstracts)
    added = corpus_counts()
    with transaction.atomic():
        corpus.corpus_write_lock()
        corpus.corpus_cooccurrence_rebuild()
    assert corpus_counts() == added
    # ... and a re-import of PubMedQA keeps the job documents in the graph.
    importers.import_pubmedqa(path=require_shared_data("pubmedqa", "pqal_train.json"))
    assert corpus_counts() == added


def test_a_chunk_is_a_few_bulk_queries_not_some_per_item(mesh, django_assert_max_num_queries):
    texts = [METFORMIN_T2DM, T2DM_MI, "Aspirin after myocardial infarction.", "Warfarin and aspirin bleeding."]
    items = [{"text": texts[i % 4], "pmid": 5000 + i, "year": 2000 + i % 3} for i in range(60)]
    found = [extract_concepts(i["text"]) for i in items]
    with django_assert_max_num_queries(14):
        result = corpus_add_documents(items=items, concepts_per_item=found)
    assert result.counts["documents_added"] == 60
    assert pair(METFORMIN, T2DM) == 15


def test_a_chunk_resolver_reads_only_its_concepts_and_resolves_like_the_import_one(mesh, monkeypatch):
    found = [c for text in (METFORMIN_T2DM, T2DM_MI, "Acamprosate, clioquinol, aspirin and warfarin; fever.")
             for c in extract_concepts(text)]
    full = ConceptResolver()
    # SQLite's parameter limit, made tiny: the names and ids are read in several queries.
    monkeypatch.setattr(connection.features, "max_query_params", 5)
    with CaptureQueriesContext(connection) as queries:
        chunk = ConceptResolver.for_extracted(found)
    assert len(queries) == math.ceil(len({c["name"] for c in found} | {c["id"] for c in found}) / 3)
    assert len(chunk.name_by_id) < 20 < len(full.name_by_id)
    assert [chunk.resolve_extracted(c) for c in found] == [full.resolve_extracted(c) for c in found]
    assert chunk.resolve_extracted(found[0]) == (METFORMIN, "mesh-2015 by name")


def test_without_mesh_the_extractors_ids_are_linked_and_created_as_extraction_concepts(db):
    (outcome,) = add({"text": METFORMIN_T2DM, "pmid": 1}).documents
    assert outcome["added"] and outcome["concepts_linked"] == 2
    # the extractor's own ids (MeSH 2015 where the shared data has it): nothing imported to correct them with
    assert pair(*(c["id"] for c in extract_concepts(METFORMIN_T2DM))) == 1
    assert set(Concept.objects.values_list("source", flat=True)) == {"extraction"}


def test_items_the_corpus_cannot_hold_are_refused_with_the_field():
    assert corpus_document_error({"text": "fine", "pmid": "12345", "year": 2020}) is None
    assert corpus_document_error({"text": "fine", "pmid": "9" * 21}).startswith("pmid: ")
    assert corpus_document_error({"text": "fine", "year": 40000}) == "year: 40000 is not a publication year"
    assert corpus_document_error({"text": " "}) == "text: abstract is empty"
    with pytest.raises(ValueError, match=r"items\[1\]\.pmid"):
        add({"text": "fine"}, {"text": "fine", "pmid": "9" * 21})


# --- concept resolution and the replace-a-source writer (no data needed) -----------------------------------


def test_semantic_group_comes_from_the_first_tree_number_most_specific_prefix_first():
    assert semantic_group_for(["C14.280.647.500", "C14.907.585.500"]) == "Diseases"
    assert semantic_group_for(["C23.888.119.344"]) == "Signs and Symptoms"
    assert semantic_group_for(["C23.888.592.604", "C10.597.606"]) == "Diseases"  # filed as a disease too
    assert semantic_group_for(["F03.600.300"]) == "Mental Disorders"
    assert semantic_group_for(["D03.605.500"]) == "Chemicals and Drugs"
    assert semantic_group_for([]) == ""


def test_resolver_prefers_the_trusted_name_then_a_renamed_descriptor_and_refuses_a_wrong_id():
    for concept_id, name, trees in [("MESH:D009203", "Myocardial Infarction", ["C14.280.647.500"]),
                                    ("MESH:D000890", "Anti-Infective Agents", ["D27.505.954.122"]),
                                    ("MESH:D018222", "Fibromatosis, Aggressive", ["C04.557.450.565.590.340.410"])]:
        Concept.objects.create(id=concept_id, vocabulary="mesh", code=concept_id[5:], name=name,
                               name_lower=name.lower(), tree_numbers=trees, source="mesh")
    resolver = ConceptResolver()
    # The dictionary's id for MI is wrong; the name finds NLM's.
    assert resolver.resolve_concept(name="myocardial INFARCTION", fallback_id="MESH:D006342") == "MESH:D009203"
    # Unknown name, unused id: the dictionary's id is all there is.
    assert resolver.resolve_concept(name="Tooth Wear", fallback_id="MESH:D057085") == "MESH:D057085"
    # Unknown name, id taken by another descriptor in another branch: no link rather than a wrong one.
    assert resolver.resolve_concept(name="Infections", fallback_id="MESH:D000890", tree_numbers=["C01"]) is None
    # ... but the same tree number means the descriptor was renamed after 2015.
    assert resolver.resolve_concept(name="Desmoid Tumors", fallback_id="MESH:D018222",
                                    tree_numbers=["C04.557.450.565.590.340.410"]) == "MESH:D018222"


def test_cooccurrences_replace_updates_in_place_and_deletes_what_is_gone():
    for code in ("D1", "D2", "D3"):
        Concept.objects.create(id=f"MESH:{code}", vocabulary="mesh", code=code, name=code, name_lower=code.lower())

    def row(a, b, count):
        return Cooccurrence(concept_a_id=a, concept_b_id=b, year=0, source="corpus", count=count, score=count)

    cooccurrences_replace(source="corpus", rows=[row("MESH:D1", "MESH:D2", 1), row("MESH:D1", "MESH:D3", 1)])
    first = Cooccurrence.objects.get(concept_a="MESH:D1", concept_b="MESH:D2")
    counts = cooccurrences_replace(source="corpus", rows=[row("MESH:D1", "MESH:D2", 5)])
    assert counts == {"cooccurrences": 1, "cooccurrences_deleted": 1}
    kept = Cooccurrence.objects.get(source="corpus")
    assert (kept.pk, kept.count, kept.score) == (first.pk, 5, 5.0)
    with pytest.raises(ValueError, match="duplicate"):
        cooccurrences_replace(source="corpus", rows=[row("MESH:D1", "MESH:D2", 1), row("MESH:D1", "MESH:D2", 2)])
