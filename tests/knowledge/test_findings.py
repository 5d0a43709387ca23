"""Tests for medassist.knowledge.findings (free text -> negated/affirmed symptom findings).

The grammar tests use a tiny hand-made vocabulary and run everywhere; the rest read the real
HSDN / MeSH / abbreviation inventories from the shared data folder (``MEDASSIST_SHARED_DATA``,
default ``../shared/data``) and skip, saying why, where it is absent (fail under ``CI=true``).
"""

from __future__ import annotations

import pytest

from medassist.knowledge.findings import (
    LAY_SYNONYMS,
    Abbreviations,
    Finding,
    SymptomVocabulary,
    extract_findings,
    invert_mesh_name,
    normalize_concept_id,
    resolve_findings,
)
from tests.conftest import require_shared_data as shared

# --- a tiny vocabulary: grammar tests that need no data -------------------------------------------------------

TINY = {
    "MESH:D005334": "Fever",
    "MESH:D023341": "Chills",
    "MESH:D003371": "Cough",
    "MESH:D009325": "Nausea",
    "MESH:D014839": "Vomiting",
    "MESH:D004417": "Dyspnea",
    "MESH:D002637": "Chest Pain",
    "MESH:D006261": "Headache",
    "MESH:D012877": "Skin Manifestations",
    "MESH:D000789": "Angina, Unstable",
    "MESH:D003128": "Coma",
    "MESH:D005221": "Fatigue",
}


@pytest.fixture(scope="module")
def tiny() -> SymptomVocabulary:
    return SymptomVocabulary.from_names(TINY)


def summary(findings: list[Finding]) -> list[tuple[str, bool]]:
    return [(f.name, f.negated) for f in findings]


def test_list_negation_covers_every_item(tiny):
    found = extract_findings("Patient denies fever, chills or cough.", tiny)
    assert summary(found) == [("Fever", True), ("Chills", True), ("Cough", True)]


@pytest.mark.parametrize("text, expected", [
    ("fever but no rash", [("Fever", False), ("Skin Manifestations", True)]),
    ("No fever; reports cough", [("Fever", True), ("Cough", False)]),
    ("no fever, with cough", [("Fever", True), ("Cough", False)]),
    ("no fever and cough", [("Fever", True), ("Cough", True)]),  # NegEx: "and" keeps the scope
    ("Denies nausea however has vomiting", [("Nausea", True), ("Vomiting", False)]),
    ("negative for fever. Headache since Monday", [("Fever", True), ("Headache", False)]),
    ("without chest pain except headache", [("Chest Pain", True), ("Headache", False)]),
    ("Fever was ruled out.", [("Fever", True)]),
    ("Cough, chills denied.", [("Cough", False), ("Chills", True)]),  # post-trigger: its own clause only
    ("ruled out fever", [("Fever", True)]),
    ("no change in headache", [("Headache", False)]),  # pseudo-trigger
    ("rule out fever", [("Fever", False)]),  # uncertainty is not negation
    ("no fever\nheadache", [("Fever", True), ("Headache", False)]),  # a newline ends the scope
    ("free of fever, absence of chills", [("Fever", True), ("Chills", True)]),
    ("not coughing", [("Cough", True)]),  # "coughing" is a lay synonym of Cough
])
def test_negation_grammar(tiny, text, expected):
    assert summary(extract_findings(text, tiny)) == expected


def test_vocabulary_variants(tiny):
    assert tiny.lookup("Angina, Unstable") == ("MESH:D000789", "Angina, Unstable")
    assert tiny.lookup("unstable angina") == ("MESH:D000789", "Angina, Unstable")  # MeSH comma inversion
    assert tiny.lookup("headaches")[0] == "MESH:D006261"  # plural
    assert tiny.lookup("chill")[0] == "MESH:D023341"  # singular
    assert tiny.lookup("throwing up")[0] == "MESH:D014839"  # lay synonym
    assert tiny.lookup("high temperature")[0] == "MESH:D005334"
    assert tiny.lookup("tiredness")[0] == "MESH:D005221"
    assert tiny.lookup("shortness of breath")[0] == "MESH:D004417"
    assert tiny.lookup("Rash")[0] == "MESH:D012877"
    assert tiny.lookup("palpitations") is None
    found = extract_findings("Unstable angina since noon", tiny)
    assert [(f.concept_id, f.span) for f in found] == [("MESH:D000789", (0, 15))]


def test_longest_match_and_spans(tiny):
    text = "Severe chest pains and HEADACHE."
    found = extract_findings(text, tiny)
    assert [(f.name, text[f.span[0]:f.span[1]], f.text) for f in found] == [
        ("Chest Pain", "chest pains", "chest pains"), ("Headache", "HEADACHE", "HEADACHE")]


def test_entity_heads_are_not_findings(tiny):
    # "coma scale", "fatigue syndrome": names of things, not what the patient has
    assert extract_findings("Glasgow coma scale 15, chronic fatigue syndrome", tiny) == []
    assert summary(extract_findings("in a coma", tiny)) == [("Coma", False)]


def test_manual_abbreviations_are_case_sensitive(tiny):
    abbr = Abbreviations.from_mapping({"SOB": "shortness of breath", "N/V": "nausea/vomiting"})
    text = "SOB and N/V; she began to sob"
    found = extract_findings(text, tiny, abbr)
    assert [(f.name, f.span, f.text) for f in found] == [
        ("Dyspnea", (0, 3), "shortness of breath"),
        ("Nausea", (8, 11), "nausea"),
        ("Vomiting", (8, 11), "vomiting"),
    ]
    assert extract_findings(text, tiny) == []  # without the table nothing is expanded
    assert summary(extract_findings("no SOB", tiny, abbr)) == [("Dyspnea", True)]


def test_trigger_inside_a_longer_expansion_stays_inside(tiny):
    abbr = Abbreviations.from_mapping({"NKDA": "no known drug allergies", "W/O": "without"})
    assert summary(extract_findings("NKDA, fever", tiny, abbr)) == [("Fever", False)]
    assert summary(extract_findings("W/O fever", tiny, abbr)) == [("Fever", True)]


def test_normalize_concept_id():
    assert normalize_concept_id("D005334") == "MESH:D005334"
    assert normalize_concept_id("mesh:D005334") == "MESH:D005334"
    assert normalize_concept_id("DOID:12365") == "DOID:12365"


def test_invert_mesh_name():
    assert invert_mesh_name("Purpura, Thrombocytopenic, Idiopathic") == "Idiopathic Thrombocytopenic Purpura"
    assert invert_mesh_name("Angina, Unstable") == "Unstable Angina"
    assert invert_mesh_name("Fever") == "Fever"


def test_resolve_findings_takes_ids_names_free_text_and_mappings(tiny):
    found = resolve_findings(["D005334", "MESH:D999999", "Angina, Unstable", "no cough", "sweating",
                              {"concept_id": "D003371", "negated": True}, {"text": "chills"},
                              {"text": "nausea", "negated": True}], tiny, name_of={"MESH:D999999": "Other"}.get)
    assert [(f.concept_id, f.name, f.negated) for f in found] == [
        ("MESH:D005334", "Fever", False),  # an id, named by the vocabulary
        ("MESH:D999999", "Other", False),  # an id the vocabulary does not know: named by name_of
        ("MESH:D000789", "Angina, Unstable", False),  # a whole vocabulary name
        ("MESH:D003371", "Cough", True),  # free text, with its negation
        (None, None, False),  # nothing known: kept, so the caller can report it
        ("MESH:D003371", "Cough", True),  # a mapping with an id ("D003371" normalised)
        ("MESH:D023341", "Chills", False),  # a mapping with text
        ("MESH:D009325", "Nausea", True),  # the mapping's negation applies to what its text resolves to
    ]
    assert found[4].text == "sweating"
    assert resolve_findings([found[0]], tiny) == [found[0]]  # a Finding passes through
    with pytest.raises(TypeError):
        resolve_findings([42], tiny)


# --- real data --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab() -> SymptomVocabulary:
    return SymptomVocabulary.from_hsdn_and_mesh(shared("hsdn-symptoms-disease", "symptoms-DO.tsv"),
                                                shared("mesh-2015", "symptoms.tsv"))


@pytest.fixture(scope="module")
def abbreviations() -> Abbreviations:
    return Abbreviations.from_inventories(shared("clinical-abbreviations"))


def test_vocabulary_from_hsdn_and_mesh(vocab):
    # 316 HSDN symptoms + the MeSH C23 descriptors HSDN does not use (438 in symptoms.tsv)
    assert 430 <= len(vocab) <= 460
    assert vocab.lookup("fever") == ("MESH:D005334", "Fever")
    assert vocab.lookup("Tachypnea") is not None  # MeSH-only (in_hsdn = 0) still recognised
    for concept_id in LAY_SYNONYMS:  # every hand-written synonym points at a real HSDN symptom
        assert concept_id in vocab, concept_id


def test_example_sentence(vocab, abbreviations):
    text = "Pt c/o SOB and CP, denies fever or cough. No nausea."
    found = extract_findings(text, vocab, abbreviations)
    got = [(f.name, f.negated, text[f.span[0]:f.span[1]], f.text) for f in found]
    assert got == [
        ("Dyspnea", False, "SOB", "shortness of breath"),
        ("Chest Pain", False, "CP", "chest pain"),
        ("Fever", True, "fever", "fever"),
        ("Cough", True, "cough", "cough"),
        ("Nausea", True, "nausea", "nausea"),
    ]
    assert found[0].concept_id == "MESH:D004417" and found[1].concept_id == "MESH:D002637"


def test_fever_but_no_rash(vocab):
    found = extract_findings("fever but no rash", vocab)
    assert [(f.concept_id, f.negated, f.span) for f in found] == [
        ("MESH:D005334", False, (0, 5)), ("MESH:D012877", True, (13, 17))]


def test_inventory_dominant_senses(abbreviations):
    # clear in every inventory
    assert abbreviations.expand("SOB") == "shortness of breath"
    assert abbreviations.expand("HA") == "headache"
    assert abbreviations.expand("N/V") == "nausea/vomiting"
    assert abbreviations.expand("DOE") == "dyspnea on exertion"
    # CP: chest pain 0.62 (clinic notes), 0.19 (discharge summaries: cerebral palsy 0.80), 0.996 (Stetson)
    cp = abbreviations.get("CP")
    assert cp.sense == "chest pain" and 0.6 <= cp.share < 0.61 and len(cp.sources) == 3
    # senses merged by CUI across inventories ("cerebral vascular accident" = "cerebrovascular accident")
    assert abbreviations.get("CVA").share > 0.7
    # never function words, never lower case, never unclear ones
    for token in ("NO", "OR", "AND", "US", "sob", "Ha", "MS"):
        assert abbreviations.expand(token) is None, token


def test_abbreviations_only_when_dominant(vocab):
    folder = shared("clinical-abbreviations")
    strict = Abbreviations.from_inventories(folder, min_share=0.7, use_wikipedia=False)
    assert strict.expand("CP") is None  # 0.60 < 0.7: not clear enough
    assert strict.expand("SOB") == "shortness of breath"
    found = extract_findings("SOB and CP", vocab, strict)
    assert [f.name for f in found] == ["Dyspnea"]


def test_abbreviation_spans_and_case(vocab, abbreviations):
    text = "N/V x2 days, HA. Began to sob."
    found = extract_findings(text, vocab, abbreviations)
    assert [(f.name, text[f.span[0]:f.span[1]]) for f in found] == [
        ("Nausea", "N/V"), ("Vomiting", "N/V"), ("Headache", "HA")]


def test_all_caps_note(vocab, abbreviations):
    found = extract_findings("PT C/O SOB AND CP. NO FEVER.", vocab, abbreviations)
    assert summary(found) == [("Dyspnea", False), ("Chest Pain", False), ("Fever", True)]


def test_scale_abbreviation_is_no_finding(vocab, abbreviations):
    # GCS = "glasgow coma scale" (Vanderbilt): a score, not coma
    assert extract_findings("GCS 15, NKDA, fever", vocab, abbreviations)[0].name == "Fever"
    assert summary(extract_findings("GCS 15, NKDA, fever", vocab, abbreviations)) == [("Fever", False)]


@pytest.mark.parametrize("text, expected", [
    ("Cough. Family history of chest pain.", [("Cough", None), ("Chest Pain", "family")]),
    ("mother has headache; patient has fever", [("Headache", "family"), ("Fever", None)]),
    ("history of headache, now with fever", [("Headache", "historical"), ("Fever", None)]),
    ("3-day history of cough", [("Cough", None)]),  # a duration: the present illness
    ("h/o fever. Cough today.", [("Fever", "historical"), ("Cough", None)]),
    ("Return if chest pain or vomiting.", [("Chest Pain", "hypothetical"), ("Vomiting", "hypothetical")]),
])
def test_context_family_historical_hypothetical(tiny, text, expected):
    found = extract_findings(text, tiny)
    assert [(f.name, f.context) for f in found] == expected
    assert all(f.present == (f.context is None and not f.negated) for f in found)
