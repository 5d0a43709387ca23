"""`knowledge_import associations` (the full NHAMCS path and every ddx-knowledge source) and the generic
`--file` import, on the real files."""
from __future__ import annotations

import pytest
from django.core.management import call_command

from medassist.knowledge import diagnosis_state
from medassist.knowledge.models import Concept, DiagnosisAssociation, DiagnosisDisease, DiagnosisFinding
from medassist.knowledge.selectors import association_set
from tests.conftest import require_shared_data

pytestmark = pytest.mark.django_db


def test_full_import_is_idempotent_and_serves_the_bayes_ranker(tmp_path, settings):
    folder = require_shared_data("ddx-knowledge")
    call_command("knowledge_import", "associations", "--path", str(folder), "--no-progress")
    rows = DiagnosisAssociation.objects.count()
    assert rows > 60_000
    assert set(DiagnosisAssociation.objects.values_list("source", flat=True).distinct()) == {
        "nhamcs", "hsdn", "dbpedia", "do", "ddxplus"}
    pneumonia = DiagnosisDisease.objects.get(concept_id="MESH:D011014")
    assert "ICD9CM:486" in pneumonia.xrefs and "DOID:552" in pneumonia.xrefs and pneumonia.visits >= 574
    assert "RFV:1010.0" in DiagnosisFinding.objects.get(concept_id="MESH:D005334").codes
    nhamcs = DiagnosisAssociation.objects.get(disease_id="MESH:D011014", finding_id="MESH:D003371", source="nhamcs")
    assert 0.2 < nhamcs.weight < 0.9 and nhamcs.count > 100

    call_command("knowledge_import", "associations", "--path", str(folder), "--no-progress")
    assert DiagnosisAssociation.objects.count() == rows

    built = association_set()
    # 34,153 visits with a diagnosis, 695 of them only V codes (follow-up, sutures ...), which name no disease
    assert len(built.diseases) >= 2000 and built.total_visits == 33_458
    diagnosis_state.reset_ranker()
    try:
        ranker = diagnosis_state.get_ranker()
        assert ranker.kind == "bayes" and diagnosis_state.ranker_source()["matrix"] == "associations"
        assert ranker.rank(["dyspnea, orthopnea and leg edema"], top_k=3)[0].name == "Heart Failure"
    finally:
        diagnosis_state.reset_ranker()


def test_generic_association_file(tmp_path):
    Concept.objects.create(id="MESH:D011014", vocabulary="mesh", code="D011014", name="Pneumonia",
                           name_lower="pneumonia")
    DiagnosisDisease.objects.create(concept_id="MESH:D011014", xrefs=["UMLS:C0032285"])
    Concept.objects.create(id="MESH:D002637", vocabulary="mesh", code="D002637", name="Chest Pain",
                           name_lower="chest pain")
    DiagnosisFinding.objects.create(concept_id="MESH:D002637")
    path = tmp_path / "mine.tsv"
    path.write_text("disease_id\tdisease_name\tfinding_id\tfinding_name\tweight\tsource\n"
                    "UMLS:C0032285\t\t\tpain chest\t0.3\tsemmeddb\n"
                    "\tMy rare disease\t\tstrawberry tongue\t0.8\tsemmeddb\n", encoding="utf-8")
    call_command("knowledge_import", "associations", "--file", str(path))
    call_command("knowledge_import", "associations", "--file", str(path))  # idempotent
    rows = {(a.disease_id, a.finding_id, a.source, a.weight) for a in DiagnosisAssociation.objects.all()}
    assert rows == {("MESH:D011014", "MESH:D002637", "semmeddb", 0.3),
                    ("CUSTOM:My rare disease", "CUSTOM:strawberry tongue", "semmeddb", 0.8)}
    bad = tmp_path / "bad.tsv"
    bad.write_text("disease\tfinding\nx\ty\n", encoding="utf-8")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="needs the columns"):
        call_command("knowledge_import", "associations", "--file", str(bad))
