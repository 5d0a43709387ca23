"""Tests for medassist.knowledge.discovery (Swanson A-B-C literature-based discovery); the evaluation
of its measures (AUC, gold ranks) is tested in tests/tools/test_evaluation_discovery.py.

A handmade graph checks the mechanics and each measure against a hand computation; the real shared
data (MEDLINE disease co-occurrence, PubMedQA MeSH lists, medline-discoveries gold pairs) checks
speed and that every measure beats chance.  Numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from medassist.knowledge.discovery import (
    MEASURES,
    CooccurrenceGraph,
    Edge,
    Hypothesis,
)
from medassist.tools.evaluation.discovery import load_medline_disease_edges
from tests.conftest import require_shared_data as _shared

ALZHEIMER = "DOID:10652"

# ---------------------------------------------------------------------- handmade graph
#   A - B1 - C1 - E        A's neighbours: B1, B2, B3.  Candidates: C1 (via B1, B2),
#   A - B2 - C1            C2 (via B1, B3), D (via B3).  E and F are 3 hops away.
#   A - B3 - C2 - F        C2-F is heavy (30), which makes PMI(B1,C2) and PMI(B3,C2) negative.
#   B1 - C2,  B3 - D
EDGES = [
    Edge("A", "B1", 2, 2000),
    Edge("B1", "A", 1, 2005),  # same pair, other orientation: summed -> A-B1 = 3
    Edge("A", "B2", 1, 2000),
    Edge("A", "B3", 4, 2001),
    Edge("B1", "C1", 3, 2000),
    Edge("B2", "C1", 1, 2001),
    Edge("B1", "C2", 2, 2002),
    Edge("B3", "C2", 1, 2003),
    Edge("B3", "D", 2, 2010),
    Edge("C1", "E", 1, 2000),
    Edge("C2", "F", 30, 2000),
    Edge("B2", "B2", 5, 2000),  # self loop: dropped
    Edge("A", "Z", 0, 2000),  # zero count: not a link, Z not a node
]
# Node totals n_x: A 8, B1 8, B2 2, B3 7, C1 5, C2 33, D 2, E 1, F 30; N = 96.
TOT = {"A": 8, "B1": 8, "B2": 2, "B3": 7, "C1": 5, "C2": 33, "D": 2, "E": 1, "F": 30}
N = 96


def _pmi(nxy: float, x: str, y: str) -> float:
    return math.log(nxy * N / (TOT[x] * TOT[y]))


# Hand computation, deg: A 3, B1 3, B2 2, B3 3, C1 3, C2 3, D 1.
HAND = {
    "linking_terms": {"C1": 2, "C2": 2, "D": 1},
    "jaccard": {"C1": 2 / 4, "C2": 2 / 4, "D": 1 / 3},  # N(C1)={B1,B2,E}, N(C2)={B1,B3,F}, N(D)={B3}
    "adamic_adar": {"C1": 1 / math.log(3) + 1 / math.log(2), "C2": 2 / math.log(3), "D": 1 / math.log(3)},
    "resource_allocation": {"C1": 1 / 3 + 1 / 2, "C2": 2 / 3, "D": 1 / 3},
    "pmi_min": {
        "C1": min(_pmi(3, "A", "B1"), _pmi(3, "B1", "C1")) + min(_pmi(1, "A", "B2"), _pmi(1, "B2", "C1")),
        "C2": 0.0,  # both B1-C2 and B3-C2 have PMI < 0: no positive path
        "D": min(_pmi(4, "A", "B3"), _pmi(2, "B3", "D")),
    },
}


@pytest.fixture(scope="module")
def small() -> CooccurrenceGraph:
    return CooccurrenceGraph.from_edges(EDGES)


def test_from_edges_sums_duplicates_and_drops_self_loops_and_zeros(small):
    assert sorted(small.ids) == ["A", "B1", "B2", "B3", "C1", "C2", "D", "E", "F"]
    assert small.neighbors("A") == {"B1": 3.0, "B2": 1.0, "B3": 4.0}
    assert small.neighbors("B2") == {"A": 1.0, "C1": 1.0}
    assert small.has_edge("A", "B1") and small.has_edge("B1", "A")
    assert not small.has_edge("A", "C1") and not small.has_edge("A", "Z") and not small.has_edge("Q", "A")
    assert small.neighbors("Z") == {}
    assert small.n_edges == 10
    assert {c: small.total[small.index[c]] for c in TOT} == TOT
    with pytest.raises(ValueError):
        CooccurrenceGraph.from_edges([Edge("a", "b", -1)])


def test_abc_results_are_unlinked_and_bridged_by_the_right_b(small):
    hyps = small.discover("A", measure="adamic_adar")
    assert [h.target for h in hyps] == ["C1", "C2", "D"]  # E, F (3 hops) and A's neighbours excluded
    for h in hyps:
        assert isinstance(h, Hypothesis) and h.start == "A" and h.measure == "adamic_adar"
        assert not small.has_edge("A", h.target)
    by = {h.target: h for h in hyps}
    # C1: B2 (deg 2) contributes 1/log 2 > B1's 1/log 3.
    assert [b for b, _ in by["C1"].bridges] == ["B2", "B1"]
    assert by["C1"].bridges[0][1] == pytest.approx(1 / math.log(2))
    # C2: B1 and B3 tie on 1/log 3; B1 has the stronger weakest count (min(3,2) > min(4,1)).
    assert [b for b, _ in by["C2"].bridges] == ["B1", "B3"]
    assert [b for b, _ in by["D"].bridges] == ["B3"]
    assert [h.linking_terms for h in hyps] == [2, 2, 1]
    assert sum(c for _, c in by["C1"].bridges) == pytest.approx(by["C1"].score)
    assert len(small.discover("A", measure="adamic_adar", max_bridges=1)[0].bridges) == 1
    assert len(small.discover("A", top_k=2)) == 2


def test_each_measure_equals_hand_computation(small):
    for measure in MEASURES:
        hyps = small.discover("A", measure=measure)
        got = {h.target: h.score for h in hyps}
        assert got == pytest.approx(HAND[measure]), measure
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True), measure
        # score_pairs gives the same values (and is symmetric).
        pairs = [("A", c) for c in HAND[measure]]
        assert small.score_pairs(pairs, measure=measure) == pytest.approx(list(HAND[measure].values()))
        assert small.score_pairs([(c, a) for a, c in pairs], measure=measure) == pytest.approx(list(HAND[measure].values()))
        for h in hyps:  # bridges add up to the score (jaccard: 1/|union| each)
            assert sum(c for _, c in h.bridges) == pytest.approx(h.score), (measure, h.target)
    pmi = {h.target: h for h in small.discover("A", measure="pmi_min")}
    assert pmi["C2"].bridges == [] and pmi["C2"].linking_terms == 2  # no B with both PMIs > 0
    # C1: via B2 min(log 6, log 9.6) = log 6 beats via B1 min(log 4.5, log 7.2) = log 4.5.
    assert pmi["C1"].bridges == [("B2", pytest.approx(math.log(6))), ("B1", pytest.approx(math.log(4.5)))]


def test_score_pairs_unknown_nodes_are_zero(small):
    out = small.score_pairs([("A", "nope"), ("nope", "C1"), ("A", "A"), ("A", "C1")], measure="adamic_adar")
    assert isinstance(out, np.ndarray)
    assert out[:3].tolist() == [0.0, 0.0, 0.0] and out[3] > 0
    with pytest.raises(ValueError):
        small.score_pairs([("A", "C1")], measure="cosine")


def test_allowed_filters_targets(small):
    hyps = small.discover("A", measure="resource_allocation", allowed=lambda c: c != "C1")
    assert [h.target for h in hyps] == ["C2", "D"]
    assert small.discover("A", allowed=lambda c: False) == []
    assert small.discover("unknown concept") == []
    with pytest.raises(ValueError):
        small.discover("A", measure="nope")


def test_until_year_drops_later_edges():
    g = CooccurrenceGraph.from_edges(EDGES, until_year=2001)
    assert g.neighbors("A") == {"B1": 2.0, "B2": 1.0, "B3": 4.0}  # the 2005 A-B1 count is gone
    assert "D" not in g  # its only edge is from 2010
    assert not g.has_edge("B1", "C2")
    assert [h.target for h in g.discover("A")] == ["C1"]
    undated = CooccurrenceGraph.from_edges([Edge("x", "y", 1, None), Edge("x", "z", 1, 2020)], until_year=1990)
    assert undated.neighbors("x") == {"y": 1.0}


# ---------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def medline():
    edges, names = load_medline_disease_edges(_shared("medline-cooccurrence", "disease-disease-cooccurrence.tsv"))
    return edges, names


def test_medline_disease_graph_discover_speed_and_validity(medline):
    edges, names = medline
    t0 = time.perf_counter()
    graph = CooccurrenceGraph.from_edges(edges)
    build_s = time.perf_counter() - t0
    assert len(edges) == 8778  # 17,556 rows = every pair in both orientations
    assert graph.n_edges == sum(1 for e in edges if e.count > 0)
    timings = {}
    for measure in MEASURES:
        t0 = time.perf_counter()
        hyps = graph.discover(ALZHEIMER, measure=measure, top_k=20)
        timings[measure] = time.perf_counter() - t0
        assert len(hyps) == 20
        direct = graph.neighbors(ALZHEIMER)
        assert all(h.target not in direct and h.target != ALZHEIMER for h in hyps)
        assert all(h.bridges and all(b in direct for b, _ in h.bridges) for h in hyps if h.score > 0)
    print(
        f"\nMEDLINE disease graph: {len(graph)} nodes, {graph.n_edges} edges (build {build_s * 1000:.1f} ms); "
        f"Alzheimer's degree {graph.degree[graph.index[ALZHEIMER]]}"
    )
    print("discover(DOID:10652) ms: " + ", ".join(f"{m} {s * 1000:.2f}" for m, s in timings.items()))
    top = graph.discover(ALZHEIMER, measure="adamic_adar", top_k=3)
    print("top adamic_adar:", [(names[h.target], round(h.score, 2), [names[b] for b, _ in h.bridges[:3]]) for h in top])
    assert max(timings.values()) < 1.0  # sanity guard; real numbers are ~1 ms
