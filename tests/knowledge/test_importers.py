"""Tests for medassist.knowledge.importers and ``manage.py knowledge_import`` on the real data sets.

Each importer runs on the file in ../shared/data (skipped with a reason where it is absent, failed
under CI), checks rows we know from the source, and runs again to prove that a re-import updates
in place.  Speed is measured by hand (see the report in docs), not asserted here.
"""
from __future__ import annotations

import io
import math

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F, Q

from medassist.knowledge import importers
from medassist.knowledge.models import Concept, Cooccurrence, Document, DocumentConcept
from tests.conftest import require_shared_data

pytestmark = pytest.mark.django_db

HSDN_LINKS = 10_465
MEDLINE_PAIRS = 8_778  # 17,556 file rows: every pair is listed in both directions


def data(source: str):
    return require_shared_data(*importers.DEFAULT_PATHS[source].split("/"))


def table_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (Concept, Document, DocumentConcept, Cooccurrence)}


def corpus_pairs_are_ordered() -> bool:
    return not Cooccurrence.objects.filter(source="corpus", concept_a_id__gte=F("concept_b_id")).exists()


# --- each source on the real data -------------------------------------------------------------------------


def test_import_mesh():
    result = importers.import_mesh(path=data("mesh"))
    assert result.counts["concepts"] == Concept.objects.count() == 27_455

    mi = Concept.objects.get(pk="MESH:D009203")
    assert (mi.name, mi.name_lower, mi.vocabulary, mi.code) == ("Myocardial Infarction", "myocardial infarction",
                                                                 "mesh", "D009203")
    assert any(t.startswith("C14") for t in mi.tree_numbers)
    assert mi.semantic_group == "Diseases"
    assert Concept.objects.get(pk="MESH:D005334").semantic_group == "Signs and Symptoms"
    assert Concept.objects.get(name_lower="metformin").semantic_group == "Chemicals and Drugs"
    female = Concept.objects.get(pk="MESH:D005260")  # in terms.tsv, without a tree number
    assert (female.name, female.tree_numbers, female.semantic_group) == ("Female", [], "")

    before = table_counts()
    importers.import_mesh(path=data("mesh"))
    assert table_counts() == before


def test_import_hsdn_stores_directed_symptom_to_disease_links():
    result = importers.import_hsdn(path=data("hsdn"))
    hsdn = Cooccurrence.objects.filter(source="hsdn")
    assert result.counts["cooccurrences"] == hsdn.count() == HSDN_LINKS
    assert hsdn.filter(directed=True, year=0).count() == HSDN_LINKS

    fever_malaria = hsdn.get(concept_a="MESH:D005334", concept_b="MESH:D008288")
    assert fever_malaria.count == 284
    assert fever_malaria.score == pytest.approx(175.778287568456)
    assert fever_malaria.metrics == {"doid": "DOID:12365", "doid_name": "malaria",
                                     "symptom_name": "Fever", "disease_name": "Malaria"}
    # Without the MeSH file the concepts carry the names HSDN gives.
    assert Concept.objects.get(pk="MESH:D005334").name == "Fever"

    before = table_counts()
    importers.import_hsdn(path=data("hsdn"))
    assert table_counts() == before


def test_hsdn_does_not_rename_a_mesh_descriptor_with_its_older_name():
    importers.import_mesh(path=data("mesh"))
    importers.import_hsdn(path=data("hsdn"))
    # HSDN says "Mental Retardation"; MeSH 2015 calls D008607 "Intellectual Disability".
    concept = Concept.objects.get(pk="MESH:D008607")
    assert (concept.name, concept.source) == ("Intellectual Disability", "mesh")
    assert Cooccurrence.objects.filter(source="hsdn", concept_a=concept).exists()


def test_import_disease_cooccurrence():
    result = importers.import_disease_cooccurrence(path=data("cooccurrence"))
    medline = Cooccurrence.objects.filter(source="medline-cooccurrence")
    assert result.counts["cooccurrences"] == medline.count() == MEDLINE_PAIRS
    assert not medline.filter(directed=True).exists()
    assert not medline.filter(concept_a_id__gte=F("concept_b_id")).exists()

    # Alzheimer Disease (D000544, DOID:10652) -- Parkinson Disease (D010300, DOID:14330)
    pair = medline.get(concept_a="MESH:D000544", concept_b="MESH:D010300")
    assert pair.count == 2760
    assert pair.score == pytest.approx(3.5774, abs=1e-4)
    assert pair.metrics["doid_a"] == "DOID:10652" and pair.metrics["doid_b"] == "DOID:14330"
    assert pair.metrics["expected"] == pytest.approx(827.098, abs=1e-3)
    assert math.isclose(pair.metrics["p_fisher"], 0.0)

    # An infinite odds ratio is not a number JSON can carry: score NULL, the value kept in metrics.
    infinite = medline.filter(score__isnull=True)
    assert infinite.count() == 10
    assert all(row.metrics["odds_ratio"] == "inf" for row in infinite)
    # DOID:3393 (coronary artery disease) maps to three descriptors; the one named like it is used.
    assert medline.filter(Q(concept_a="MESH:D003324") | Q(concept_b="MESH:D003324")).exists()
    assert not medline.filter(Q(concept_a__in=["MESH:D003327", "MESH:D017202"]) |
                              Q(concept_b__in=["MESH:D003327", "MESH:D017202"])).exists()

    before = table_counts()
    importers.import_disease_cooccurrence(path=data("cooccurrence"))
    assert table_counts() == before


def test_import_pubmedqa_links_concepts_by_their_mesh_names_and_counts_corpus_pairs():
    importers.import_mesh(path=data("mesh"))
    result = importers.import_pubmedqa(path=data("pubmedqa"))
    assert Document.objects.filter(source="pubmedqa").count() == result.counts["documents"] == 500
    links = DocumentConcept.objects.filter(document__source="pubmedqa")
    assert links.count() == result.counts["document_concepts"] > 1000
    # The dictionary ships Myocardial Infarction as D006342; the link uses NLM's D009203.
    assert links.filter(concept="MESH:D009203").exists()
    assert not links.filter(concept__name_lower="myocardial infarction").exclude(concept="MESH:D009203").exists()

    corpus = Cooccurrence.objects.filter(source="corpus")
    assert corpus.count() == result.counts["corpus_cooccurrences"] > 0
    assert corpus_pairs_are_ordered()
    assert corpus.filter(year=0).exists() and corpus.exclude(year=0).exists()
    # The all-years row counts at least as many documents as any year's row of the same pair.
    row = corpus.exclude(year=0).order_by("-count").first()
    assert corpus.get(concept_a=row.concept_a_id, concept_b=row.concept_b_id, year=0).count >= row.count
    assert all(r.score == r.count for r in corpus[:200])

    before = table_counts()
    importers.import_pubmedqa(path=data("pubmedqa"))
    assert table_counts() == before


def test_import_medline_links_mesh_headings_by_their_real_ids():
    result = importers.import_medline(path=data("medline"))
    documents = Document.objects.filter(source="medline")
    assert documents.count() == result.counts["documents"] == 526
    assert not documents.filter(abstract="").exists()
    assert not documents.filter(year__isnull=True).exists()

    # Humans (D006801) is a heading of 63 of the 94 citations that have headings.
    humans = Concept.objects.get(pk="MESH:D006801")
    assert (humans.name, humans.source) == ("Humans", "medline-heading")
    assert DocumentConcept.objects.filter(concept=humans).count() == 63
    assert corpus_pairs_are_ordered()

    before = table_counts()
    importers.import_medline(path=data("medline"))
    assert table_counts() == before


def test_two_corpora_share_one_graph_and_reimporting_either_keeps_the_other():
    importers.import_mesh(path=data("mesh"))
    importers.import_pubmedqa(path=data("pubmedqa"))
    importers.import_medline(path=data("medline"))
    both = table_counts()
    graph = dict(((a, b, y), n) for a, b, y, n in Cooccurrence.objects.filter(source="corpus").values_list(
        "concept_a_id", "concept_b_id", "year", "count"))

    importers.import_pubmedqa(path=data("pubmedqa"))  # must not forget MEDLINE's pairs, nor count twice
    assert table_counts() == both
    assert graph == dict(((a, b, y), n) for a, b, y, n in Cooccurrence.objects.filter(source="corpus").values_list(
        "concept_a_id", "concept_b_id", "year", "count"))


# --- the command -------------------------------------------------------------------------------------------


def test_command_imports_a_source_and_prints_counts_and_seconds():
    data("hsdn")
    out = io.StringIO()
    call_command("knowledge_import", "hsdn", stdout=out)
    assert "hsdn: " in out.getvalue() and "cooccurrences 10,465" in out.getvalue() and " s" in out.getvalue()
    assert Cooccurrence.objects.filter(source="hsdn").count() == HSDN_LINKS


def test_import_icd10cm_codes_with_their_chapter_and_inclusion_terms():
    out = io.StringIO()
    call_command("knowledge_import", "icd10cm", stdout=out)  # a packaged vocabulary: no file, no --path
    icd = Concept.objects.filter(vocabulary="icd10cm")
    assert "icd10cm: concepts" in out.getvalue() and icd.count() > 90_000
    mi = Concept.objects.get(pk="ICD10CM:I21.9")
    assert (mi.code, mi.name) == ("I21.9", "Acute myocardial infarction, unspecified")
    assert mi.semantic_group.startswith("Diseases of the circulatory system")
    assert "Myocardial infarction (acute) NOS" in mi.synonyms
    assert not Concept.objects.filter(pk__in=["ICD10CM:9", "ICD10CM:I20-I25"]).exists()  # chapters, blocks
    before = icd.count()
    importers.import_icd10cm()
    assert icd.count() == before


def test_import_hpo_terms_with_synonyms_and_their_branch():
    result = importers.import_hpo()
    hpo = Concept.objects.filter(vocabulary="hpo")
    assert result.counts["concepts"] == hpo.count() > 15_000
    fever = Concept.objects.get(pk="HP:0001945")
    assert (fever.code, fever.name, fever.source) == ("0001945", "Fever", "hpo")
    assert "Pyrexia" in fever.synonyms
    assert fever.semantic_group and fever.semantic_group != "Fever"  # its top-level branch
    assert Concept.objects.get(pk="HP:0001627").semantic_group == "Abnormality of the cardiovascular system"
    importers.import_hpo()
    assert hpo.count() == result.counts["concepts"]


def test_command_refuses_a_missing_file_or_an_unknown_source_before_importing(tmp_path):
    with pytest.raises(CommandError, match=r"mesh: .*tree-numbers.tsv not found"):
        call_command("knowledge_import", "all", path=str(tmp_path))
    with pytest.raises(CommandError, match="unknown source umls"):
        call_command("knowledge_import", "umls")
    assert not Concept.objects.exists()


def test_admin_lists_and_searches_every_table_view_only(admin_client):
    importers.import_hsdn(path=data("hsdn"))
    doc = Document.objects.create(pmid="1", title="t", abstract="a", year=2015, source="medline")
    DocumentConcept.objects.create(document=doc, concept_id="MESH:D005334", count=2)
    for url in ("/admin/knowledge/concept/?q=fever", "/admin/knowledge/document/?q=1",
                "/admin/knowledge/documentconcept/?q=fever", "/admin/knowledge/cooccurrence/?q=MESH:D005334",
                "/admin/knowledge/cooccurrence/?source__exact=hsdn", f"/admin/knowledge/document/{doc.pk}/change/",
                "/admin/knowledge/concept/MESH:D005334/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    assert admin_client.get("/admin/knowledge/concept/add/").status_code == 403
