"""``evaluate concepts``: the PubTator reader, the scoring on a hand-made gold set, and the command."""
from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from medassist.knowledge import concepts
from medassist.tools.evaluation.concepts import (
    GoldDocument,
    GoldMention,
    Predicted,
    extract_documents,
    predictions_from_concepts,
    read_pubtator,
    score,
)

TITLE = "Lithium toxicity and tricuspid regurgitation."
ABSTRACT = "A newborn exposed to lithium carbonate had atrial flutter (AF). AF resolved."
TEXT = f"{TITLE} {ABSTRACT}"


def _span(text: str, mention: str, start: int = 0) -> tuple[int, int]:
    begin = text.index(mention, start)
    return begin, begin + len(mention)


def _fixture(tmp_path):
    """Two documents in BC5CDR's PubTator shape (composite ids, "-1", a relation line), one repeated, one with
    NCBI's disease types; offsets count in title + " " + abstract."""
    lines = [f"100|t|{TITLE}", f"100|a|{ABSTRACT}"]
    for mention, kind, ids in (("Lithium", "Chemical", "D008094"), ("toxicity", "Disease", "D064420"),
                               ("tricuspid regurgitation", "Disease", "D014262"),
                               ("lithium carbonate", "Chemical", "D016651"), ("atrial flutter", "Disease", "D001282"),
                               ("AF", "Disease", "-1")):
        s, e = _span(TEXT, mention)
        lines.append(f"100\t{s}\t{e}\t{mention}\t{kind}\t{ids}")
    lines += ["100\tCID\tD016651\tD001282", ""]
    second = "Breast and ovarian cancer in BRCA1 carriers."
    lines += ["200|t|" + second, "200|a|"]
    s, e = _span(second + " ", "Breast and ovarian cancer")
    lines += [f"200\t{s}\t{e}\tBreast and ovarian cancer\tCompositeMention\tD001943|D010051",
              "200\t29\t34\tBRCA1\tModifier\tOMIM:113705", ""]
    lines += lines[:3] + [""]  # document 100 again, as the NCBI training file repeats one
    path = tmp_path / "gold.PubTator"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pubtator_reader_on_a_written_fixture(tmp_path):
    documents = read_pubtator(_fixture(tmp_path))
    assert [d.pmid for d in documents] == ["100", "200"]  # the repeated document once, the relation line skipped
    first, second = documents
    assert (first.title, first.abstract, first.text) == (TITLE, ABSTRACT, TEXT)
    assert [(m.text, m.type, m.ids) for m in first.mentions] == [
        ("Lithium", "chemical", ("D008094",)), ("toxicity", "disease", ("D064420",)),
        ("tricuspid regurgitation", "disease", ("D014262",)), ("lithium carbonate", "chemical", ("D016651",)),
        ("atrial flutter", "disease", ("D001282",)), ("AF", "disease", ())]
    assert all(first.text[m.start:m.end] == m.text for m in first.mentions)
    assert [(m.text, m.ids) for m in second.mentions] == [("Breast and ovarian cancer", ("D001943", "D010051")),
                                                         ("BRCA1", ("OMIM:113705",))]
    assert [d.pmid for d in read_pubtator(_fixture(tmp_path), types=("chemical",)) if d.mentions] == ["100"]


def test_pubtator_reader_refuses_offsets_outside_the_document(tmp_path):
    path = tmp_path / "bad.PubTator"
    path.write_text("1|t|Short.\n1|a|Text.\n1\t5\t50\tx\tDisease\tD000001\n")
    with pytest.raises(ValueError, match="outside document 1"):
        read_pubtator(path)


def test_scores_on_a_hand_made_gold_set_with_known_answers():
    # gold: two diseases (d1 twice) and one chemical; prediction: one exact, one overlapping, one wrong
    doc = GoldDocument(pmid="1", title="", abstract="", mentions=[
        GoldMention(0, 10, "x" * 10, "disease", ("D1",)), GoldMention(20, 30, "x" * 10, "disease", ("D1",)),
        GoldMention(40, 50, "x" * 10, "disease", ("D2",)), GoldMention(60, 70, "x" * 10, "chemical", ("C1",)),
        GoldMention(80, 85, "x" * 5, "disease", ())])
    predicted = [
        Predicted("disease", "D1", ((0, 10),)),  # exact, right id
        Predicted("disease", "D9", ((42, 48), (90, 95))),  # overlaps d2 with the wrong id; one spurious mention
        Predicted("chemical", None, ((60, 70),), other_id="DRUGBANK:DB1"),  # exact, no MeSH id (a DrugBank-only drug)
    ]
    s = score([doc], [predicted])
    disease, chemical = s["disease"], s["chemical"]
    # mentions: 3 predicted disease spans, 4 gold; exact: 1 right
    assert (disease["exact"]["precision"], disease["exact"]["recall"]) == pytest.approx((1 / 3, 1 / 4))
    # overlap: 2 of 3 predicted spans touch a gold disease; 2 of 4 gold spans are touched
    assert (disease["overlap"]["precision"], disease["overlap"]["recall"]) == pytest.approx((2 / 3, 2 / 4))
    assert disease["overlap"]["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # document level: predicted {D1, D9}, gold {D1, D2} -> P = R = F1 = 0.5
    assert [disease["normalisation"][k] for k in ("precision", "recall", "f1")] == pytest.approx([0.5, 0.5, 0.5])
    # coverage: of the 3 gold disease mentions with an id, those whose id is found in the document: the two D1
    assert (disease["coverage"]["covered"], disease["coverage"]["mentions"]) == (2, 3)
    # chemical: the span is right, the id missing -> mention F1 1, document level 0, coverage 0
    assert chemical["exact"]["f1"] == 1.0
    assert (chemical["normalisation"]["predicted"], chemical["normalisation"]["recall"]) == (0, 0.0)
    assert chemical["normalisation_strict"]["predicted"] == 1  # ... which the strict figure counts as a wrong id
    assert disease["normalisation_strict"] == disease["normalisation"]
    assert chemical["coverage"]["share"] == 0.0
    with pytest.raises(ValueError):
        score([doc], [])


def test_system_types_map_onto_the_gold_types():
    found = [{"type": "drug", "mesh_id": "D008094", "id": "MESH:D008094", "mentions": [{"start": 0, "end": 7}]},
             {"type": "symptom", "mesh_id": "D005334", "id": "MESH:D005334", "mentions": [{"start": 9, "end": 14}]},
             {"type": "drug", "mesh_id": None, "id": "DRUGBANK:DB00659", "mentions": [{"start": 20, "end": 30}]}]
    assert predictions_from_concepts(found) == [Predicted("chemical", "D008094", ((0, 7),)),
                                               Predicted("disease", "D005334", ((9, 14),)),
                                               Predicted("chemical", None, ((20, 30),), "DRUGBANK:DB00659")]
    assert [p.type for p in predictions_from_concepts(found, types=("disease",))] == ["disease"]


def test_the_harness_runs_the_literature_kinds_own_extraction(db, tmp_path):
    from medassist.kinds import get_kind

    documents = read_pubtator(_fixture(tmp_path))
    results, _seconds = extract_documents(documents[:1], version=None)
    literature = get_kind("literature")

    class Runtime:
        def version_label(self, role):
            return f"{role}:test"

    params = literature.params_with_defaults({"embed": False})
    (result,) = literature.run([{"text": TEXT}], params, Runtime())
    assert results[0] == result["concepts"]  # the same concepts, ids and offsets as a job reports


def test_evaluate_concepts_prints_and_writes_only_when_told(db, tmp_path, capsys, monkeypatch):
    from medassist.tools.management.commands import evaluate

    monkeypatch.setattr(evaluate, "EVALUATION_MD", tmp_path / "evaluation.md")
    data = _fixture(tmp_path)
    call_command("evaluate", "concepts", "--data", str(data), "--no-progress")
    out = capsys.readouterr().out
    assert "## Concept extraction" in out and "| extractor | type |" in out and "recipe 1" in out
    assert f"concept-extractor-r{concepts.RECIPE}" in out and "0.80-0.86" in out
    assert not (tmp_path / "evaluation.md").exists()
    call_command("evaluate", "concepts", "--data", str(data), "--types", "disease", "--write")
    assert "written to" in capsys.readouterr().out
    assert "<!-- concepts:start -->" in (tmp_path / "evaluation.md").read_text()
    with pytest.raises(CommandError, match="--types"):
        call_command("evaluate", "concepts", "--data", str(data), "--types", "gene")
    with pytest.raises(CommandError, match="no concepts version"):
        call_command("evaluate", "concepts", "--data", str(data), "--model-version", "999")


def test_the_lexicon_is_never_learned_from_a_development_split(db, tmp_path):
    dev = tmp_path / "CDR_DevelopmentSet.PubTator.txt"
    dev.write_text(_fixture(tmp_path).read_text())
    with pytest.raises(CommandError, match="never a dev or test split"):
        call_command("evaluate", "concepts", "--data", str(dev), "--write-lexicon")
