"""Tests for medassist.tools.evaluation.diagnosis: the diagnosis ranker's link-hold-out evaluation.

Real data (HSDN, MeSH tree numbers) from the shared data folder; skipped with the reason where absent
(a failure under ``CI=true``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medassist.knowledge.diagnosis import ComponentWeights, DiagnosisRanker
from medassist.tools.evaluation.diagnosis import cases_from_hsdn_holdout, evaluate, evaluate_many
from tests.conftest import require_shared_data as shared

MALARIA_CASE = ["fever", "chills", "headache", "splenomegaly"]
MALARIA, FEVER = "MESH:D008288", "MESH:D005334"


@pytest.fixture(scope="module")
def hsdn() -> Path:
    return shared("hsdn-symptoms-disease", "symptoms-DO.tsv")


@pytest.fixture(scope="module")
def trees() -> Path:
    return shared("mesh-2015", "tree-numbers.tsv")


def test_holdout_cases_are_fair(hsdn, trees):
    held, cases = cases_from_hsdn_holdout(hsdn, fraction=0.2, seed=0, findings_per_case=5)
    assert len(cases) == 23  # one fold: 20 % of the 115 diseases with >= 10 links
    assert len({c["diagnosis"] for c in cases}) == len(cases)
    ranker = DiagnosisRanker.from_hsdn(hsdn, exclude_links=held, mesh_tree_path=None, icd10=False)
    for case in cases:
        assert len(case["findings"]) == 5 and len(case["held_out_links"]) == 4
        assert set(case) >= {"findings", "age", "sex", "diagnosis", "codes"}
        d = ranker.disease_ids.index(case["codes"][0])
        links = [ranker.matrix[d, ranker.symptom_ids.index(s)] if s in ranker.symptom_ids else 0.0
                 for s in (ranker.vocabulary.lookup(f)[0] for f in case["findings"])]
        assert sum(1 for w in links if w > 0) == 1  # exactly one of the case's links is left
        json.dumps(case)  # JSONL-ready


def test_evaluate_on_200_holdout_cases(hsdn, trees, capsys):
    _, cases = cases_from_hsdn_holdout(hsdn, n_cases=200, seed=0)
    assert len(cases) == 200

    def factory(links):
        return DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, mesh_tree_path=trees, icd10=False)

    held_out = evaluate(factory, cases)
    no_holdout = evaluate(factory, [{**c, "held_out_links": []} for c in cases])
    _, cases3 = cases_from_hsdn_holdout(hsdn, n_cases=200, seed=0, kept_links=3)
    keep3 = evaluate(factory, cases3)
    with capsys.disabled():
        for label, m in (("link hold-out, 1 of 5 links kept", held_out), ("link hold-out, 3 of 5 kept", keep3),
                         ("no hold-out (circular upper bound)", no_holdout)):
            print(f"\n{label}: " + ", ".join(f"{k}={m[k]}" for k in ("n", "top1", "top3", "top10", "top20", "mrr_at_20")))
    for m in (held_out, keep3, no_holdout):
        assert set(m) >= {"n", "top1", "top3", "top10"} and m["n"] == 200
        assert 0 <= m["top1"] <= m["top3"] <= m["top10"] <= 1
    assert held_out["rankers_built"] >= 190 and no_holdout["rankers_built"] == 1  # one per case's link set
    chance_top10 = 10 / 119
    assert held_out["top10"] > 2 * chance_top10  # well above chance even with 4 of 5 links removed
    assert held_out["top10"] < keep3["top10"] < no_holdout["top10"]  # more knowledge, better ranking


def test_evaluate_matches_by_code_then_name(hsdn):
    ranker = DiagnosisRanker.from_hsdn(hsdn, icd10=False)
    cases = [
        {"findings": MALARIA_CASE, "age": None, "sex": None, "diagnosis": "Malaria", "codes": ["MESH:D008288"]},
        {"findings": MALARIA_CASE, "diagnosis": "malaria", "codes": []},
        {"findings": MALARIA_CASE, "diagnosis": "Malaria", "codes": ["DOID:12365"]},
        {"findings": MALARIA_CASE, "diagnosis": "Malaria", "codes": ["MESH:D003324"]},  # wrong code: a miss
    ]
    m = evaluate(lambda links: ranker, cases)
    assert m["n"] == 4 and m["top1"] == 0.75 and m["rankers_built"] == 1


def test_evaluate_many_ranks_the_same_cases_under_each_configuration(hsdn):
    _, cases = cases_from_hsdn_holdout(hsdn, n_cases=30, seed=3)
    corpus = [(FEVER, MALARIA, 3)]

    def factory(links):
        r = DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, icd10=False)
        r.use_corpus(corpus)
        return r

    many = evaluate_many(factory, cases, {"hsdn": {}, "zero": {"weights": ComponentWeights()},
                                          "corpus": {"weights": ComponentWeights(corpus=1.0)}})
    single = evaluate(factory, cases)
    keys = ("n", "top1", "top3", "top10", "top20", "mrr_at_20", "rankers_built")
    assert [many["hsdn"][k] for k in keys] == [many["zero"][k] for k in keys] == [single[k] for k in keys]
    assert many["corpus"]["n"] == 30


def test_progress_wraps_the_loop_over_rankers_and_changes_nothing(hsdn):
    _, cases = cases_from_hsdn_holdout(hsdn, n_cases=12, seed=5)
    seen = []

    def progress(items, total):
        seen.append(total)
        yield from items

    def factory(links):
        return DiagnosisRanker.from_hsdn(hsdn, exclude_links=links, icd10=False)

    plain = evaluate_many(factory, cases, {"hsdn": {}})
    wrapped = evaluate_many(factory, cases, {"hsdn": {}}, progress=progress)
    keys = ("n", "top1", "top3", "top10", "top20", "mrr_at_20", "rankers_built")
    assert [plain["hsdn"][k] for k in keys] == [wrapped["hsdn"][k] for k in keys]
    assert seen == [plain["hsdn"]["rankers_built"]]


def test_grid_search_open_scores_each_setting_as_evaluate_open_does():
    from medassist.knowledge.diagnosis_bayes import BayesRanker, BayesWeights
    from medassist.knowledge.diagnosis_sources import build_association_set
    from medassist.tools.evaluation.diagnosis import evaluate_open, grid_search_open

    ranker = BayesRanker(build_association_set(shared("ddx-knowledge"), sources=("nhamcs", "hsdn", "do")))
    cases = [{"findings": ["fever", "productive cough", "pleuritic chest pain"], "diagnosis": "Pneumonia"},
             {"findings": ["dyspnea", "orthopnea", "leg edema"], "age": 70, "sex": "male", "diagnosis": "Heart Failure"},
             {"findings": ["dysuria", "frequency"], "age": 30, "sex": "female", "diagnosis": "Urinary Tract Infections"},
             {"findings": ["headache", "photophobia", "neck stiffness"], "diagnosis": "Meningitis"},
             {"findings": ["fever"], "diagnosis": "no such disease anywhere"}]
    grid = [BayesWeights(), BayesWeights(prior=3.0, hsdn=0.0), BayesWeights(nhamcs=0.0, do=2.0)]
    [per_setting] = grid_search_open([(ranker, cases)], grid)
    for weights, got in zip(grid, per_setting, strict=True):
        want = evaluate_open(ranker, cases, weights=weights)
        assert {k: got[k] for k in ("n", "top1", "top3", "top10", "top20", "mrr_at_20", "outside_universe")} == \
               {k: want[k] for k in ("n", "top1", "top3", "top10", "top20", "mrr_at_20", "outside_universe")}
    assert per_setting[0]["outside_universe"] == 1


def test_evaluate_open_reports_exact_code_matching_beside_the_icd10_category():
    """A case coded with an ICD-10-CM category (DDXPlus' asthma exacerbation is J45) is a hit for any disease
    with a J45.x code under the category rule; the exact figures count only the case's own codes or name."""
    from medassist.tools.evaluation.diagnosis import DiseaseMatcher, evaluate_open

    class Ranker:  # ranks exercise-induced asthma first, then asthma
        disease_ids = ["MESH:D001250", "MESH:D001249"]
        disease_names = ["Asthma, Exercise-Induced", "Asthma"]
        disease_xrefs = [["ICD10CM:J45.990"], ["ICD10CM:J45.909"]]
        disease_synonyms = [[], []]

        def ranked_indices(self, findings, *, top_k=20, **_):
            return [0, 1][:top_k]

    cases = [{"findings": ["wheezing"], "codes": ["ICD10CM:J45"], "diagnosis": "Bronchospasm / acute asthma exacerbation"},
             {"findings": ["wheezing"], "codes": ["ICD10CM:J45.909"], "diagnosis": ""}]
    matcher = DiseaseMatcher(Ranker())
    assert matcher.targets(cases[0]) == {0, 1} and matcher.targets(cases[0], exact=True) == set()
    assert matcher.targets(cases[1], exact=True) == {1}
    m = evaluate_open(Ranker(), cases)
    assert (m["top1"], m["outside_universe"]) == (1.0, 0)
    assert (m["exact"]["top1"], m["exact"]["top3"], m["exact"]["outside_universe"]) == (0.0, 0.5, 1)
